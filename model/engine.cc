#include "model/engine.h"

#include <unordered_map>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <random>

#include "common/logging.h"
#include "common/policy_version.h"

namespace spar {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// The largest prefix of `text` [0, end) that does not split a UTF-8
// sequence.
size_t Utf8Boundary(const std::string& text, size_t end) {
  while (end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return end;
}

}  // namespace

Status SamplingOptions::Validate(int64_t vocab_size) const {
  if (!std::isfinite(temperature) || temperature < 0)
    return InvalidArgument("temperature must be >= 0 (got " + std::to_string(temperature) + ")");
  if (!std::isfinite(top_p) || top_p <= 0 || top_p > 1)
    return InvalidArgument("top_p must be in (0, 1] (got " + std::to_string(top_p) + ")");
  if (top_k < 0) return InvalidArgument("top_k must be >= 0 (got " + std::to_string(top_k) + ")");
  if (max_new_tokens <= 0)
    return InvalidArgument("max_new_tokens must be > 0 (got " + std::to_string(max_new_tokens) + ")");
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) return InvalidArgument("stop[" + std::to_string(i) + "] is empty");
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0 || stop_token_ids[i] >= vocab_size)
      return InvalidArgument("stop_token_ids[" + std::to_string(i) + "] = " +
                                     std::to_string(stop_token_ids[i]) + " is outside the vocabulary");
  }
  return Status::Ok();
}

struct GenerationEngine::Request {
  uint64_t id = 0;
  GenerationRequest spec;
  uint32_t remaining = 0;  // samples not yet finished (guarded by mu_)
  Clock::time_point submitted;
};

struct GenerationEngine::Sequence {
  std::shared_ptr<Request> request;
  uint32_t sample_index = 0;
  int64_t slot = -1;
  int64_t cached = 0;      // positions in the KV cache
  int32_t pending = -1;    // last sampled token, not yet in the cache
  std::mt19937_64 rng;
  std::unique_ptr<IncrementalDecoder> decoder;
  size_t emitted = 0;      // bytes of out.text handed to on_delta
  size_t longest_stop = 0;
  SampleOutput out;
  Clock::time_point started;

  double Uniform() { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; }
};

struct GenerationEngine::PendingSwap {
  const std::vector<std::pair<std::string, torch::Tensor>>* weights = nullptr;
  uint64_t version = 0;
  uint64_t revision = 0;
  std::promise<Status> done;
};

Result<std::unique_ptr<GenerationEngine>> GenerationEngine::Create(
    CausalLM model, std::shared_ptr<const Tokenizer> tokenizer, const EngineOptions& options) {
  if (!model) return InvalidArgument("engine: no model");
  if (!tokenizer) return InvalidArgument("engine: no tokenizer");
  if (options.max_batch <= 0)
    return InvalidArgument("max_batch must be > 0 (got " + std::to_string(options.max_batch) + ")");
  if (options.max_context <= 1)
    return InvalidArgument("max_context must be > 1 (got " + std::to_string(options.max_context) + ")");
  if (options.max_queue <= 0)
    return InvalidArgument("max_queue must be > 0 (got " + std::to_string(options.max_queue) + ")");
  if (tokenizer->vocab_size() > model->config().vocab_size)
    return InvalidArgument("tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                                   " tokens but the model's vocabulary is " +
                                   std::to_string(model->config().vocab_size));
  return std::unique_ptr<GenerationEngine>(new GenerationEngine(std::move(model), std::move(tokenizer), options));
}

GenerationEngine::GenerationEngine(CausalLM model, std::shared_ptr<const Tokenizer> tokenizer,
                                   const EngineOptions& options)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      config_(model_->config()),
      options_(options) {
  model_->eval();
  auto weight = model_->OutputWeight();
  cache_ = KvCache::Allocate(config_, options_.max_batch, options_.max_context, weight.scalar_type(),
                             weight.device());
  slot_free_.assign(options_.max_batch, true);
  end_of_turn_ids_ = tokenizer_->stop_ids();
  for (int32_t id : config_.eos_token_ids) {
    if (std::find(end_of_turn_ids_.begin(), end_of_turn_ids_.end(), id) == end_of_turn_ids_.end())
      end_of_turn_ids_.push_back(id);
  }
  policy_version_ = options_.policy_version;
  Logger("engine")->info("engine: {} slots x {} positions, KV cache {:.1f} MiB", options_.max_batch,
                         options_.max_context, cache_.nbytes() / 1048576.0);
  thread_ = std::thread([this] { Loop(); });
}

