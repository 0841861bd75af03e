// spar/services/learner/learner_config.h — the `learner:` section.
//
//   learner:
//     listen: 127.0.0.1:50071        # gRPC (rank 0 serves the Learner service)
//     address: 127.0.0.1:50071       # where the orchestrator reaches it
//     model: path/to/policy          # HF folder of pi_0 (or the resume checkpoint)
//     output_dir: runs/x/checkpoints # HF checkpoints per iteration
//     loss: sppo                     # sppo | sppo_all_k | gpo | dpo
//     eta: 1000                      # 1/beta for SPPO/GPO
//     gpo_clamp: 1000
//     dpo_beta: 0.1
//     optimizer: rmsprop             # rmsprop | adamw
//     learning_rate: 5.0e-7
//     weight_decay: 0.0
//     warmup_ratio: 0.1
//     max_grad_norm: 1.0             # 0 = no clipping
//     batch_groups: 8                # prompt groups per optimiser step (per rank)
//     grad_accumulation: 1
//     epochs: 1                      # passes over an iteration's examples
//     max_length: 1024
//     max_prompt_length: 512
//     reference: frozen_copy         # frozen_copy | generator_logprobs
//     device: cpu                    # cpu | cuda | cuda:N
//     dtype: float32                 # float32 | bfloat16 (autocast on GPU)
//     gradient_checkpointing: false
//     publish_every_steps: 0         # 0 = only at the end of each iteration (see below)
//     bucket_mb: 256                 # weight-stream bucket size
//     weight_sync: grpc              # grpc (UpdateWeights relay chain) | nccl (broadcast group)
//     nccl_rendezvous: 127.0.0.1:29600  # TCPStore of the NCCL weight group (this learner serves it)
//     nccl_world_size: 2             # 1 + the generators that join it (generator.weight_broadcast)
//     nccl_cuda_device: 0
//     world_size: 1
//     rank: 0
//     rendezvous: 127.0.0.1:29500    # TCPStore of the c10d group
//     backend: gloo                  # gloo | nccl
//     seed: 1
//
// publish_every_steps N > 0: besides version t+1 at the end of iteration t,
// the learner publishes its weights after every N-th optimiser step of the
// iteration as version t, revision r = 1, 2, ... (spar.v1 common.proto: the
// version stays t, so everything that checks "version t during iteration t"
// holds, and generators order weights by (version, revision)). They go to
// the generator chain the orchestrator named last (StartIteration, else the
// previous FinishIteration) over gRPC; a failed one is logged and training
// goes on. The rollouts then come from pi_t,r while the SPPO reference stays
// the frozen pi_t, so `reference: generator_logprobs` (the generators' log
// pi_t) is refused with it, and so is `weight_sync: nccl` (the NCCL group
// carries end-of-iteration versions only).
#pragma once

#include <string>

#include "common/config.h"
#include "services/learner/losses.h"

namespace spar {

struct LearnerConfig {
  std::string listen = "127.0.0.1:50071";
  std::string address;
  std::string model;
  std::string output_dir;
  LossOptions loss;
  std::string optimizer = "rmsprop";
  double learning_rate = 5e-7;
  double weight_decay = 0.0;
  double warmup_ratio = 0.1;
  double max_grad_norm = 1.0;
  int64_t batch_groups = 8;
  int64_t grad_accumulation = 1;
  int64_t epochs = 1;
  int64_t max_length = 1024;
  int64_t max_prompt_length = 512;
  std::string reference = "frozen_copy";
  std::string device = "cpu";
  std::string dtype = "float32";
  bool gradient_checkpointing = false;
  int64_t publish_every_steps = 0;
  int64_t bucket_mb = 256;
  std::string weight_sync = "grpc";
  std::string nccl_rendezvous = "127.0.0.1:29600";
  int nccl_world_size = 2;
  int nccl_cuda_device = 0;
  int world_size = 1;
  int rank = 0;
  std::string rendezvous = "127.0.0.1:29500";
  std::string backend = "gloo";
  int64_t seed = 1;
};

// OK, or why the config's publish_every_steps cannot be used with the rest
// of it (InvalidArgument naming reference or weight_sync; the message
// follows the key, as in "learner.publish_every_steps: must be 0 with ...").
Status CheckPublishEverySteps(const LearnerConfig& config);

// Reads the section (Finish() included); errors name the key.
Status ReadLearnerConfig(ConfigNode node, LearnerConfig* out);
Result<LearnerConfig> LoadLearnerConfig(const std::string& path, std::string* log_level);

}  // namespace spar
