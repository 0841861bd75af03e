// spar/services/learner/trainer.h — one optimiser step of SPPO / GPO / DPO
// on a batch of prompt groups, with gradient accumulation, clipping, the
// linear warm-up schedule and data-parallel gradient averaging.
//
// Each iteration is a fresh training run from the previous iteration's
// weights, as in the SPPO scripts: BeginIteration() snapshots the reference
// pi_t (a frozen copy, unless the generator's log-probs are the reference)
// and builds a new optimiser and schedule.
//
// Thread safety: one thread (the learner's training thread) uses a trainer.
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "services/learner/batch.h"
#include "services/learner/data_parallel.h"
#include "services/learner/learner_config.h"
#include "services/learner/policy.h"

namespace spar {

struct StepStats {
  int64_t step = 0;          // optimiser steps this iteration
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  int64_t groups = 0;
  int64_t tokens = 0;        // non-pad tokens forwarded (policy)
  double seconds = 0;
};

class PolicyTrainer {
 public:
  // `policy` and `group` are not owned; `group` may be null (one rank).
  PolicyTrainer(TrainablePolicy* policy, const LearnerConfig& config, DataParallelGroup* group);

  // Starts iteration training: `total_steps` optimiser steps are planned
  // (for the schedule).
  Status BeginIteration(int64_t total_steps);

  // One optimiser step on `groups` (all with the same K; validated). With
  // grad_accumulation = n the groups are split into n micro-batches.
  Result<StepStats> Step(const std::vector<LearnerExample>& groups);

  int64_t step() const { return step_; }
  // Optimiser state for resuming (torch::save archive).
  Status SaveOptimizer(const std::string& path) const;
  Status LoadOptimizer(const std::string& path);

 private:
  torch::Tensor SequenceLogps(TrainablePolicy* model, const TokenBatch& batch);

  TrainablePolicy* policy_;
  LearnerConfig config_;
  DataParallelGroup* group_;
  std::unique_ptr<TrainablePolicy> reference_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t step_ = 0;
  int64_t total_steps_ = 1;
};

}  // namespace spar