GenerationEngine::~GenerationEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Whatever is left never runs: tell its owners.
  std::vector<std::shared_ptr<Request>> left;
  for (auto& [id, request] : requests_) left.push_back(request);
  requests_.clear();
  for (auto& request : left) {
    if (request->spec.on_done) request->spec.on_done(Cancelled("generation engine shut down"));
  }
  if (swap_) swap_->done.set_value(Unavailable("generation engine shut down"));
}

Result<uint64_t> GenerationEngine::Submit(GenerationRequest request) {
  if (request.prompt_ids.empty()) return InvalidArgument("prompt is empty");
  if (request.num_samples == 0) return InvalidArgument("num_samples must be >= 1");
  for (size_t i = 0; i < request.prompt_ids.size(); ++i) {
    const int32_t id = request.prompt_ids[i];
    if (id < 0 || id >= config_.vocab_size)
      return InvalidArgument("prompt token " + std::to_string(i) + " = " + std::to_string(id) +
                                     " is outside the vocabulary of " + std::to_string(config_.vocab_size));
  }
  SPAR_RETURN_IF_ERROR(request.sampling.Validate(config_.vocab_size));
  const int64_t needed = static_cast<int64_t>(request.prompt_ids.size()) + request.sampling.max_new_tokens;
  if (needed > options_.max_context)
    return InvalidArgument("prompt (" + std::to_string(request.prompt_ids.size()) +
                                   " tokens) + max_new_tokens (" +
                                   std::to_string(request.sampling.max_new_tokens) +
                                   ") exceeds max_context " + std::to_string(options_.max_context));
  auto shared = std::make_shared<Request>();
  shared->spec = std::move(request);
  shared->remaining = shared->spec.num_samples;
  shared->submitted = Clock::now();
  size_t longest_stop = 0;
  for (const auto& s : shared->spec.sampling.stop) longest_stop = std::max(longest_stop, s.size());
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Unavailable("generation engine is shutting down");
    if (waiting_.size() + shared->spec.num_samples > static_cast<size_t>(options_.max_queue))
      return ResourceExhausted("generator queue full: " + std::to_string(waiting_.size()) +
                                       " samples waiting, " + std::to_string(shared->spec.num_samples) +
                                       " more requested, max_queue " + std::to_string(options_.max_queue));
    id = next_request_id_++;
    shared->id = id;
    requests_[id] = shared;
    for (uint32_t i = 0; i < shared->spec.num_samples; ++i) {
      auto seq = std::make_shared<Sequence>();
      seq->request = shared;
      seq->sample_index = i;
      seq->rng.seed(SplitMix64(shared->spec.sampling.seed ^ SplitMix64(i + 1)));
      seq->longest_stop = longest_stop;
      seq->out.request_id = id;
      seq->out.sample_index = i;
      waiting_.push_back(std::move(seq));
    }
  }
  wake_.notify_all();
  return id;
}

void GenerationEngine::Cancel(uint64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!requests_.count(request_id)) return;
    cancelled_.push_back(request_id);
  }
  wake_.notify_all();
}

