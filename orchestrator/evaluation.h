// spar/orchestrator/evaluation.h — the held-out judgement of pi_t against
// pi_0: does training move the policy towards what the preference model
// prefers, on prompts it never trained on?
//
// The last `run.held_out` prompts of the prompt set are kept out of every
// shard. Before iteration 0 the generators (serving pi_0) sample K
// responses per held-out prompt with fixed seeds; they are stored in the run
// store ("eval/baseline"), so a resumed run judges against the same pi_0
// responses. After iteration t the generators serve pi_{t+1}: they sample
// again with the same seeds, and the scorer sees, per prompt, one group of
// the 2K responses (new first, then pi_0's). The win rate is the mean over
// prompts and over every (new, old) pair of P(y_new > y_old | x), the
// scorer's own probability, so 0.5 means "no better than pi_0".
//
// Thread safety: one thread uses an evaluator; it fans generation out to
// every generator itself.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"
#include "orchestrator/clients.h"
#include "orchestrator/run_config.h"
#include "storage/run_store.h"

namespace spar {

struct HeldOutResult {
  uint64_t policy_version = 0;  // the policy judged against pi_0
  uint64_t prompts = 0;
  uint64_t comparisons = 0;     // (new, old) response pairs
  double win_rate = 0.5;        // mean P(new > old)
  double seconds = 0;
};

struct HeldOutOptions {
  GenerationConfig generation;  // the run's sampling settings (K = samples_per_prompt)
  uint64_t seed = 1;
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
};

class HeldOutEvaluator {
 public:
  // Pointers are not owned. `prompts` are the held-out prompts (may be
  // empty: then every call is a no-op and Judge returns 0 prompts).
  HeldOutEvaluator(RunStore* store, std::vector<PromptRecord> prompts, std::vector<GeneratorClient*> generators,
                   ScorerClient* scorer, HeldOutOptions options);

  // Makes sure pi_0's responses are stored: reads them back, or samples
  // them when `serving_version` is 0. FailedPrecondition when they are
  // missing and the generators already serve a later version (a run folder
  // from before held-out judging existed, or with other prompts).
  Status EnsureBaseline(uint64_t serving_version);

  // Samples the serving policy (`version`) on the held-out prompts and
  // judges it against pi_0's stored responses.
  Result<HeldOutResult> Judge(uint64_t version);

  size_t size() const { return prompts_.size(); }

 private:
  Result<std::vector<RolloutGroup>> Sample();

  RunStore* store_;
  std::vector<PromptRecord> prompts_;
  std::vector<GeneratorClient*> generators_;
  ScorerClient* scorer_;
  HeldOutOptions options_;
  std::vector<RolloutGroup> baseline_;
};

// Mean over the (i < k_new, j >= k_new) cross entries of a row-major K x K
// preference matrix with the new responses first: P(new_i > old_j).
double CrossWinRate(const std::vector<double>& probabilities, uint32_t k, uint32_t k_new);

}  // namespace spar
