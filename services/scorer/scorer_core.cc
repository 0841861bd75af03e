#include "services/scorer/scorer_core.h"

#include <cmath>

#include "common/logging.h"

namespace spar {
namespace {

bool AllFinite(const GroupPreferences& g) {
  for (const auto* v : {&g.probabilities, &g.scores, &g.win_rates, &g.mean_scores})
    for (double x : *v)
      if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

Result<std::unique_ptr<ScorerCore>> ScorerCore::Create(std::unique_ptr<PreferenceModel> model,
                                                       const ScorerLimits& limits) {
  if (!model) return InvalidArgument("scorer core needs a preference model");
  if (limits.max_k < 2) return InvalidArgument("max_k must be >= 2");
  if (limits.max_batch_responses < 1) return InvalidArgument("max_batch_responses must be >= 1");
  return std::unique_ptr<ScorerCore>(new ScorerCore(std::move(model), limits));
}

ScorerCore::ScorerCore(std::unique_ptr<PreferenceModel> model, const ScorerLimits& limits)
    : model_(std::move(model)), limits_(limits), description_(model_->Describe()) {
  worker_ = std::thread([this] { WorkerLoop(); });
}

ScorerCore::~ScorerCore() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
  for (auto& r : queue_) r->promise.set_value(Unavailable("scorer is shutting down"));
}

Status ScorerCore::Validate(const std::vector<ScoreGroupInput>& groups) const {
  if (groups.empty()) return InvalidArgument("groups: the request has no groups");
  if (groups.size() > limits_.max_groups_per_request)
    return InvalidArgument("groups: " + std::to_string(groups.size()) +
                           " groups in one request; at most " +
                           std::to_string(limits_.max_groups_per_request));
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    const std::string where = "groups[" + std::to_string(i) + "] (id '" + g.group_id + "')";
    const size_t k = g.responses.size();
    if (k < 2)
      return InvalidArgument(where + ".responses: needs at least 2 responses to compare, got " +
                             std::to_string(k));
    if (k > limits_.max_k)
      return InvalidArgument(where + ".responses: " + std::to_string(k) +
                             " responses; at most " + std::to_string(limits_.max_k));
    if (g.prompt_text.empty() && g.messages.empty())
      return InvalidArgument(where + ".prompt: empty (give text or messages)");
    if (g.prompt_text.size() > limits_.max_text_bytes)
      return InvalidArgument(where + ".prompt: " + std::to_string(g.prompt_text.size()) +
                             " bytes; at most " + std::to_string(limits_.max_text_bytes));
    for (size_t m = 0; m < g.messages.size(); ++m) {
      const auto& msg = g.messages[m];
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
        return InvalidArgument(where + ".prompt.messages[" + std::to_string(m) + "].role: '" +
                               msg.role + "' is not one of system, user, assistant");
      if (msg.content.size() > limits_.max_text_bytes)
        return InvalidArgument(where + ".prompt.messages[" + std::to_string(m) +
                               "].content: too long");
    }
    for (size_t r = 0; r < k; ++r) {
      if (g.responses[r].empty())
        return InvalidArgument(where + ".responses[" + std::to_string(r) + "]: empty response");
      if (g.responses[r].size() > limits_.max_text_bytes)
        return InvalidArgument(where + ".responses[" + std::to_string(r) + "]: " +
                               std::to_string(g.responses[r].size()) + " bytes; at most " +
                               std::to_string(limits_.max_text_bytes));
    }
  }
  return Status::Ok();
}

Result<std::vector<GroupPreferences>> ScorerCore::Score(
    std::vector<ScoreGroupInput> groups, std::chrono::steady_clock::time_point deadline) {
  const auto start = std::chrono::steady_clock::now();
  SPAR_RETURN_IF_ERROR(Validate(groups));
  auto request = std::make_unique<Request>();
  const size_t n = groups.size();
  request->groups = std::move(groups);
  request->abandoned = std::make_shared<std::atomic<bool>>(false);
  auto abandoned = request->abandoned;
  auto future = request->promise.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return Unavailable("scorer is shutting down");
    if (queued_groups_ + n > limits_.max_queued_groups)
      return ResourceExhausted("scorer queue is full (" + std::to_string(queued_groups_) +
                               " groups waiting); retry later");
    queued_groups_ += n;
    queue_.push_back(std::move(request));
  }
  wake_.notify_one();
  if (future.wait_until(deadline) != std::future_status::ready) {
    abandoned->store(true);
    return DeadlineExceeded("scoring did not finish before the deadline");
  }
  auto result = future.get();
  if (result.ok() && latency_observer_)
    latency_observer_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), n);
  return result;
}

