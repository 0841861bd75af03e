// spar/model/engine.h — the generation engine: one scheduler thread owns a
// CausalLM and its KV cache and decodes many sequences together
// (continuous batching: a finished sequence's slot is refilled at once).
//
// Requests are enqueued (Submit returns an id at once); each finished
// sample is handed to the request's callback; a request can be cancelled.
// The K samples of one prompt share one prefill (the prompt's keys/values
// are copied into K slots). Sampling: temperature (0 = greedy), top-k,
// top-p, per-request seeds (sample i of a request with seed s draws from
// its own generator seeded from (s, i): the same seed gives the same
// output), stop tokens and stop strings, max new tokens. Every returned
// token carries log pi(token) under the model's own temperature-1
// distribution (the reference log-probs the learner may use).
//
// Weights: SwapWeights() stops admitting new sequences, lets the active ones
// finish, copies the new weights in on the scheduler thread, bumps the
// policy version and resumes: every token of a rollout comes from one
// version, and no step ever sees half old, half new weights. A version may
// have revisions (the learner's intermediate publications within an
// iteration, see spar.v1 common.proto): weights are ordered by (version,
// revision), and a rollout carries both.
//
// Thread safety: every public method may be called from any thread.
// Callbacks run on the scheduler thread; they must be quick and must not
// call back into the engine except Cancel/Stats.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/causal_lm.h"
#include "tokenizer/tokenizer.h"

namespace spar {

struct SamplingOptions {
  float temperature = 1.0f;  // >= 0; 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0 = off
  int32_t max_new_tokens = 256;
  uint64_t seed = 0;
  std::vector<std::string> stop;          // stop strings (cut from the text)
  std::vector<int32_t> stop_token_ids;    // besides the tokenizer's end-of-turn ids
  bool ignore_eos = false;                // keep going past end-of-turn ids

  // InvalidArgument naming the field ("temperature", "top_p", ...).
  Status Validate(int64_t vocab_size) const;
};

struct SampleOutput {
  uint64_t request_id = 0;
  uint32_t sample_index = 0;
  std::vector<int32_t> token_ids;  // response tokens, the stop token included
  std::vector<float> logprobs;     // one per token, temperature 1
  std::string text;                // decoded, specials and stop string removed
  std::string finish_reason;       // "stop" | "length" | "cancelled"
  uint64_t policy_version = 0;
  uint64_t policy_revision = 0;
  double seconds_to_first_token = 0;
  double seconds = 0;
};

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;  // non-empty; the rendered prompt
  uint32_t num_samples = 1;         // K
  SamplingOptions sampling;
  // Each finished sample, in finishing order (scheduler thread).
  std::function<void(SampleOutput&&)> on_sample;
  // Once, after the last sample: OK, or Cancelled / the error that ended it.
  std::function<void(const Status&)> on_done;
  // Optional: text as it is produced (for streaming endpoints); never a
  // broken UTF-8 sequence, and never text that a stop string later cuts.
  std::function<void(uint32_t sample_index, const std::string& delta)> on_delta;
};

struct EngineOptions {
  int32_t max_batch = 16;      // decode slots (sequences decoded together)
  int32_t max_context = 2048;  // prompt + response tokens per sequence
  int32_t max_queue = 4096;    // samples waiting for a slot
  uint64_t policy_version = 0; // version of the weights it starts with
};

struct EngineStats {
  uint64_t policy_version = 0;
  uint64_t policy_revision = 0;
  int32_t max_batch = 0;
  int32_t busy_slots = 0;
  int32_t queue_depth = 0;     // samples waiting for a slot
  int32_t max_queue = 0;
  uint64_t tokens_generated = 0;
  uint64_t prompt_tokens = 0;
  uint64_t rollouts_completed = 0;
  uint64_t decode_steps = 0;
  double busy_seconds = 0;     // time spent in prefill + decode
};