Status GenerationEngine::SwapWeights(const std::vector<std::pair<std::string, torch::Tensor>>& weights,
                                     uint64_t version, uint64_t revision) {
  uint64_t serving_version = 0, serving_revision = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    serving_version = policy_version_.load();
    serving_revision = policy_revision_;
  }
  if (version == serving_version && revision == serving_revision && (version > 0 || revision > 0)) {
    // A publication retried after a failure further down the chain: the
    // same version with the same weights is already here (idempotent); the
    // same version with other weights is refused. Weights change only on
    // this thread's swaps, which are serialised, so reading them is safe.
    torch::NoGradGuard no_grad;
    std::unordered_map<std::string, torch::Tensor> current;
    for (auto& [name, tensor] : model_->NamedWeights()) current.emplace(name, tensor);
    bool same = current.size() == weights.size();
    for (size_t i = 0; same && i < weights.size(); ++i) {
      auto it = current.find(weights[i].first);
      same = it != current.end() && it->second.sizes() == weights[i].second.sizes() &&
             torch::equal(it->second, weights[i].second.to(it->second.options()));
    }
    if (same) return Status::Ok();
    return FailedPrecondition("weights version " + PolicyVersionName(version, revision) +
                              " is already serving with different weights");
  }
  if (std::make_pair(version, revision) < std::make_pair(serving_version, serving_revision))
    return FailedPrecondition("weights version " + PolicyVersionName(version, revision) +
                              " is older than the serving version " +
                              PolicyVersionName(serving_version, serving_revision));
  auto swap = std::make_shared<PendingSwap>();
  swap->weights = &weights;
  swap->version = version;
  swap->revision = revision;
  auto done = swap->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Unavailable("generation engine is shutting down");
    if (swap_) return Aborted("another weight update is being applied");
    swap_ = swap;
  }
  wake_.notify_all();
  return done.get();
}

Result<std::vector<SampleOutput>> GenerationEngine::Generate(const std::vector<int32_t>& prompt_ids,
                                                             uint32_t num_samples,
                                                             const SamplingOptions& sampling) {
  auto outputs = std::make_shared<std::vector<SampleOutput>>();
  auto finished = std::make_shared<std::promise<Status>>();
  GenerationRequest request;
  request.prompt_ids = prompt_ids;
  request.num_samples = num_samples;
  request.sampling = sampling;
  request.on_sample = [outputs](SampleOutput&& out) { outputs->push_back(std::move(out)); };
  request.on_done = [finished](const Status& status) { finished->set_value(status); };
  auto future = finished->get_future();
  SPAR_RETURN_IF_ERROR(Submit(std::move(request)).status());
  SPAR_RETURN_IF_ERROR(future.get());
  std::sort(outputs->begin(), outputs->end(),
            [](const SampleOutput& a, const SampleOutput& b) { return a.sample_index < b.sample_index; });
  return std::move(*outputs);
}

EngineStats GenerationEngine::Stats() const {
  EngineStats stats;
  stats.max_batch = options_.max_batch;
  stats.max_queue = options_.max_queue;
  stats.busy_slots = busy_slots_.load();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats.queue_depth = static_cast<int32_t>(waiting_.size());
    stats.policy_version = policy_version_.load();
    stats.policy_revision = policy_revision_;
  }
  stats.tokens_generated = tokens_generated_.load();
  stats.prompt_tokens = prompt_tokens_.load();
  stats.rollouts_completed = rollouts_completed_.load();
  stats.decode_steps = decode_steps_.load();
  stats.busy_seconds = busy_micros_.load() / 1e6;
  return stats;
}

void GenerationEngine::Loop() {
  torch::NoGradGuard no_grad;
  while (true) {
    std::vector<std::shared_ptr<Sequence>> admitted;
    std::shared_ptr<PendingSwap> swap;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto has_free_slot = [&] { return static_cast<int32_t>(active_.size()) < options_.max_batch; };
      wake_.wait(lock, [&] {
        return stopping_ || !cancelled_.empty() || swap_ != nullptr || !active_.empty() ||
               (!waiting_.empty() && has_free_slot());
      });
      if (stopping_) return;
      if (swap_ && active_.empty()) swap = swap_;
    }
    DropCancelled();
    if (swap) {
      Status status = AssignWeights(model_, *swap->weights);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (status.ok()) {
          policy_version_ = swap->version;
          policy_revision_ = swap->revision;
        }
        swap_.reset();
      }
      if (status.ok())
        Logger("engine")->info("engine: now serving policy version {}", PolicyVersionName(swap->version, swap->revision));
      swap->done.set_value(status);
      continue;
    }
    const auto begin = Clock::now();
    Admit(admitted);
    if (!admitted.empty()) Prefill(admitted);
    if (!active_.empty()) DecodeStep();
    busy_micros_ += std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - begin).count();
  }
}

