// spar/orchestrator/pipeline.h — one SPPO/GPO iteration as actors on
// ZeroMQ mailboxes: one actor per remote service, and a coordinator.
//
//   coordinator --generate i--> generator actors (one per generator; each
//        ^                      keeps a few prompts in flight over gRPC)
//        |<----generated i-----  (group stored in RocksDB first)
//        +-----score i-------> scorer actor (batches groups, retries)
//        |<----scored i...----   (scores stored first)
//        +-----train i-------> learner actor (batches examples, retries)
//        |<----trained n------
// Messages carry prompt indices; the data lives in the run store, which is
// written before a message says "done", so a crash loses nothing that was
// acknowledged. Pipelined mode forwards each group as soon as it is ready
// (pi_t is fixed for the whole iteration, so generation, scoring and
// training overlap); staged mode waits for each stage to finish (the seed's
// scripts; kept for the benchmark).
//
// Resume: an iteration started again regenerates only prompts without a
// stored group, rescores only groups without a stored score, and resubmits
// every scored group to the learner (which restarts the iteration from
// pi_t). A generator that fails is named in the log and its prompt goes back
// to the queue for the others; one that is unreachable is dropped for the
// rest of the iteration. Scorer and learner failures are retried with
// exponential back-off, named in the log.
//
// Thread safety: Run() is called from one thread; it starts and joins the
// actor threads itself.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"
#include "metrics/metrics.h"
#include "orchestrator/clients.h"
#include "orchestrator/run_config.h"
#include "storage/run_store.h"

namespace spar {

struct PipelineOptions {
  GenerationConfig generation;
  uint64_t seed = 1;
  bool pipelined = true;
  size_t score_batch_groups = 16;
  size_t train_batch_groups = 8;
  int inflight_per_generator = 4;    // prompt requests in flight per generator
  int max_generate_attempts = 4;     // per prompt, across generators
  std::chrono::milliseconds generate_timeout{std::chrono::minutes(30)};
  std::chrono::milliseconds score_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds learner_timeout{std::chrono::hours(2)};
  std::chrono::milliseconds max_backoff{std::chrono::seconds(30)};
  int max_service_attempts = 20;     // scorer / learner retries before giving up
  std::string checkpoint_root;       // iteration t goes to <root>/iter-<t>
  // Where the pipeline keeps its live figures (not owned; null = none):
  // prompts per stage, the time prompts wait in front of each stage, the
  // time scoring and training sit idle waiting on the stage before, and the
  // weight publication of each iteration. Names in metrics/telemetry.h.
  MetricsRegistry* metrics = nullptr;
};

struct IterationStats {
  uint32_t iteration = 0;
  uint64_t prompts = 0;
  uint64_t generated_groups = 0;     // this run (not resumed ones)
  uint64_t reused_groups = 0;        // found in the store
  uint64_t rollouts = 0;
  uint64_t rollout_tokens = 0;
  uint64_t scored_groups = 0;
  uint64_t trained_examples = 0;
  double generation_seconds = 0;     // first dispatch to last group
  double scoring_busy_seconds = 0;   // inside scorer calls
  double training_busy_seconds = 0;  // inside learner submit calls
  double finish_seconds = 0;         // learner finish (train rest, checkpoint, publish)
  double weight_sync_seconds = 0;
  double wall_seconds = 0;
  uint64_t policy_version = 0;       // after the iteration
  std::string checkpoint_dir;
  double mean_chosen_win_rate = 0;
  LearnerProgressInfo learner;
  std::vector<std::string> lost_generators;
};

class IterationPipeline {
 public:
  // Pointers are not owned and must outlive Run().
  IterationPipeline(RunStore* store, std::vector<GeneratorClient*> generators, ScorerClient* scorer,
                    LearnerClient* learner, PipelineOptions options);

  // Runs iteration `iteration` over `shard` to the end: every prompt has a
  // stored group and score, the learner has trained on all of them,
  // checkpointed and published version iteration+1, and every generator
  // still alive reports that version.
  Result<IterationStats> Run(uint32_t iteration, const std::vector<PromptRecord>& shard);

 private:
  RunStore* store_;
  std::vector<GeneratorClient*> generators_;
  ScorerClient* scorer_;
  LearnerClient* learner_;
  PipelineOptions options_;
};

// Seed of prompt `index` in `iteration`: the same on any generator, so a
// re-queued prompt samples the same group.
uint64_t PromptSeed(uint64_t run_seed, uint32_t iteration, uint64_t index);

}  // namespace spar
