#include "model/causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <limits>
#include <map>
#include <set>

namespace spar {

using torch::indexing::Slice;

namespace {

constexpr float kMaskedOut = std::numeric_limits<float>::lowest();

ArchitectureTraits TraitsOf(const ModelConfig& config) {
  return config.architecture == "gemma" ? GemmaTraits(config) : LlamaTraits(config);
}

// Additive float32 bias [N, 1, T, T]: query i sees key j <= i whose mask is 1.
torch::Tensor CausalPaddingBias(const torch::Tensor& attention_mask) {
  const int64_t t = attention_mask.size(1);
  auto causal = torch::ones({t, t}, attention_mask.options().dtype(torch::kBool)).tril();
  auto keys = attention_mask.to(torch::kBool).unsqueeze(1).unsqueeze(1);  // [N, 1, 1, T]
  auto allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(keys);
  auto zeros = torch::zeros({}, attention_mask.options().dtype(torch::kFloat32));
  return torch::where(allowed, zeros, torch::full({}, kMaskedOut, zeros.options()));
}

// Gradient checkpointing of one decoder layer: forward runs the layer
// without recording a graph and keeps only its inputs; backward re-runs it
// with grad enabled (under the autocast settings of the forward) and
// differentiates that. The layer's trainable parameters are inputs of the
// function so their gradients flow through it.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h,
                               const torch::Tensor& cos, const torch::Tensor& sin, const torch::Tensor& bias,
                               torch::TensorList params, DecoderLayerImpl* layer) {
    ctx->save_for_backward({h, cos, sin, bias});
    // The layer module outlives the graph: the model owns it and the
    // caller keeps the model while it runs backward.
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["params"] = static_cast<int64_t>(params.size());
    const AutocastState autocast = AutocastState::Current();
    ctx->saved_data["autocast_cpu"] = autocast.cpu_enabled;
    ctx->saved_data["autocast_cuda"] = autocast.cuda_enabled;
    ctx->saved_data["autocast_cpu_dtype"] = static_cast<int64_t>(autocast.cpu_dtype);
    ctx->saved_data["autocast_cuda_dtype"] = static_cast<int64_t>(autocast.cuda_dtype);
    torch::NoGradGuard no_grad;
    return layer->forward(h, cos, sin, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    const auto num_params = static_cast<size_t>(ctx->saved_data["params"].toInt());
    AutocastState forward_state;
    forward_state.cpu_enabled = ctx->saved_data["autocast_cpu"].toBool();
    forward_state.cuda_enabled = ctx->saved_data["autocast_cuda"].toBool();
    forward_state.cpu_dtype = static_cast<torch::ScalarType>(ctx->saved_data["autocast_cpu_dtype"].toInt());
    forward_state.cuda_dtype = static_cast<torch::ScalarType>(ctx->saved_data["autocast_cuda_dtype"].toInt());
    const AutocastState backward_state = AutocastState::Current();
    forward_state.Apply();

    std::vector<torch::Tensor> inputs{saved[0].detach().requires_grad_(true)};
    for (auto& p : layer->parameters())
      if (p.requires_grad()) inputs.push_back(p);
    TORCH_CHECK(inputs.size() == num_params + 1, "checkpointed layer: parameters changed between forward and backward");
    torch::Tensor out;
    {
      torch::AutoGradMode enable_grad(true);
      out = layer->forward(inputs[0], saved[1], saved[2], saved[3]);
    }
    auto grads = torch::autograd::grad({out}, inputs, {grad_outputs[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    backward_state.Apply();
    // One entry per forward argument: h, cos, sin, bias, each parameter, layer.
    torch::autograd::variable_list result{grads[0], torch::Tensor(), torch::Tensor(), torch::Tensor()};
    for (size_t i = 1; i < grads.size(); ++i) result.push_back(grads[i]);
    result.emplace_back();
    return result;
  }
};

}  // namespace

// torch 2.4 replaced the per-device autocast functions with ones taking the
// device type (the old ones were deprecated, then removed).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
AutocastState AutocastState::Current() {
  AutocastState s;
  s.cpu_enabled = at::autocast::is_autocast_enabled(at::kCPU);
  s.cuda_enabled = at::autocast::is_autocast_enabled(at::kCUDA);
  s.cpu_dtype = at::autocast::get_autocast_dtype(at::kCPU);
  s.cuda_dtype = at::autocast::get_autocast_dtype(at::kCUDA);
  return s;
}

void AutocastState::Apply() const {
  at::autocast::set_autocast_dtype(at::kCPU, cpu_dtype);
  at::autocast::set_autocast_dtype(at::kCUDA, cuda_dtype);
  at::autocast::set_autocast_enabled(at::kCPU, cpu_enabled);
  at::autocast::set_autocast_enabled(at::kCUDA, cuda_enabled);
}
#else
AutocastState AutocastState::Current() {
  AutocastState s;
  s.cpu_enabled = at::autocast::is_cpu_enabled();
  s.cuda_enabled = at::autocast::is_enabled();
  s.cpu_dtype = at::autocast::get_autocast_cpu_dtype();
  s.cuda_dtype = at::autocast::get_autocast_gpu_dtype();
  return s;
}

void AutocastState::Apply() const {
  at::autocast::set_autocast_cpu_dtype(cpu_dtype);
  at::autocast::set_autocast_gpu_dtype(cuda_dtype);
  at::autocast::set_cpu_enabled(cpu_enabled);
  at::autocast::set_enabled(cuda_enabled);
}
#endif

ScopedAutocast::ScopedAutocast(torch::DeviceType device_type, std::optional<torch::ScalarType> dtype) {
  if (!dtype) return;
  TORCH_CHECK(device_type == torch::kCPU || device_type == torch::kCUDA,
              "autocast is supported on cpu and cuda only");
  previous_ = AutocastState::Current();
  AutocastState next = previous_;
  if (device_type == torch::kCPU) {
    next.cpu_enabled = true;
    next.cpu_dtype = *dtype;
  } else {
    next.cuda_enabled = true;
    next.cuda_dtype = *dtype;
  }
  next.Apply();
  at::autocast::increment_nesting();
  active_ = true;
}

ScopedAutocast::~ScopedAutocast() {
  if (!active_) return;
  // Cast copies of the weights are cached within the outermost scope only.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  previous_.Apply();
}

CausalLMImpl::CausalLMImpl(const ModelConfig& config, const CausalLMOptions& options)
    : config_(config), traits_(TraitsOf(config)) {
  model_ = register_module("model", DecoderModel(config, traits_, options.parameters));
  if (options.with_lm_head && !config.tie_word_embeddings) {
    lm_head_ = register_module(
        "lm_head", Projection(config.hidden_size, config.vocab_size, false, options.parameters));
  }
  inv_freq_ = RopeInverseFrequencies(config);
}

torch::Tensor CausalLMImpl::Hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  TORCH_CHECK(input_ids.dim() == 2 && attention_mask.sizes() == input_ids.sizes(),
              "input_ids and attention_mask must both be [N, T]");
  auto h = model_->Embed(input_ids);
  if (inv_freq_.device() != h.device()) inv_freq_ = inv_freq_.to(h.device());
  auto positions = (attention_mask.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
  auto [cos, sin] = RopeCosSin(inv_freq_, positions, h.scalar_type());
  auto bias = CausalPaddingBias(attention_mask);
  const bool checkpoint = gradient_checkpointing_ && is_training() && torch::GradMode::is_enabled();
  for (auto& layer : model_->layer_list) {
    if (!checkpoint) {
      h = layer->forward(h, cos, sin, bias);
      continue;
    }
    std::vector<torch::Tensor> trainable;
    for (auto& p : layer->parameters())
      if (p.requires_grad()) trainable.push_back(p);
    if (trainable.empty() && !h.requires_grad()) {
      h = layer->forward(h, cos, sin, bias);  // nothing to differentiate
      continue;
    }
    h = CheckpointedLayer::apply(h, cos, sin, bias, torch::TensorList(trainable), layer.get());
  }
  return model_->norm(h);
}

torch::Tensor CausalLMImpl::Forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  return LogitsOf(Hidden(input_ids, attention_mask));
}

torch::Tensor CausalLMImpl::OutputWeight() {
  return lm_head_ ? lm_head_->weight : model_->embed_tokens->weight;
}

torch::Tensor CausalLMImpl::LogitsOf(const torch::Tensor& hidden) {
  return torch::linear(hidden, OutputWeight()).to(torch::kFloat32);
}

torch::Tensor CausalLMImpl::Prefill(const torch::Tensor& ids, KvCache& cache, int64_t slot) {
  TORCH_CHECK(ids.dim() == 1 && ids.size(0) > 0, "Prefill takes one non-empty sequence [T]");
  const int64_t t = ids.size(0);
  TORCH_CHECK(t <= cache.capacity, "prompt of ", t, " tokens exceeds the KV cache capacity ",
              cache.capacity);
  TORCH_CHECK(slot >= 0 && slot < cache.slots, "slot ", slot, " out of range");
  auto h = model_->Embed(ids.unsqueeze(0));
  if (inv_freq_.device() != h.device()) inv_freq_ = inv_freq_.to(h.device());
  auto positions = torch::arange(t, ids.options().dtype(torch::kLong)).unsqueeze(0);
  auto [cos, sin] = RopeCosSin(inv_freq_, positions, h.scalar_type());
  auto bias = CausalPaddingBias(torch::ones({1, t}, ids.options().dtype(torch::kLong)));
  for (size_t l = 0; l < model_->layer_list.size(); ++l) {
    auto& layer = model_->layer_list[l];
    h = h + layer->self_attn->Prefill(layer->input_layernorm(h), cos, sin, bias, cache.k[l],
                                      cache.v[l], slot);
    h = h + layer->mlp(layer->post_attention_layernorm(h));
  }
  return LogitsOf(model_->norm(h.select(1, t - 1))).squeeze(0);
}

torch::Tensor CausalLMImpl::Decode(const torch::Tensor& tokens, const torch::Tensor& positions,
                                   const torch::Tensor& slots, KvCache& cache) {
  TORCH_CHECK(tokens.dim() == 1 && positions.sizes() == tokens.sizes() && slots.sizes() == tokens.sizes(),
              "Decode takes tokens, positions and slots of the same shape [B]");
  const int64_t b = tokens.size(0);
  // Span and the slot layout are read on the host (the engine passes host
  // tensors), so no device sync is needed to size the attention.
  auto positions_host = positions.to(torch::kCPU, torch::kLong);
  auto slots_host = slots.to(torch::kCPU, torch::kLong);
  const int64_t span = positions_host.max().item<int64_t>() + 1;
  TORCH_CHECK(span <= cache.capacity, "position ", span - 1, " exceeds the KV cache capacity ",
              cache.capacity);
  bool prefix = true;
  auto slot_data = slots_host.accessor<int64_t, 1>();
  for (int64_t i = 0; i < b; ++i) prefix = prefix && slot_data[i] == i;

  const auto device = model_->embed_tokens->weight.device();
  auto tok = tokens.to(device, torch::kLong);
  auto pos = positions_host.to(device);
  auto slot = slots_host.to(device);
  auto h = model_->Embed(tok.unsqueeze(1));  // [B, 1, H]
  if (inv_freq_.device() != h.device()) inv_freq_ = inv_freq_.to(h.device());
  auto [cos, sin] = RopeCosSin(inv_freq_, pos.unsqueeze(1), h.scalar_type());
  auto visible = torch::arange(span, pos.options()).unsqueeze(0) <= pos.unsqueeze(1);  // [B, span]
  auto bias = torch::where(visible, torch::zeros({}, h.options().dtype(torch::kFloat32)),
                           torch::full({}, kMaskedOut, h.options().dtype(torch::kFloat32)))
                  .view({b, 1, 1, span});
  for (size_t l = 0; l < model_->layer_list.size(); ++l) {
    auto& layer = model_->layer_list[l];
    h = h + layer->self_attn->Decode(layer->input_layernorm(h), cos, sin, bias, cache.k[l],
                                     cache.v[l], slot, pos, span, prefix);
    h = h + layer->mlp(layer->post_attention_layernorm(h));
  }
  return LogitsOf(model_->norm(h.squeeze(1)));
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::NamedWeights() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

KvCache KvCache::Allocate(const ModelConfig& config, int64_t slots, int64_t capacity,
                          torch::ScalarType dtype, torch::Device device) {
  KvCache cache;
  cache.slots = slots;
  cache.capacity = capacity;
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    cache.k.push_back(torch::zeros({slots, config.num_key_value_heads, capacity, config.head_dim}, options));
    cache.v.push_back(torch::zeros({slots, config.num_key_value_heads, capacity, config.head_dim}, options));
  }
  return cache;
}

void KvCache::CopySlot(int64_t from, int64_t to, int64_t length) {
  if (from == to || length <= 0) return;
  for (size_t l = 0; l < k.size(); ++l) {
    k[l].select(0, to).narrow(1, 0, length).copy_(k[l].select(0, from).narrow(1, 0, length));
    v[l].select(0, to).narrow(1, 0, length).copy_(v[l].select(0, from).narrow(1, 0, length));
  }
}

int64_t KvCache::nbytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < k.size(); ++l) total += k[l].nbytes() + v[l].nbytes();
  return total;
}

