#include "services/learner/learner_config.h"

#include "services/weights/nccl_broadcast.h"

namespace spar {

Status CheckPublishEverySteps(const LearnerConfig& c) {
  if (c.publish_every_steps <= 0) return Status::Ok();
  if (c.reference == "generator_logprobs")
    return InvalidArgument("must be 0 with reference: generator_logprobs: the SPPO reference must be pi_t, and the "
                           "generators' log-probs stop being pi_t's at the first intermediate publication (use "
                           "reference: frozen_copy, or publish_every_steps: 0)");
  if (c.weight_sync == "nccl")
    return InvalidArgument("must be 0 with weight_sync: nccl: intermediate publications go down the gRPC relay "
                           "chain, the NCCL group carries end-of-iteration versions only (use weight_sync: grpc)");
  return Status::Ok();
}

Status ReadLearnerConfig(ConfigNode node, LearnerConfig* out) {
  node.Get("listen", &out->listen);
  node.Get("address", &out->address);
  node.Require("model");
  node.Get("model", &out->model);
  node.Get("output_dir", &out->output_dir);
  std::string loss = LossKindName(out->loss.kind);
  node.GetEnum("loss", &loss, {"sppo", "sppo_all_k", "gpo", "dpo"});
  out->loss.kind = *ParseLossKind(loss);
  node.Get("eta", &out->loss.eta, 0.0, 1e9, true);
  node.Get("gpo_clamp", &out->loss.gpo_clamp, 0.0, 1e12, true);
  node.Get("dpo_beta", &out->loss.dpo_beta, 0.0, 1e6, true);
  node.GetEnum("optimizer", &out->optimizer, {"rmsprop", "adamw"});
  node.Get("learning_rate", &out->learning_rate, 0.0, 10.0, true);
  node.Get("weight_decay", &out->weight_decay, 0.0, 10.0);
  node.Get("warmup_ratio", &out->warmup_ratio, 0.0, 1.0);
  node.Get("max_grad_norm", &out->max_grad_norm, 0.0, 1e9);
  node.Get("batch_groups", &out->batch_groups, 1, 1 << 20);
  node.Get("grad_accumulation", &out->grad_accumulation, 1, 1 << 20);
  node.Get("epochs", &out->epochs, 1, 1000);
  node.Get("max_length", &out->max_length, 2, 1 << 22);
  node.Get("max_prompt_length", &out->max_prompt_length, 1, 1 << 22);
  if (out->max_prompt_length >= out->max_length)
    node.Error("max_prompt_length", "must be smaller than max_length (" + std::to_string(out->max_length) + ")");
  node.GetEnum("reference", &out->reference, {"frozen_copy", "generator_logprobs"});
  node.Get("device", &out->device);
  if (out->device != "cpu" && out->device != "cuda" && out->device.rfind("cuda:", 0) != 0)
    node.Error("device", "'" + out->device + "' is not one of: cpu, cuda, cuda:N");
  node.GetEnum("dtype", &out->dtype, {"float32", "bfloat16"});
  node.Get("gradient_checkpointing", &out->gradient_checkpointing);
  node.Get("publish_every_steps", &out->publish_every_steps, 0, 1 << 30);
  node.Get("bucket_mb", &out->bucket_mb, 1, 1 << 16);
  node.GetEnum("weight_sync", &out->weight_sync, {"grpc", "nccl"});
  node.Get("nccl_rendezvous", &out->nccl_rendezvous);
  node.Get("nccl_world_size", &out->nccl_world_size, 2, 4096);
  node.Get("nccl_cuda_device", &out->nccl_cuda_device, 0, 1023);
  if (out->nccl_rendezvous.rfind(':') == std::string::npos)
    node.Error("nccl_rendezvous", "must be host:port, got '" + out->nccl_rendezvous + "'");
  if (out->weight_sync == "nccl" && !NcclBroadcastAvailable())
    node.Error("weight_sync", "nccl is not in this build (configure with SPAR_WITH_NCCL=ON, NCCL and the CUDA "
                              "runtime installed); use grpc");
  node.Get("world_size", &out->world_size, 1, 4096);
  node.Get("rank", &out->rank, 0, 4095);
  if (out->rank >= out->world_size)
    node.Error("rank", "must be < world_size (" + std::to_string(out->world_size) + ")");
  node.Get("rendezvous", &out->rendezvous);
  node.GetEnum("backend", &out->backend, {"gloo", "nccl"});
  node.Get("seed", &out->seed, 0);
  Status publish = CheckPublishEverySteps(*out);
  if (!publish.ok()) node.Error("publish_every_steps", publish.message());
  if (out->address.empty()) out->address = out->listen;
  return node.Finish();
}

Result<LearnerConfig> LoadLearnerConfig(const std::string& path, std::string* log_level) {
  SPAR_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadFile(path));
  for (const auto& section : KnownConfigSections()) root.Ignore(section);
  if (log_level)
    root.GetEnum("log_level", log_level, {"trace", "debug", "info", "warn", "error", "critical", "off"});
  root.Require("learner");
  LearnerConfig config;
  SPAR_RETURN_IF_ERROR(ReadLearnerConfig(root.Child("learner"), &config));
  SPAR_RETURN_IF_ERROR(root.Finish());
  return config;
}

}  // namespace spar
