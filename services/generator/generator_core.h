// spar/services/generator/generator_core.h — the generator without any
// transport: renders prompts, validates requests, hands them to the
// GenerationEngine (whose scheduler thread alone runs the model), collects
// the finished rollouts for whoever waits on them, applies verified weight
// versions, and keeps the generator's counters and metrics.
//
// A request becomes a GenerationJob: Start() validates and renders every
// prompt, then submits one engine request per prompt (K samples each) and
// returns at once; the caller pulls rollouts (and, if asked, text deltas)
// with GenerationJob::Next() as they finish. Dropping or cancelling a job
// cancels its engine requests, so their slots and queue entries are freed
// at the next decode step.
//
// Prompt policy: a rendered prompt longer than limits.max_prompt_tokens is
// rejected (InvalidArgument naming the prompt), never truncated: the
// learner trains on the prompt the policy saw, and a silently shortened
// prompt would be a different task. Raw text is encoded with BOS prepended
// (unless the text already starts with it) and special tokens recognised,
// so pre-rendered chat text works; conversations use the tokenizer's chat
// format with the generation prompt.
//
// Thread safety: every public method may be called from any thread. A
// GenerationJob may be used by one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/chat.h"
#include "common/status.h"
#include "metrics/metrics.h"
#include "model/engine.h"
#include "services/weights/weight_stream.h"

namespace spar {

struct GeneratorLimits {
  uint32_t max_samples = 64;          // K per prompt
  size_t max_prompts = 1024;          // prompts per request
  int32_t max_prompt_tokens = 1536;   // rendered prompt, BOS included
  size_t max_stop_strings = 16;
  size_t max_prompt_bytes = 1 << 20;  // text or conversation, before rendering
};

struct GeneratorCoreOptions {
  std::string generator_id = "generator";
  std::string model_name;
  EngineOptions engine;
  GeneratorLimits limits;
  SamplingOptions default_sampling;
};

// One prompt: raw text, or a conversation when `messages` is non-empty.
struct PromptInput {
  std::string prompt_id;
  std::string text;
  std::vector<ChatMessage> messages;
  bool is_conversation = false;
};

struct GenerateInput {
  std::vector<PromptInput> prompts;
  uint32_t num_samples = 1;
  SamplingOptions sampling;
  bool want_deltas = false;  // stream text deltas (the OpenAI endpoint)
};

struct GeneratedRollout {
  size_t prompt_index = 0;
  std::string prompt_id;
  uint32_t sample_index = 0;
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  std::string finish_reason;  // "stop" | "length"
  uint64_t policy_version = 0;
  uint64_t policy_revision = 0;
  std::shared_ptr<const std::vector<int32_t>> prompt_token_ids;
};

struct TextDelta {
  size_t prompt_index = 0;
  uint32_t sample_index = 0;
  std::string text;
};

// What Next() hands over: deltas precede the rollouts they belong to.
struct JobUpdate {
  std::vector<TextDelta> deltas;
  std::vector<GeneratedRollout> rollouts;
  bool finished = false;  // every sample is done or the job failed
  Status status;          // when finished: OK or why it ended
};

class GenerationJob {
 public:
  // Cancels whatever is still running.
  ~GenerationJob();
  GenerationJob(const GenerationJob&) = delete;
  GenerationJob& operator=(const GenerationJob&) = delete;

  // Waits until something is ready, the job ends or `until` passes, then
  // takes everything ready. An empty, unfinished update means timeout.
  JobUpdate Next(std::chrono::steady_clock::time_point until);
  // Cancels the engine requests (idempotent); the job then finishes with
  // Cancelled once the engine has let go of them.
  void Cancel();

  size_t num_prompts() const { return prompt_ids_.size(); }
  uint32_t num_samples() const { return num_samples_; }
  // Rendered prompt of prompt i.
  const std::vector<int32_t>& prompt_token_ids(size_t i) const { return *prompt_ids_[i]; }