void GenerationEngine::DropCancelled() {
  std::vector<std::shared_ptr<Request>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_.empty()) return;
    for (uint64_t id : cancelled_) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      dropped.push_back(it->second);
      requests_.erase(it);
    }
    cancelled_.clear();
    waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                  [&](const std::shared_ptr<Sequence>& s) {
                                    return std::find(dropped.begin(), dropped.end(), s->request) != dropped.end();
                                  }),
                   waiting_.end());
  }
  auto is_dropped = [&](const std::shared_ptr<Sequence>& s) {
    return std::find(dropped.begin(), dropped.end(), s->request) != dropped.end();
  };
  for (auto& seq : active_) {
    if (is_dropped(seq)) slot_free_[seq->slot] = true;
  }
  active_.erase(std::remove_if(active_.begin(), active_.end(), is_dropped), active_.end());
  busy_slots_ = static_cast<int32_t>(active_.size());
  for (auto& request : dropped) {
    if (request->spec.on_done) request->spec.on_done(Cancelled("request cancelled"));
  }
}

void GenerationEngine::Admit(std::vector<std::shared_ptr<Sequence>>& admitted) {
  std::lock_guard<std::mutex> lock(mu_);
  if (swap_) return;  // drain before a weight swap
  while (!waiting_.empty() && static_cast<int32_t>(active_.size() + admitted.size()) < options_.max_batch) {
    auto seq = waiting_.front();
    waiting_.pop_front();
    // The lowest free slot, so active slots stay packed at 0..B-1 (a view
    // of the cache instead of a gather) as often as possible.
    for (int64_t s = 0; s < options_.max_batch; ++s) {
      if (slot_free_[s]) {
        slot_free_[s] = false;
        seq->slot = s;
        break;
      }
    }
    admitted.push_back(std::move(seq));
  }
}

void GenerationEngine::Prefill(std::vector<std::shared_ptr<Sequence>>& admitted) {
  const auto device = model_->OutputWeight().device();
  std::vector<std::shared_ptr<Sequence>> finished;
  size_t i = 0;
  while (i < admitted.size()) {
    // Samples of the same request admitted together share one prefill.
    size_t j = i + 1;
    while (j < admitted.size() && admitted[j]->request == admitted[i]->request) ++j;
    const auto& prompt = admitted[i]->request->spec.prompt_ids;
    auto ids = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end())).to(device);
    auto logits = model_->Prefill(ids, cache_, admitted[i]->slot);
    prompt_tokens_ += prompt.size();
    std::vector<SamplerRow> rows;
    for (size_t k = i; k < j; ++k) {
      auto& seq = *admitted[k];
      if (k > i) cache_.CopySlot(admitted[i]->slot, seq.slot, static_cast<int64_t>(prompt.size()));
      seq.cached = static_cast<int64_t>(prompt.size());
      seq.started = Clock::now();
      seq.decoder = std::make_unique<IncrementalDecoder>(*tokenizer_, /*skip_special=*/true);
      const auto& s = seq.request->spec.sampling;
      rows.push_back({s.temperature, s.top_p, s.top_k, seq.Uniform()});
    }
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    SampleTokens(logits.unsqueeze(0).expand({static_cast<int64_t>(j - i), logits.size(0)}), rows, &tokens,
                 &logprobs);
    for (size_t k = i; k < j; ++k) {
      if (Append(*admitted[k], tokens[k - i], logprobs[k - i])) {
        finished.push_back(admitted[k]);
      } else {
        active_.push_back(admitted[k]);
      }
    }
    i = j;
  }
  std::sort(active_.begin(), active_.end(),
            [](const std::shared_ptr<Sequence>& a, const std::shared_ptr<Sequence>& b) { return a->slot < b->slot; });
  busy_slots_ = static_cast<int32_t>(active_.size());
  for (auto& seq : finished) Finish(seq, seq->out.finish_reason);
}