class GenerationEngine {
 public:
  // Takes the model (on its device, in its dtype) and the tokenizer that
  // matches it, allocates the KV cache and starts the scheduler thread.
  // InvalidArgument for bad options.
  static Result<std::unique_ptr<GenerationEngine>> Create(CausalLM model,
                                                          std::shared_ptr<const Tokenizer> tokenizer,
                                                          const EngineOptions& options);
  // Cancels everything pending (on_done gets Cancelled) and joins.
  ~GenerationEngine();
  GenerationEngine(const GenerationEngine&) = delete;
  GenerationEngine& operator=(const GenerationEngine&) = delete;

  // Validates and enqueues. InvalidArgument naming the field (empty
  // prompt, num_samples 0, prompt + max_new_tokens over max_context, a
  // token id outside the vocabulary, bad sampling options);
  // ResourceExhausted when the queue cannot take num_samples more;
  // Unavailable after shutdown. On error no callback runs.
  Result<uint64_t> Submit(GenerationRequest request);
  // Frees the request's slots and queue entries at the next step; its
  // on_done gets Cancelled. Unknown or finished ids are ignored.
  void Cancel(uint64_t request_id);

  // Applies new weights (named as the model's parameters, any device and
  // dtype) between steps after draining active sequences, and makes
  // (`version`, `revision`) current. Blocks until applied. InvalidArgument
  // (names, shapes; nothing applied) or FailedPrecondition if (version,
  // revision) is older than the serving one; the same pair again is a no-op
  // with the same weights and FailedPrecondition with others.
  Status SwapWeights(const std::vector<std::pair<std::string, torch::Tensor>>& weights,
                     uint64_t version, uint64_t revision = 0);

  // Submit + wait: the samples ordered by index.
  Result<std::vector<SampleOutput>> Generate(const std::vector<int32_t>& prompt_ids,
                                            uint32_t num_samples, const SamplingOptions& sampling);

  EngineStats Stats() const;
  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const EngineOptions& options() const { return options_; }

 private:
  struct Sequence;
  struct Request;
  struct PendingSwap;

  GenerationEngine(CausalLM model, std::shared_ptr<const Tokenizer> tokenizer,
                   const EngineOptions& options);
  void Loop();
  void Admit(std::vector<std::shared_ptr<Sequence>>& admitted);
  void Prefill(std::vector<std::shared_ptr<Sequence>>& admitted);
  void DecodeStep();
  // Appends a sampled token; returns true when the sequence is finished.
  bool Append(Sequence& seq, int32_t token, float logprob);
  void Finish(std::shared_ptr<Sequence> seq, const std::string& reason);
  void DropCancelled();

  CausalLM model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ModelConfig config_;
  EngineOptions options_;
  KvCache cache_;
  std::vector<int32_t> end_of_turn_ids_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  uint64_t next_request_id_ = 1;
  std::deque<std::shared_ptr<Sequence>> waiting_;           // guarded by mu_
  std::map<uint64_t, std::shared_ptr<Request>> requests_;   // guarded by mu_
  std::vector<uint64_t> cancelled_;                         // guarded by mu_
  std::shared_ptr<PendingSwap> swap_;                       // guarded by mu_

  // Scheduler thread only.
  std::vector<std::shared_ptr<Sequence>> active_;  // sorted by slot
  std::vector<bool> slot_free_;

  std::atomic<uint64_t> policy_version_{0};
  uint64_t policy_revision_ = 0;  // written with policy_version_ under mu_
  std::atomic<int32_t> busy_slots_{0};
  std::atomic<uint64_t> tokens_generated_{0}, prompt_tokens_{0}, rollouts_completed_{0},
      decode_steps_{0};
  std::atomic<int64_t> busy_micros_{0};
  std::thread thread_;
};

// Sampling for a batch of rows (model/sampler.cc). logits [B, V] float32
// on any device; per row: temperature (0 = greedy), top_p, top_k, and a
// uniform draw in (0, 1) that picks the token by inverse CDF over the
// filtered, renormalised distribution. Returns host vectors: chosen tokens
// and their temperature-1 log-probs.
struct SamplerRow {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  double uniform = 0.5;
};
void SampleTokens(const torch::Tensor& logits, const std::vector<SamplerRow>& rows,
                  std::vector<int32_t>* tokens, std::vector<float>* logprobs);

}  // namespace spar