 private:
  friend class GeneratorCore;
  struct State;
  GenerationJob() = default;
  GenerationEngine* engine_ = nullptr;
  std::shared_ptr<State> state_;
  std::vector<std::shared_ptr<const std::vector<int32_t>>> prompt_ids_;
  uint32_t num_samples_ = 0;
};

struct GeneratorDescription {
  std::string generator_id;
  std::string model_name;
  std::string architecture;
  int64_t num_parameters = 0;
  int32_t hidden_size = 0;
  int32_t num_layers = 0;
  int32_t vocab_size = 0;
  int32_t max_context = 0;
};

struct GeneratorStats {
  EngineStats engine;
  double tokens_per_second = 0;    // over the last ~10 s
  double rollouts_per_second = 0;
  uint64_t requests_started = 0;
  uint64_t requests_failed = 0;
  uint64_t weight_updates = 0;
  uint64_t weight_bytes = 0;
};

struct WeightApplyResult {
  uint64_t version = 0;
  uint64_t revision = 0;
  double seconds = 0;  // conversion + swap
};

class GeneratorCore {
 public:
  // Starts an engine over `model` (already on its device and dtype).
  // `metrics` may be null (the core then keeps its own registry); it must
  // outlive the core. InvalidArgument for bad options.
  static Result<std::unique_ptr<GeneratorCore>> Create(CausalLM model,
                                                       std::shared_ptr<const Tokenizer> tokenizer,
                                                       const GeneratorCoreOptions& options,
                                                       MetricsRegistry* metrics = nullptr);
  // Stops the engine (pending jobs finish with Cancelled).
  ~GeneratorCore();
  GeneratorCore(const GeneratorCore&) = delete;
  GeneratorCore& operator=(const GeneratorCore&) = delete;

  // Validates and renders everything, then submits. InvalidArgument naming
  // the field ("prompts", "prompts[2].conversation.messages[0].role",
  // "num_samples", "sampling.top_p", ...); ResourceExhausted when the
  // engine's queue cannot take the request (nothing stays submitted);
  // Unavailable while shutting down.
  Result<std::unique_ptr<GenerationJob>> Start(GenerateInput input);

  // The token ids the model sees for a prompt (see the prompt policy above).
  // InvalidArgument naming `field` for an empty or too long prompt or a
  // malformed conversation.
  Result<std::vector<int32_t>> RenderPrompt(const PromptInput& prompt, const std::string& field) const;
  // Checks sampling options against the limits (field names prefixed with
  // "sampling.").
  Status ValidateSampling(const SamplingOptions& sampling) const;

  // Makes verified staged weights current (between decode steps, every
  // active sequence finishing on the old version first): one copy_ per
  // tensor from the staging buffers into the model's parameters (which
  // converts dtype and device). InvalidArgument for names/shapes/dtypes that
  // do not fit the model, FailedPrecondition for a (version, revision) older
  // than the serving one (or the same one with other weights; the same one
  // with the same weights is a no-op); the old weights keep serving then.
  // `staged` is only read (the caller recycles its buffers afterwards).
  Result<WeightApplyResult> ApplyWeights(const StagedWeights& staged);
  // Counts bytes and time of one received stream (metrics).
  void RecordWeightSync(uint64_t bytes, double seconds, bool applied);

  uint64_t policy_version() const;
  // The serving (version, revision), read together.
  std::pair<uint64_t, uint64_t> policy_version_and_revision() const;
  GeneratorStats Stats() const;
  const GeneratorDescription& description() const { return description_; }
  const GeneratorCoreOptions& options() const { return options_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  MetricsRegistry* metrics() { return metrics_; }

 private:
  GeneratorCore(std::shared_ptr<const Tokenizer> tokenizer, const GeneratorCoreOptions& options,
                MetricsRegistry* metrics);
  void OnRollout(const SampleOutput& sample);
  void RefreshLoop();
  void RefreshGauges();

  std::shared_ptr<const Tokenizer> tokenizer_;
  GeneratorCoreOptions options_;
  GeneratorDescription description_;
  std::unique_ptr<MetricsRegistry> own_metrics_;
  MetricsRegistry* metrics_;
  std::unique_ptr<GenerationEngine> engine_;

  Counter* tokens_total_;
  Counter* rollouts_total_;
  Counter* requests_failed_total_;
  Gauge* tokens_per_second_;
  Gauge* busy_slots_;
  Gauge* queue_depth_;
  Gauge* policy_version_gauge_;
  Gauge* policy_revision_gauge_;
  Histogram* time_to_first_token_;
  Counter* weight_bytes_total_;
  Histogram* weight_seconds_;
  Counter* weight_updates_total_;

  std::atomic<uint64_t> requests_started_{0}, requests_failed_{0}, weight_updates_{0},
      weight_bytes_{0};

  // Rates over a sliding window, refreshed by refresh_thread_.
  mutable std::mutex rate_mu_;
  struct RateSample {
    std::chrono::steady_clock::time_point at;
    uint64_t tokens;
    uint64_t rollouts;
  };
  std::deque<RateSample> rate_samples_;
  double tokens_per_second_value_ = 0;
  double rollouts_per_second_value_ = 0;
  bool stopping_ = false;
  std::condition_variable refresh_wake_;
  std::thread refresh_thread_;
};

}  // namespace spar