ScorerStats ScorerCore::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ScorerStats s = stats_;
  s.queued_groups = queued_groups_;
  s.groups_per_second = s.busy_seconds > 0 ? s.groups_scored / s.busy_seconds : 0;
  return s;
}

void ScorerCore::WorkerLoop() {
  for (;;) {
    std::vector<std::unique_ptr<Request>> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // Take whole requests until the batch holds enough responses.
      size_t responses = 0;
      while (!queue_.empty() && (batch.empty() || responses < limits_.max_batch_responses)) {
        auto& next = queue_.front();
        for (const auto& g : next->groups) responses += g.responses.size();
        queued_groups_ -= next->groups.size();
        batch.push_back(std::move(next));
        queue_.pop_front();
      }
    }
    RunBatch(batch);
  }
}

void ScorerCore::RunBatch(std::vector<std::unique_ptr<Request>>& batch) {
  // Drop requests whose caller has gone.
  std::vector<const ScoreGroupInput*> inputs;
  for (auto& r : batch) {
    if (r->abandoned->load()) continue;
    for (const auto& g : r->groups) inputs.push_back(&g);
  }
  // Score in chunks of about max_batch_responses responses.
  std::vector<GroupPreferences> results;
  results.reserve(inputs.size());
  Status failure;
  double busy = 0;
  size_t pos = 0;
  while (pos < inputs.size() && failure.ok()) {
    std::vector<ScoreGroupInput> chunk;
    size_t responses = 0;
    while (pos < inputs.size() && (chunk.empty() || responses < limits_.max_batch_responses)) {
      responses += inputs[pos]->responses.size();
      chunk.push_back(*inputs[pos++]);
    }
    auto t0 = std::chrono::steady_clock::now();
    Result<std::vector<GroupPreferences>> scored = Internal("not run");
    try {
      scored = model_->Score(chunk);
    } catch (const std::exception& e) {
      scored = Internal(std::string("preference model failed: ") + e.what());
    }
    busy += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!scored.ok()) {
      failure = scored.status();
      break;
    }
    if (scored->size() != chunk.size()) {
      failure = Internal("preference model returned " + std::to_string(scored->size()) +
                         " results for " + std::to_string(chunk.size()) + " groups");
      break;
    }
    for (size_t i = 0; i < chunk.size(); ++i) {
      if ((*scored)[i].k != chunk[i].responses.size() || !AllFinite((*scored)[i])) {
        failure = Internal("preference model produced a non-finite or misshapen table for group '" +
                           chunk[i].group_id + "'");
        break;
      }
      results.push_back(std::move((*scored)[i]));
    }
  }
  if (!failure.ok()) Logger("scorer")->error("scoring failed: {}", failure.ToString());
  // Hand each request its slice.
  size_t offset = 0;
  uint64_t groups = 0, responses = 0, failed = 0;
  for (auto& r : batch) {
    if (r->abandoned->load()) {
      r->promise.set_value(Cancelled("caller went away"));
      continue;
    }
    if (!failure.ok()) {
      r->promise.set_value(failure);
      ++failed;
      continue;
    }
    std::vector<GroupPreferences> mine(std::make_move_iterator(results.begin() + offset),
                                       std::make_move_iterator(results.begin() + offset + r->groups.size()));
    offset += r->groups.size();
    groups += r->groups.size();
    for (const auto& g : r->groups) responses += g.responses.size();
    r->promise.set_value(std::move(mine));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.groups_scored += groups;
  stats_.responses_scored += responses;
  stats_.requests_failed += failed;
  stats_.busy_seconds += busy;
}

}  // namespace spar
