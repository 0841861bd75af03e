// spar/services/scorer/scorer_core.h — the scorer without any transport:
// validation, a queue, and one worker thread that owns the preference model
// and batches the groups of all concurrent requests into its calls.
//
// Thread safety: Score() may be called from any number of threads (the gRPC
// handlers); they block until their groups are scored, the deadline passes
// or the core shuts down. The model is only ever touched by the worker.
// Nothing that is not finite leaves the core: a model returning NaN/Inf
// fails that request with Internal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

#include "services/scorer/preference_model.h"

namespace spar {

struct ScorerLimits {
  uint32_t max_k = 64;                      // responses per group
  size_t max_groups_per_request = 4096;
  size_t max_text_bytes = 1 << 20;          // per prompt or response
  size_t max_batch_responses = 64;          // responses per model call
  size_t max_queued_groups = 16384;         // back-pressure beyond this
};

struct ScorerStats {
  uint64_t groups_scored = 0;
  uint64_t responses_scored = 0;
  uint64_t requests_failed = 0;
  double busy_seconds = 0;        // time inside the model
  double groups_per_second = 0;   // groups / busy seconds
  size_t queued_groups = 0;
};

class ScorerCore {
 public:
  static Result<std::unique_ptr<ScorerCore>> Create(std::unique_ptr<PreferenceModel> model,
                                                    const ScorerLimits& limits = {});
  ~ScorerCore();
  ScorerCore(const ScorerCore&) = delete;
  ScorerCore& operator=(const ScorerCore&) = delete;

  // Validates every group (InvalidArgument naming the group index, its id
  // and the field), queues them (ResourceExhausted when the queue is full)
  // and waits for the result (DeadlineExceeded past `deadline`).
  Result<std::vector<GroupPreferences>> Score(std::vector<ScoreGroupInput> groups,
                                              std::chrono::steady_clock::time_point deadline);

  // Called at the end of every Score() that got an answer, with the seconds
  // since it was called (queue + model) and its group count; for latency
  // metrics. Set it before the core serves requests; it runs on the
  // caller's thread and must be thread safe.
  void SetLatencyObserver(std::function<void(double seconds, size_t groups)> observer) {
    latency_observer_ = std::move(observer);
  }

  Status Validate(const std::vector<ScoreGroupInput>& groups) const;
  const ScorerDescription& description() const { return description_; }
  ScorerStats Stats() const;

 private:
  struct Request {
    std::vector<ScoreGroupInput> groups;
    std::promise<Result<std::vector<GroupPreferences>>> promise;
    std::shared_ptr<std::atomic<bool>> abandoned;
  };
  ScorerCore(std::unique_ptr<PreferenceModel> model, const ScorerLimits& limits);
  void WorkerLoop();
  void RunBatch(std::vector<std::unique_ptr<Request>>& batch);

  std::unique_ptr<PreferenceModel> model_;
  ScorerLimits limits_;
  ScorerDescription description_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Request>> queue_;
  size_t queued_groups_ = 0;
  bool stopping_ = false;
  ScorerStats stats_;
  std::function<void(double, size_t)> latency_observer_;
  std::thread worker_;
};

}  // namespace spar
