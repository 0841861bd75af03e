#include "services/generator/generator_core.h"

#include <cmath>

#include "common/logging.h"
#include "model/checkpoint.h"

namespace spar {

struct GenerationJob::State {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<TextDelta> deltas;
  std::vector<GeneratedRollout> rollouts;
  std::vector<uint64_t> request_ids;
  size_t pending = 0;  // engine requests whose on_done has not run
  bool cancelled = false;
  Status status;
};

GenerationJob::~GenerationJob() { Cancel(); }

void GenerationJob::Cancel() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->cancelled || state_->pending == 0) return;
    state_->cancelled = true;
    ids = state_->request_ids;
  }
  for (uint64_t id : ids) engine_->Cancel(id);
}

JobUpdate GenerationJob::Next(std::chrono::steady_clock::time_point until) {
  JobUpdate out;
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait_until(lock, until, [&] {
    return !state_->deltas.empty() || !state_->rollouts.empty() || state_->pending == 0;
  });
  out.deltas.swap(state_->deltas);
  out.rollouts.swap(state_->rollouts);
  out.finished = state_->pending == 0;
  if (out.finished) {
    out.status = state_->status;
    if (out.status.ok() && state_->cancelled) out.status = Cancelled("generation cancelled");
  }
  return out;
}

namespace {

std::string Field(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace

GeneratorCore::GeneratorCore(std::shared_ptr<const Tokenizer> tokenizer,
                             const GeneratorCoreOptions& options, MetricsRegistry* metrics)
    : tokenizer_(std::move(tokenizer)), options_(options), metrics_(metrics) {
  if (!metrics_) {
    own_metrics_ = std::make_unique<MetricsRegistry>();
    metrics_ = own_metrics_.get();
  }
  const MetricLabels labels = {{"generator", options_.generator_id}};
  tokens_total_ = metrics_->GetCounter("spar_generator_tokens_total", "Response tokens generated", labels);
  rollouts_total_ = metrics_->GetCounter("spar_generator_rollouts_total", "Rollouts completed", labels);
  requests_failed_total_ = metrics_->GetCounter("spar_generator_requests_failed_total",
                                                "Generate requests refused or failed", labels);
  tokens_per_second_ = metrics_->GetGauge("spar_generator_tokens_per_second",
                                          "Response tokens per second over the last 10 s", labels);
  busy_slots_ = metrics_->GetGauge("spar_generator_busy_slots", "Decode slots in use", labels);
  queue_depth_ = metrics_->GetGauge("spar_generator_queue_depth", "Samples waiting for a slot", labels);
  policy_version_gauge_ = metrics_->GetGauge("spar_generator_policy_version", "Policy version served", labels);
  policy_revision_gauge_ = metrics_->GetGauge("spar_generator_policy_revision",
                                              "Revision of the served version (intermediate publications)", labels);
  time_to_first_token_ = metrics_->GetHistogram("spar_generator_time_to_first_token_seconds",
                                                "Seconds from submission to a sample's first token",
                                                LatencyBuckets(), labels);
  weight_bytes_total_ = metrics_->GetCounter("spar_weight_sync_bytes_total",
                                             "Weight bytes received over UpdateWeights", labels);
  weight_seconds_ = metrics_->GetHistogram("spar_weight_sync_seconds",
                                           "Seconds per received weight version (stream + apply)",
                                           LatencyBuckets(), labels);
  weight_updates_total_ = metrics_->GetCounter("spar_weight_sync_applied_total",
                                               "Weight versions applied", labels);
}

Result<std::unique_ptr<GeneratorCore>> GeneratorCore::Create(CausalLM model,
                                                             std::shared_ptr<const Tokenizer> tokenizer,
                                                             const GeneratorCoreOptions& options,
                                                             MetricsRegistry* metrics) {
  if (!model) return InvalidArgument("generator: no model");
  if (!tokenizer) return InvalidArgument("generator: no tokenizer");
  if (options.limits.max_samples == 0) return InvalidArgument("generator: max_samples must be > 0");
  if (options.limits.max_prompts == 0) return InvalidArgument("generator: max_prompts must be > 0");
  if (options.limits.max_prompt_tokens <= 0 ||
      options.limits.max_prompt_tokens >= options.engine.max_context)
    return InvalidArgument("generator: max_prompt_tokens must be in [1, max_context), got " +
                           std::to_string(options.limits.max_prompt_tokens) + " with max_context " +
                           std::to_string(options.engine.max_context));
  std::unique_ptr<GeneratorCore> core(new GeneratorCore(tokenizer, options, metrics));
  const ModelConfig& config = model->config();
  GeneratorDescription& d = core->description_;
  d.generator_id = options.generator_id;
  d.model_name = options.model_name;
  d.architecture = config.architecture;
  for (const auto& p : model->parameters()) d.num_parameters += p.numel();
  d.hidden_size = static_cast<int32_t>(config.hidden_size);
  d.num_layers = static_cast<int32_t>(config.num_hidden_layers);
  d.vocab_size = static_cast<int32_t>(config.vocab_size);
  d.max_context = options.engine.max_context;
  if (tokenizer->vocab_size() > config.vocab_size)
    return InvalidArgument("generator: the tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                           " ids but the model only " + std::to_string(config.vocab_size));
  SPAR_RETURN_IF_ERROR(core->ValidateSampling(options.default_sampling).WithContext("generator: default"));
  SPAR_ASSIGN_OR_RETURN(core->engine_, GenerationEngine::Create(std::move(model), tokenizer, options.engine));
  core->RefreshGauges();
  GeneratorCore* raw = core.get();
  core->refresh_thread_ = std::thread([raw] { raw->RefreshLoop(); });
  return core;
}

GeneratorCore::~GeneratorCore() {
  {
    std::lock_guard<std::mutex> lock(rate_mu_);
    stopping_ = true;
  }
  refresh_wake_.notify_all();
  if (refresh_thread_.joinable()) refresh_thread_.join();
  // Callbacks reach back into the core: stop the engine first.
  engine_.reset();
}

Status GeneratorCore::ValidateSampling(const SamplingOptions& s) const {
  const int64_t vocab = description_.vocab_size;
  if (!std::isfinite(s.temperature) || s.temperature < 0 || s.temperature > 100)
    return InvalidArgument("sampling.temperature: must be in [0, 100] (0 = greedy), got " +
                           std::to_string(s.temperature));
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1)
    return InvalidArgument("sampling.top_p: must be in (0, 1], got " + std::to_string(s.top_p));
  if (s.top_k < 0 || s.top_k > vocab)
    return InvalidArgument("sampling.top_k: must be in [0, " + std::to_string(vocab) + "] (0 = off), got " +
                           std::to_string(s.top_k));
  const int32_t max_new = options_.engine.max_context - 1;
  if (s.max_new_tokens <= 0 || s.max_new_tokens > max_new)
    return InvalidArgument("sampling.max_new_tokens: must be in [1, " + std::to_string(max_new) + "], got " +
                           std::to_string(s.max_new_tokens));
  if (s.stop.size() > options_.limits.max_stop_strings)
    return InvalidArgument("sampling.stop: at most " + std::to_string(options_.limits.max_stop_strings) +
                           " stop strings, got " + std::to_string(s.stop.size()));
  for (size_t i = 0; i < s.stop.size(); ++i)
    if (s.stop[i].empty() || s.stop[i].size() > 256)
      return InvalidArgument("sampling.stop[" + std::to_string(i) + "]: must be 1..256 bytes");
  for (size_t i = 0; i < s.stop_token_ids.size(); ++i)
    if (s.stop_token_ids[i] < 0 || s.stop_token_ids[i] >= vocab)
      return InvalidArgument("sampling.stop_token_ids[" + std::to_string(i) + "]: " +
                             std::to_string(s.stop_token_ids[i]) + " is outside the vocabulary [0, " +
                             std::to_string(vocab) + ")");
  return Status::Ok();
}

Result<std::vector<int32_t>> GeneratorCore::RenderPrompt(const PromptInput& prompt,
                                                         const std::string& field) const {
  std::vector<int32_t> ids;
  if (prompt.is_conversation) {
    if (prompt.messages.empty())
      return InvalidArgument(Field(field, "conversation.messages") + ": empty conversation");
    size_t bytes = 0;
    for (size_t i = 0; i < prompt.messages.size(); ++i) {
      const auto& m = prompt.messages[i];
      if (m.role != "system" && m.role != "user" && m.role != "assistant")
        return InvalidArgument(Field(field, "conversation.messages[" + std::to_string(i) + "].role") +
                               ": must be system, user or assistant, got '" + m.role + "'");
      bytes += m.content.size();
    }
    if (bytes > options_.limits.max_prompt_bytes)
      return InvalidArgument(Field(field, "conversation") + ": " + std::to_string(bytes) +
                             " bytes, more than the limit of " + std::to_string(options_.limits.max_prompt_bytes));
    auto encoded = tokenizer_->EncodeChat(prompt.messages, /*add_generation_prompt=*/true);
    if (!encoded.ok()) return InvalidArgument(Field(field, "conversation") + ": " + encoded.status().message());
    ids = std::move(*encoded);
  } else {
    if (prompt.text.empty()) return InvalidArgument(Field(field, "text") + ": empty prompt");
    if (prompt.text.size() > options_.limits.max_prompt_bytes)
      return InvalidArgument(Field(field, "text") + ": " + std::to_string(prompt.text.size()) +
                             " bytes, more than the limit of " + std::to_string(options_.limits.max_prompt_bytes));
    ids = tokenizer_->Encode(prompt.text, /*add_bos=*/false, /*parse_special=*/true);
    const int32_t bos = tokenizer_->bos_id();
    if (bos >= 0 && (ids.empty() || ids[0] != bos)) ids.insert(ids.begin(), bos);
  }
  if (ids.empty()) return InvalidArgument(Field(field, "text") + ": renders to no tokens");
  if (static_cast<int64_t>(ids.size()) > options_.limits.max_prompt_tokens)
    return InvalidArgument(field + ": the rendered prompt has " + std::to_string(ids.size()) +
                           " tokens, more than max_prompt_tokens " +
                           std::to_string(options_.limits.max_prompt_tokens) + " (prompts are not truncated)");
  return ids;
}

Result<std::unique_ptr<GenerationJob>> GeneratorCore::Start(GenerateInput input) {
  auto fail = [this](Status s) -> Result<std::unique_ptr<GenerationJob>> {
    requests_failed_.fetch_add(1);
    requests_failed_total_->Increment();
    return s;
  };
  if (input.prompts.empty()) return fail(InvalidArgument("prompts: at least one prompt is needed"));
  if (input.prompts.size() > options_.limits.max_prompts)
    return fail(InvalidArgument("prompts: at most " + std::to_string(options_.limits.max_prompts) +
                                " prompts per request, got " + std::to_string(input.prompts.size())));
  if (input.num_samples == 0 || input.num_samples > options_.limits.max_samples)
    return fail(InvalidArgument("num_samples: must be in [1, " + std::to_string(options_.limits.max_samples) +
                                "], got " + std::to_string(input.num_samples)));
  Status s = ValidateSampling(input.sampling);
  if (!s.ok()) return fail(s);

  std::unique_ptr<GenerationJob> job(new GenerationJob());
  job->engine_ = engine_.get();
  job->state_ = std::make_shared<GenerationJob::State>();
  job->num_samples_ = input.num_samples;
  for (size_t i = 0; i < input.prompts.size(); ++i) {
    const std::string field = "prompts[" + std::to_string(i) + "]" +
                              (input.prompts[i].prompt_id.empty() ? "" : " ('" + input.prompts[i].prompt_id + "')");
    auto ids = RenderPrompt(input.prompts[i], field);
    if (!ids.ok()) return fail(ids.status());
    const int64_t need = static_cast<int64_t>(ids->size()) + input.sampling.max_new_tokens;
    if (need > options_.engine.max_context)
      return fail(InvalidArgument(field + ": " + std::to_string(ids->size()) +
                                  " prompt tokens + sampling.max_new_tokens " +
                                  std::to_string(input.sampling.max_new_tokens) + " exceed max_context " +
                                  std::to_string(options_.engine.max_context)));
    job->prompt_ids_.push_back(std::make_shared<const std::vector<int32_t>>(std::move(*ids)));
  }

  auto state = job->state_;
  state->pending = input.prompts.size();
  for (size_t i = 0; i < input.prompts.size(); ++i) {
    GenerationRequest req;
    req.prompt_ids = *job->prompt_ids_[i];
    req.num_samples = input.num_samples;
    req.sampling = input.sampling;
    auto prompt_ids = job->prompt_ids_[i];
    std::string prompt_id = input.prompts[i].prompt_id;
    req.on_sample = [this, state, i, prompt_ids, prompt_id](SampleOutput&& out) {
      if (out.finish_reason == "cancelled") return;
      OnRollout(out);
      GeneratedRollout r;
      r.prompt_index = i;
      r.prompt_id = prompt_id;
      r.sample_index = out.sample_index;
      r.text = std::move(out.text);
      r.token_ids = std::move(out.token_ids);
      r.logprobs = std::move(out.logprobs);
      r.finish_reason = std::move(out.finish_reason);
      r.policy_version = out.policy_version;
      r.policy_revision = out.policy_revision;
      r.prompt_token_ids = prompt_ids;
      {
        std::lock_guard<std::mutex> lock(state->mu);
        state->rollouts.push_back(std::move(r));
      }
      state->cv.notify_all();
    };
    req.on_done = [state](const Status& st) {
      {
        std::lock_guard<std::mutex> lock(state->mu);
        if (!st.ok() && state->status.ok()) state->status = st;
        --state->pending;
      }
      state->cv.notify_all();
    };
    if (input.want_deltas) {
      req.on_delta = [state, i](uint32_t sample_index, const std::string& delta) {
        if (delta.empty()) return;
        {
          std::lock_guard<std::mutex> lock(state->mu);
          state->deltas.push_back({i, sample_index, delta});
        }
        state->cv.notify_all();
      };
    }
    auto id = engine_->Submit(std::move(req));
    if (!id.ok()) {
      // Nothing of this request runs; take back what was submitted.
      std::vector<uint64_t> submitted;
      {
        std::lock_guard<std::mutex> lock(state->mu);
        state->pending -= input.prompts.size() - i;
        state->cancelled = true;
        submitted = state->request_ids;
      }
      for (uint64_t sid : submitted) engine_->Cancel(sid);
      Status err = id.status();
      if (err.code() == StatusCode::kInvalidArgument) err = err.WithContext("prompts[" + std::to_string(i) + "]");
      return fail(err);
    }
    std::lock_guard<std::mutex> lock(state->mu);
    state->request_ids.push_back(*id);
    // A Cancel() racing with Start cannot happen (the caller has no job yet).
  }
  requests_started_.fetch_add(1);
  return job;
}

void GeneratorCore::OnRollout(const SampleOutput& sample) {
  tokens_total_->Increment(static_cast<double>(sample.token_ids.size()));
  rollouts_total_->Increment();
  if (!sample.token_ids.empty()) time_to_first_token_->Observe(sample.seconds_to_first_token);
}

Result<WeightApplyResult> GeneratorCore::ApplyWeights(const StagedWeights& staged) {
  auto start = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, torch::Tensor>> named;
  named.reserve(staged.tensors.size());
  for (const auto& [name, t] : staged.tensors) {
    auto dtype = ParseDType(t.dtype);
    if (!dtype.ok()) return InvalidArgument("weights: tensor " + name + ": " + dtype.status().message());
    auto scalar = ToTorchDType(*dtype);
    if (!scalar.ok()) return InvalidArgument("weights: tensor " + name + ": " + scalar.status().message());
    // A view of the staging buffer, alive until SwapWeights has copied it.
    named.emplace_back(name, torch::from_blob(const_cast<char*>(t.bytes.data()), t.shape,
                                              torch::TensorOptions().dtype(*scalar)));
  }
  Status s = engine_->SwapWeights(named, staged.version, staged.revision);
  if (!s.ok()) return s;
  policy_version_gauge_->Set(static_cast<double>(staged.version));
  policy_revision_gauge_->Set(static_cast<double>(staged.revision));
  weight_updates_.fetch_add(1);
  weight_updates_total_->Increment();
  WeightApplyResult out;
  out.version = staged.version;
  out.revision = staged.revision;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

void GeneratorCore::RecordWeightSync(uint64_t bytes, double seconds, bool applied) {
  weight_bytes_.fetch_add(bytes);
  weight_bytes_total_->Increment(static_cast<double>(bytes));
  if (applied) weight_seconds_->Observe(seconds);
}

uint64_t GeneratorCore::policy_version() const { return engine_->Stats().policy_version; }

std::pair<uint64_t, uint64_t> GeneratorCore::policy_version_and_revision() const {
  EngineStats e = engine_->Stats();
  return {e.policy_version, e.policy_revision};
}

GeneratorStats GeneratorCore::Stats() const {
  GeneratorStats s;
  s.engine = engine_->Stats();
  {
    std::lock_guard<std::mutex> lock(rate_mu_);
    s.tokens_per_second = tokens_per_second_value_;
    s.rollouts_per_second = rollouts_per_second_value_;
  }
  s.requests_started = requests_started_.load();
  s.requests_failed = requests_failed_.load();
  s.weight_updates = weight_updates_.load();
  s.weight_bytes = weight_bytes_.load();
  return s;
}

void GeneratorCore::RefreshGauges() {
  EngineStats e = engine_->Stats();
  busy_slots_->Set(e.busy_slots);
  queue_depth_->Set(e.queue_depth);
  policy_version_gauge_->Set(static_cast<double>(e.policy_version));
  policy_revision_gauge_->Set(static_cast<double>(e.policy_revision));
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(rate_mu_);
  rate_samples_.push_back({now, e.tokens_generated, e.rollouts_completed});
  while (rate_samples_.size() > 2 && now - rate_samples_.front().at > std::chrono::seconds(10))
    rate_samples_.pop_front();
  const RateSample& first = rate_samples_.front();
  const double dt = std::chrono::duration<double>(now - first.at).count();
  if (dt > 0.2) {
    tokens_per_second_value_ = static_cast<double>(e.tokens_generated - first.tokens) / dt;
    rollouts_per_second_value_ = static_cast<double>(e.rollouts_completed - first.rollouts) / dt;
  }
  tokens_per_second_->Set(tokens_per_second_value_);
}

void GeneratorCore::RefreshLoop() {
  std::unique_lock<std::mutex> lock(rate_mu_);
  while (!stopping_) {
    refresh_wake_.wait_for(lock, std::chrono::milliseconds(500));
    if (stopping_) break;
    lock.unlock();
    RefreshGauges();
    lock.lock();
  }
}

}  // namespace spar