Result<torch::ScalarType> DTypeFromName(const std::string& name) {
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kFloat16;
  return InvalidArgument("unknown dtype '" + name + "' (allowed: float32, bfloat16, float16)");
}

Result<CausalLM> CreateCausalLM(const ModelConfig& config, uint64_t seed, const CausalLMOptions& options) {
  SPAR_RETURN_IF_ERROR(config.Validate());
  CausalLM model(config, options);
  auto generator = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  // HF's _init_weights: normal(0, initializer_range = 0.02) for linear and
  // embedding weights, zero biases; the norms keep their identity value.
  for (auto& [name, param] : model->NamedWeights()) {
    const bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) continue;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      param.zero_();
      continue;
    }
    auto drawn = torch::empty(param.sizes(), torch::kFloat32);
    drawn.normal_(0.0, 0.02, generator);
    param.copy_(drawn);
  }
  return model;
}

Status AssignWeights(CausalLM& model, const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  std::map<std::string, torch::Tensor> params;
  for (auto& [name, p] : model->NamedWeights()) params.emplace(name, p);
  std::map<std::string, const torch::Tensor*> given;
  for (const auto& [name, t] : named) {
    auto it = params.find(name);
    if (it == params.end()) return InvalidArgument("weights: unknown tensor '" + name + "'");
    if (!given.emplace(name, &t).second)
      return InvalidArgument("weights: tensor '" + name + "' given twice");
    if (!t.defined() || t.sizes() != it->second.sizes()) {
      std::ostringstream msg;
      msg << "weights: tensor '" << name << "' has shape "
          << (t.defined() ? c10::str(t.sizes()) : std::string("undefined")) << ", the model needs "
          << it->second.sizes();
      return InvalidArgument(msg.str());
    }
  }
  for (const auto& [name, p] : params) {
    if (!given.count(name)) return InvalidArgument("weights: tensor '" + name + "' missing");
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params) p.copy_(*given[name]);
  return Status::Ok();
}

