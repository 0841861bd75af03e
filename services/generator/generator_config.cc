#include "services/generator/generator_config.h"

#include <filesystem>

#include "common/logging.h"
#include "model/causal_lm.h"

namespace spar {

Status ReadGeneratorConfig(ConfigNode node, GeneratorConfig* out) {
  node.Get("id", &out->id);
  node.Get("model", &out->model);
  node.Require("model");
  node.Get("name", &out->name);
  node.Get("listen", &out->listen);
  node.Get("http_listen", &out->http_listen);
  node.Get("metrics_listen", &out->metrics_listen);
  node.Get("max_batch", &out->max_batch, 1, 4096);
  node.Get("max_context", &out->max_context, 16, 1 << 20);
  node.Get("max_queue", &out->max_queue, 1, 1 << 24);
  out->limits.max_prompt_tokens = std::min(out->limits.max_prompt_tokens, out->max_context * 3 / 4);
  node.Get("max_prompt_tokens", &out->limits.max_prompt_tokens, 1, 1 << 20);
  node.Get("max_samples", &out->limits.max_samples, 1, 4096);
  uint64_t max_prompts = out->limits.max_prompts;
  node.Get("max_prompts", &max_prompts, 1, 1 << 20);
  out->limits.max_prompts = max_prompts;
  node.GetEnum("dtype", &out->dtype, {"auto", "float32", "bfloat16", "float16"});
  node.Get("device", &out->device);
  if (out->device != "cpu" && out->device != "cuda" && out->device.rfind("cuda:", 0) != 0)
    node.Error("device", "must be cpu, cuda or cuda:N, got '" + out->device + "'");
  node.Get("policy_version", &out->policy_version);
  node.Get("max_message_bytes", &out->max_message_bytes, 1 << 20, 2047ll << 20);

  ConfigNode s = node.Child("sampling");
  double temperature = out->sampling.temperature, top_p = out->sampling.top_p;
  s.Get("temperature", &temperature, 0.0, 100.0);
  s.Get("top_p", &top_p, 0.0, 1.0, /*min_exclusive=*/true);
  s.Get("top_k", &out->sampling.top_k, 0, INT32_MAX);
  s.Get("max_new_tokens", &out->sampling.max_new_tokens, 1, 1 << 20);
  s.Get("seed", &out->sampling.seed);
  s.Get("stop", &out->sampling.stop);
  out->sampling.temperature = static_cast<float>(temperature);
  out->sampling.top_p = static_cast<float>(top_p);
  SPAR_RETURN_IF_ERROR(s.Finish());

  if (node.Has("weight_broadcast")) {
    ConfigNode b = node.Child("weight_broadcast");
    auto& wb = out->weight_broadcast;
    wb.enabled = true;
    b.Require("rendezvous");
    b.Get("rendezvous", &wb.rendezvous);
    b.Get("world_size", &wb.world_size, 2, 4096);
    b.Get("rank", &wb.rank, 1, 4095);
    if (wb.rank >= wb.world_size)
      b.Error("rank", "must be below world_size (" + std::to_string(wb.world_size) + "); rank 0 is the learner");
    b.Get("cuda_device", &wb.cuda_device, 0, 1023);
    b.Get("timeout_s", &wb.timeout_s, 1, 86400);
    if (wb.rendezvous.rfind(':') == std::string::npos) b.Error("rendezvous", "must be host:port, got '" + wb.rendezvous + "'");
    SPAR_RETURN_IF_ERROR(b.Finish());
  }

  if (out->limits.max_prompt_tokens >= out->max_context)
    node.Error("max_prompt_tokens", "must be less than max_context (" + std::to_string(out->max_context) +
                                        "), got " + std::to_string(out->limits.max_prompt_tokens));
  if (out->sampling.max_new_tokens >= out->max_context)
    node.Error("sampling", "max_new_tokens must be less than max_context (" +
                               std::to_string(out->max_context) + ")");
  if (out->name.empty() && !out->model.empty())
    out->name = std::filesystem::path(out->model).lexically_normal().filename().string();
  if (out->name.empty()) out->name = std::filesystem::path(out->model).parent_path().filename().string();
  return node.Finish();
}

Result<GeneratorConfig> LoadGeneratorConfig(const std::string& path, std::string* log_level) {
  SPAR_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadFile(path));
  for (const auto& section : KnownConfigSections()) root.Ignore(section);
  if (log_level)
    root.GetEnum("log_level", log_level, {"trace", "debug", "info", "warn", "error", "critical", "off"});
  root.Require("generator");
  GeneratorConfig config;
  SPAR_RETURN_IF_ERROR(ReadGeneratorConfig(root.Child("generator"), &config));
  SPAR_RETURN_IF_ERROR(root.Finish());
  return config;
}

namespace {

Result<torch::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (!torch::cuda::is_available())
    return FailedPrecondition("generator.device: " + name + " asked for, but CUDA is not available here");
  if (name == "cuda") return torch::Device(torch::kCUDA, 0);
  int index = -1;
  try {
    index = std::stoi(name.substr(5));
  } catch (const std::exception&) {
  }
  if (index < 0 || index >= static_cast<int>(torch::cuda::device_count()))
    return InvalidArgument("generator.device: '" + name + "' is not one of the " +
                           std::to_string(torch::cuda::device_count()) + " CUDA devices");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace

Result<std::unique_ptr<GeneratorCore>> CreateGeneratorCore(const GeneratorConfig& config,
                                                           MetricsRegistry* metrics) {
  SPAR_ASSIGN_OR_RETURN(torch::Device device, ParseDevice(config.device));
  LoadOptions load;
  load.device = device;
  if (config.dtype != "auto") {
    SPAR_ASSIGN_OR_RETURN(load.dtype, DTypeFromName(config.dtype));
  }
  SPAR_ASSIGN_OR_RETURN(CausalLM model, LoadCausalLM(config.model, load));
  model->eval();
  auto tokenizer = Tokenizer::FromDir(config.model);
  if (!tokenizer.ok()) return tokenizer.status().WithContext("generator: tokenizer of " + config.model);
  GeneratorCoreOptions options;
  options.generator_id = config.id;
  options.model_name = config.name;
  options.engine.max_batch = config.max_batch;
  options.engine.max_context = config.max_context;
  options.engine.max_queue = config.max_queue;
  options.engine.policy_version = config.policy_version;
  options.limits = config.limits;
  options.default_sampling = config.sampling;
  std::shared_ptr<const Tokenizer> shared_tokenizer(std::move(*tokenizer));
  return GeneratorCore::Create(std::move(model), std::move(shared_tokenizer), options, metrics);
}

}  // namespace spar