void GenerationEngine::DecodeStep() {
  const int64_t b = static_cast<int64_t>(active_.size());
  auto tokens = torch::empty({b}, torch::kLong);
  auto positions = torch::empty({b}, torch::kLong);
  auto slots = torch::empty({b}, torch::kLong);
  auto* t = tokens.data_ptr<int64_t>();
  auto* p = positions.data_ptr<int64_t>();
  auto* s = slots.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    t[i] = active_[i]->pending;
    p[i] = active_[i]->cached;
    s[i] = active_[i]->slot;
  }
  auto logits = model_->Decode(tokens, positions, slots, cache_);
  decode_steps_++;
  std::vector<SamplerRow> rows;
  rows.reserve(b);
  for (auto& seq : active_) {
    seq->cached++;
    const auto& o = seq->request->spec.sampling;
    rows.push_back({o.temperature, o.top_p, o.top_k, seq->Uniform()});
  }
  std::vector<int32_t> next;
  std::vector<float> logprobs;
  SampleTokens(logits, rows, &next, &logprobs);
  std::vector<std::shared_ptr<Sequence>> finished;
  std::vector<std::shared_ptr<Sequence>> still;
  for (int64_t i = 0; i < b; ++i) {
    (Append(*active_[i], next[i], logprobs[i]) ? finished : still).push_back(active_[i]);
  }
  active_ = std::move(still);
  // Stats are current before the callbacks run (a caller woken by on_done
  // sees its slots free).
  busy_slots_ = static_cast<int32_t>(active_.size());
  for (auto& seq : finished) Finish(seq, seq->out.finish_reason);
}

bool GenerationEngine::Append(Sequence& seq, int32_t token, float logprob) {
  const auto& o = seq.request->spec.sampling;
  if (seq.out.token_ids.empty()) seq.out.seconds_to_first_token = Seconds(seq.request->submitted, Clock::now());
  seq.out.token_ids.push_back(token);
  seq.out.logprobs.push_back(logprob);
  seq.pending = token;
  tokens_generated_++;
  const bool stop_token =
      (!o.ignore_eos && std::find(end_of_turn_ids_.begin(), end_of_turn_ids_.end(), token) != end_of_turn_ids_.end()) ||
      std::find(o.stop_token_ids.begin(), o.stop_token_ids.end(), token) != o.stop_token_ids.end();
  if (stop_token) {
    seq.out.text += seq.decoder->Flush();
    seq.out.finish_reason = "stop";
    return true;
  }
  const size_t before = seq.out.text.size();
  seq.out.text += seq.decoder->Push(token);
  if (!o.stop.empty() && seq.out.text.size() > before) {
    // Only a match that ends in the new text can be new.
    const size_t from = before >= seq.longest_stop ? before - seq.longest_stop + 1 : 0;
    size_t cut = std::string::npos;
    for (const auto& stop : o.stop) cut = std::min(cut, seq.out.text.find(stop, from));
    if (cut != std::string::npos) {
      seq.out.text.resize(cut);
      seq.out.finish_reason = "stop";
      return true;
    }
  }
  const bool at_limit = static_cast<int32_t>(seq.out.token_ids.size()) >= o.max_new_tokens ||
                        seq.cached + 1 >= options_.max_context;
  if (at_limit) {
    seq.out.text += seq.decoder->Flush();
    seq.out.finish_reason = "length";
    return true;
  }
  if (seq.request->spec.on_delta) {
    // Hold back what a stop string could still claim.
    size_t safe = seq.out.text.size();
    if (seq.longest_stop > 1) safe = safe >= seq.longest_stop - 1 ? safe - (seq.longest_stop - 1) : 0;
    safe = Utf8Boundary(seq.out.text, safe);
    if (safe > seq.emitted) {
      seq.request->spec.on_delta(seq.sample_index, seq.out.text.substr(seq.emitted, safe - seq.emitted));
      seq.emitted = safe;
    }
  }
  return false;
}

void GenerationEngine::Finish(std::shared_ptr<Sequence> seq, const std::string& reason) {
  slot_free_[seq->slot] = true;
  auto request = seq->request;
  if (request->spec.on_delta && seq->out.text.size() > seq->emitted)
    request->spec.on_delta(seq->sample_index, seq->out.text.substr(seq->emitted));
  seq->out.finish_reason = reason;
  seq->out.policy_version = policy_version_.load();
  seq->out.policy_revision = policy_revision_;  // written on this thread only
  seq->out.seconds = Seconds(seq->started, Clock::now());
  rollouts_completed_++;
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(request->id);
    if (it == requests_.end()) return;  // cancelled meanwhile
    last = --request->remaining == 0;
    if (last) requests_.erase(it);
  }
  if (request->spec.on_sample) request->spec.on_sample(std::move(seq->out));
  if (last && request->spec.on_done) request->spec.on_done(Status::Ok());
}

}  // namespace spar
