// spar/orchestrator/clients.h — the orchestrator's view of the three
// services. Each interface is what one actor needs from its service; the
// Grpc* classes implement them over the spar.v1 contracts, so any process
// that serves the contract (ours or someone else's) can be plugged in by
// address.
//
// Every call has a deadline and returns a Status naming the service and
// address on failure (Unavailable when it cannot be reached), so actors can
// retry with back-off and the log says who is down.
//
// Thread safety: a client may be used from several threads at once (gRPC
// stubs are thread-safe).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "orchestrator/run_config.h"
#include "storage/records.h"

namespace spar {

struct GeneratorState {
  uint64_t policy_version = 0;
  int32_t max_batch = 0;
  int32_t busy_slots = 0;
  int32_t queue_depth = 0;
  double tokens_per_second = 0;
};

class GeneratorClient {
 public:
  virtual ~GeneratorClient() = default;
  virtual const std::string& name() const = 0;
  virtual const std::string& address() const = 0;
  // Samples K responses for one prompt; returns the whole group (rollouts
  // in sample order). The seed makes the group reproducible on any
  // generator serving the same version.
  virtual Result<RolloutGroup> Generate(const PromptRecord& prompt, const GenerationConfig& config,
                                        uint64_t seed, std::chrono::milliseconds timeout) = 0;
  virtual Result<GeneratorState> State(std::chrono::milliseconds timeout) = 0;
};

class ScorerClient {
 public:
  virtual ~ScorerClient() = default;
  virtual const std::string& address() const = 0;
  // Scores groups (with their prompts, same order); returns one record per
  // group with iteration/prompt_index/prompt_id copied from the group.
  virtual Result<std::vector<ScoreRecord>> Score(const std::vector<const PromptRecord*>& prompts,
                                                 const std::vector<const RolloutGroup*>& groups,
                                                 std::chrono::milliseconds timeout) = 0;
};

struct LearnerProgressInfo {
  uint64_t step = 0;
  double loss = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  double tokens_per_second = 0;
  uint64_t examples_seen = 0;
  uint64_t policy_version = 0;
};

struct FinishInfo {
  uint64_t policy_version = 0;
  std::string checkpoint_dir;
  double publish_seconds = 0;
  uint64_t publish_bytes = 0;
  LearnerProgressInfo progress;
};

class LearnerClient {
 public:
  virtual ~LearnerClient() = default;
  virtual const std::string& address() const = 0;
  virtual Result<LearnerProgressInfo> StartIteration(uint32_t iteration, uint64_t expected_examples,
                                                     std::chrono::milliseconds timeout) = 0;
  // The same, naming the generator chain the learner publishes intermediate
  // weights to during the iteration (learner.publish_every_steps). A client
  // that has no use for it starts the iteration without it.
  virtual Result<LearnerProgressInfo> StartIteration(uint32_t iteration, uint64_t expected_examples,
                                                     const std::vector<std::string>& generator_addresses,
                                                     std::chrono::milliseconds timeout) {
    return StartIteration(iteration, expected_examples, timeout);
  }
  // Sends examples built from stored groups and scores; returns how many
  // were accepted (rejections are logged with their reasons).
  virtual Result<uint64_t> Submit(const std::vector<const RolloutGroup*>& groups,
                                  const std::vector<const ScoreRecord*>& scores,
                                  std::chrono::milliseconds timeout) = 0;
  virtual Result<FinishInfo> FinishIteration(uint32_t iteration,
                                             const std::vector<std::string>& generator_addresses,
                                             const std::string& checkpoint_dir,
                                             std::chrono::milliseconds timeout) = 0;
};

std::unique_ptr<GeneratorClient> MakeGrpcGeneratorClient(const std::string& name,
                                                         const std::string& address);
std::unique_ptr<ScorerClient> MakeGrpcScorerClient(const std::string& address);
std::unique_ptr<LearnerClient> MakeGrpcLearnerClient(const std::string& address);

}  // namespace spar
