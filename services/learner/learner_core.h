// spar/services/learner/learner_core.h — the learner without transport:
// iteration lifecycle, a queue of validated examples, one training thread
// that owns the policy, checkpoints and weight publication.
//
// Lifecycle of iteration t (the orchestrator drives it):
//   StartIteration(t)  the current weights become the frozen reference pi_t;
//                      a new optimiser and schedule start (the SPPO scripts
//                      train each iteration as a fresh run from pi_t).
//                      Starting t again (after an orchestrator crash) drops
//                      queued work and restores pi_t from its checkpoint.
//                      It may name the generator chain (see below).
//   Submit(examples)   each is validated (bad ones are rejected with the
//                      reason; training goes on with the rest) and queued;
//                      the training thread steps whenever batch_groups are
//                      waiting, while more arrive.
//   FinishIteration    trains what is left (and extra epochs), writes the
//                      HF checkpoint + optimiser state, streams version t+1
//                      to the generator chain (gRPC) or broadcasts it to the
//                      NCCL group (learner.weight_sync), and returns.
//
// Intermediate publications (learner.publish_every_steps = N > 0): after
// every N-th optimiser step of iteration t the training thread streams the
// weights as version t, revision r (r counts the iteration's intermediate
// publications) to the chain last named (StartIteration, else the last
// FinishIteration); the version stays t, so "policy version t+1 = the end of
// iteration t" holds for everything that checks it. r continues after the
// highest revision of t the chain serves already (asked over Info first),
// so a restarted iteration or learner is not refused as older. A failed
// intermediate publication is logged and training goes on; none is made once
// FinishIteration has begun (every rollout of t has been generated then, and
// version t+1 follows).
//
// Data parallel: rank 0 runs this core and serves the gRPC service; it
// broadcasts each command and batch to the other ranks (RunFollower), so
// all ranks step together on their shares.
//
// Thread safety: public methods may be called from any thread (gRPC
// handlers); the policy is touched only by the training thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "services/learner/data_parallel.h"
#include "services/learner/learner_config.h"
#include "services/learner/trainer.h"
#include "services/weights/nccl_broadcast.h"
#include "services/weights/weight_publisher.h"

namespace spar {

namespace v1 {
class TrainingExample;
}

// Converts a wire example (no validation; see ValidateExample).
LearnerExample ExampleFromProto(const v1::TrainingExample& example);

struct LearnerProgressSnapshot {
  uint32_t iteration = 0;
  int64_t step = 0;
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;
  double samples_per_second = 0;
  uint64_t examples_seen = 0;
  uint64_t examples_pending = 0;
  uint64_t policy_version = 0;
  uint64_t policy_revision = 0;  // the last intermediate publication of policy_version that succeeded
  uint64_t intermediate_publications = 0;   // this iteration: succeeded
  uint64_t intermediate_publish_failures = 0;
  double seconds_waiting_for_data = 0;
};

struct SubmitOutcome {
  uint64_t accepted = 0;
  std::vector<std::pair<std::string, std::string>> rejected;  // prompt id, reason
};

struct FinishOutcome {
  uint64_t policy_version = 0;
  std::string checkpoint_dir;
  PublishResult publish;
  bool published = false;
  LearnerProgressSnapshot progress;
};

class LearnerCore {
 public:
  // Takes ownership of the policy (and the group, which may be null for one
  // rank). The policy's weights are version `initial_version`.
  static Result<std::unique_ptr<LearnerCore>> Create(const LearnerConfig& config,
                                                     std::unique_ptr<TrainablePolicy> policy,
                                                     std::unique_ptr<DataParallelGroup> group,
                                                     uint64_t initial_version = 0);
  ~LearnerCore();

  // `generators`, when not empty, becomes the chain of intermediate
  // publications. InvalidArgument for an empty address in it.
  Result<LearnerProgressSnapshot> StartIteration(uint32_t iteration, uint64_t expected_examples,
                                                 const std::vector<std::string>& generators = {});
  SubmitOutcome Submit(std::vector<LearnerExample> examples);
  Result<FinishOutcome> FinishIteration(uint32_t iteration, const std::vector<std::string>& generators,
                                        const std::string& checkpoint_dir);
  LearnerProgressSnapshot Progress() const;
  const LearnerConfig& config() const { return config_; }
  std::string model_name() const;

  // Ranks > 0: follow rank 0's commands until it shuts down.
  static Status RunFollower(const LearnerConfig& config, std::unique_ptr<TrainablePolicy> policy,
                            std::unique_ptr<DataParallelGroup> group);

 private:
  struct Command;
  LearnerCore(const LearnerConfig& config, std::unique_ptr<TrainablePolicy> policy,
              std::unique_ptr<DataParallelGroup> group, uint64_t version);
  // The end of FinishIteration: checkpoint (unless an earlier attempt
  // did), then publish version iteration+1. Called by one thread at a time.
  Result<FinishOutcome> CheckpointAndPublish(uint32_t iteration, const std::vector<std::string>& generators,
                                             const std::string& checkpoint_dir);
  // Streams the current weights as (version, revision) down `chain` (gRPC).
  Result<PublishResult> PublishToChain(uint64_t version, uint64_t revision, const std::vector<std::string>& chain);
  // After every publish_every_steps-th step, on the training thread.
  void PublishIntermediate(int64_t step);
  Status Execute(const Command& command);           // on the training thread
  std::future<Status> Post(Command command);
  void TrainingLoop();
  void MaybeQueueStep();                            // with mutex_ held

  LearnerConfig config_;
  std::unique_ptr<TrainablePolicy> policy_;
  std::unique_ptr<DataParallelGroup> group_;
  std::unique_ptr<PolicyTrainer> trainer_;
  // learner.weight_sync nccl: joined at the first publication (the
  // generators join in the background when they start).
  std::unique_ptr<NcclWeightGroup> broadcast_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Command>> commands_;
  std::vector<LearnerExample> pending_;             // validated, not yet trained
  std::vector<LearnerExample> seen_;                // this iteration (for extra epochs)
  bool iteration_open_ = false;
  uint32_t iteration_ = 0;
  int64_t trained_iteration_ = -1;                  // FinishIteration trained it (a retry only publishes)
  int64_t checkpointed_iteration_ = -1;             // its checkpoint is written
  uint64_t version_ = 0;
  bool finishing_ = false;                          // FinishIteration began: no more intermediate publications
  std::vector<std::string> publish_chain_;          // last chain named by the orchestrator
  uint64_t revision_ = 0;                           // last intermediate revision tried of version_
  int64_t revision_iteration_ = -1;                 // the iteration revision_ counts for
  LearnerProgressSnapshot progress_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace spar
