// spar/services/generator/generator_config.h — the `generator:` section of a
// spar config file, and the factory that loads the model it names.
//
//   generator:
//     id: gen-0                     # names this node in rollouts and results
//     model: runs/x/models/policy   # HF folder (config.json, safetensors, tokenizer)
//     name: ""                      # model name served (default: the folder's name)
//     listen: 127.0.0.1:50051       # gRPC address (port 0 = any)
//     http_listen: ""               # OpenAI-compatible HTTP ("" = off)
//     metrics_listen: ""            # Prometheus /metrics ("" = off)
//     max_batch: 16                 # decode slots
//     max_context: 2048             # prompt + response tokens per sequence
//     max_queue: 4096               # samples waiting for a slot
//     max_prompt_tokens: 1536       # longer rendered prompts are rejected
//     max_samples: 64               # K per prompt
//     max_prompts: 1024             # prompts per request
//     dtype: auto                   # auto | float32 | bfloat16 | float16
//     device: cpu                   # cpu | cuda | cuda:N
//     policy_version: 0             # version of the weights in `model`
//     max_message_bytes: 536870912  # gRPC message limit (weight buckets)
//     sampling: {temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: 256}
//     weight_broadcast:             # optional: join the learner's NCCL group
//       rendezvous: 10.0.0.1:29600  # the learner's learner.nccl_rendezvous
//       rank: 1                     # 1..world_size-1 (rank 0 is the learner)
//       world_size: 2               # 1 + generators in the group
//       cuda_device: 0
//       timeout_s: 600
//
// `sampling` is the default for the OpenAI endpoint (fields a request body
// leaves out) and for a gRPC request without a SamplingParams message.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "metrics/metrics.h"
#include "services/generator/generator_core.h"

namespace spar {

// Membership of the learner's NCCL weight-broadcast group (rank > 0).
struct GeneratorBroadcastConfig {
  bool enabled = false;
  std::string rendezvous;
  int rank = 1;
  int world_size = 2;
  int cuda_device = 0;
  int64_t timeout_s = 600;
};

struct GeneratorConfig {
  std::string id = "generator";
  std::string model;
  std::string name;                 // defaults to the model folder's basename
  std::string listen = "127.0.0.1:50051";
  std::string http_listen;
  std::string metrics_listen;
  int32_t max_batch = 16;
  int32_t max_context = 2048;
  int32_t max_queue = 4096;
  std::string dtype = "auto";
  std::string device = "cpu";
  uint64_t policy_version = 0;
  int64_t max_message_bytes = 512ll << 20;
  GeneratorLimits limits;
  SamplingOptions sampling;
  GeneratorBroadcastConfig weight_broadcast;
};

// Reads the section (Finish() included). Errors name the key.
Status ReadGeneratorConfig(ConfigNode node, GeneratorConfig* out);

// Loads `generator:` (and `log_level`) from a whole spar config file; the
// other known sections are left to their owners.
Result<GeneratorConfig> LoadGeneratorConfig(const std::string& path, std::string* log_level);

// Loads the model folder (weights on the configured device and dtype, its
// tokenizer) and starts a core over it. Errors name the folder; the device
// error says when CUDA is not available.
Result<std::unique_ptr<GeneratorCore>> CreateGeneratorCore(const GeneratorConfig& config,
                                                           MetricsRegistry* metrics);

}  // namespace spar