Status LoadWeightsInto(CausalLM& model, const CheckpointReader& reader,
                       const std::vector<std::string>& allowed_extra_prefixes) {
  std::set<std::string> wanted;
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : model->NamedWeights()) {
    wanted.insert(name);
    if (!reader.Contains(name))
      return NotFound(reader.dir() + ": weight '" + name + "' missing from the checkpoint");
    SPAR_RETURN_IF_ERROR(reader.LoadInto(name, param));
  }
  const bool tied = model->config().tie_word_embeddings;
  for (const auto& name : reader.names()) {
    if (wanted.count(name)) continue;
    // A tied model's checkpoint may still carry lm_head.weight (transformers
    // ignores it); the rotary frequencies of old exports are recomputed.
    if ((tied && name == "lm_head.weight") || name.find("rotary_emb.inv_freq") != std::string::npos)
      continue;
    bool allowed = false;
    for (const auto& prefix : allowed_extra_prefixes)
      allowed = allowed || name.compare(0, prefix.size(), prefix) == 0;
    if (!allowed)
      return InvalidArgument(reader.dir() + ": unexpected tensor '" + name +
                                     "' (not a parameter of this " + model->config().architecture +
                                     " model)");
  }
  return Status::Ok();
}

Result<CausalLM> LoadCausalLM(const std::string& dir, const LoadOptions& options) {
  SPAR_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir));
  torch::ScalarType dtype;
  if (options.dtype) {
    dtype = *options.dtype;
  } else {
    SPAR_ASSIGN_OR_RETURN(dtype, DTypeFromName(config.torch_dtype));
    if (options.device.is_cpu()) dtype = torch::kFloat32;
  }
  SPAR_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(dir));
  CausalLMOptions model_options = options.model;
  model_options.parameters = torch::TensorOptions().dtype(dtype).device(options.device);
  CausalLM model(config, model_options);
  std::vector<std::string> extra = options.allowed_extra_prefixes;
  if (!model_options.with_lm_head) extra.push_back("lm_head.");
  SPAR_RETURN_IF_ERROR(LoadWeightsInto(model, *reader, extra));
  return model;
}

}  // namespace spar
