#include "model/causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>

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

}  // namespace

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
  for (auto& layer : model_->layer_list) {
    h = h + layer->self_attn(layer->input_layernorm(h), cos, sin, bias);
    h = h + layer->mlp(layer->post_attention_layernorm(h));
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
