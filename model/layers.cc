#include "model/layers.h"

#include <cmath>

namespace spar {

using torch::indexing::Slice;

namespace {

// Norms and attention softmax run in float32 for half types, as HF does;
// float64 models (gradient checks in tests) stay in float64.
torch::ScalarType AccumulationType(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

}  // namespace

torch::Tensor RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.head_dim;
  auto exponents = torch::arange(0, dim, 2, torch::kFloat64) / static_cast<double>(dim);
  auto inv_freq = 1.0 / torch::pow(config.rope_theta, exponents);
  const RopeScaling& s = config.rope_scaling;
  if (s.type == "llama3") {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept,
    // the band between interpolated (as transformers' llama3 rope init).
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
    auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  return inv_freq.to(torch::kFloat32);
}

std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& inv_freq,
                                                   const torch::Tensor& positions,
                                                   torch::ScalarType dtype) {
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  auto emb = torch::cat({freqs, freqs}, -1).unsqueeze(1);  // [N, 1, T, D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half);
  auto x2 = x.narrow(-1, half, half);
  return x * cos + torch::cat({-x2, x1}, -1) * sin;
}

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool with_bias,
                               const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out, in}, options));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}, options));
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, options));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, bool adds_one, float init,
                         const torch::TensorOptions& options)
    : eps_(eps), adds_one_(adds_one) {
  weight = register_parameter("weight", torch::full({dim}, init, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const auto acc = AccumulationType(x.scalar_type());
  auto h = x.to(acc);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  if (adds_one_) return (h * (1.0 + weight.to(acc))).to(x.scalar_type());
  return weight * h.to(x.scalar_type());
}

AttentionImpl::AttentionImpl(const ModelConfig& config, const torch::TensorOptions& options)
    : heads_(config.num_attention_heads),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      scale_(1.0 / std::sqrt(static_cast<double>(config.head_dim))) {
  const int64_t h = config.hidden_size;
  const bool bias = config.attention_bias;
  q_proj = register_module("q_proj", Projection(h, heads_ * head_dim_, bias, options));
  k_proj = register_module("k_proj", Projection(h, kv_heads_ * head_dim_, bias, options));
  v_proj = register_module("v_proj", Projection(h, kv_heads_ * head_dim_, bias, options));
  o_proj = register_module("o_proj", Projection(heads_ * head_dim_, h, bias, options));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> AttentionImpl::Project(
    const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t n = x.size(0), t = x.size(1);
  auto q = q_proj(x).view({n, t, heads_, head_dim_}).transpose(1, 2);
  auto k = k_proj(x).view({n, t, kv_heads_, head_dim_}).transpose(1, 2);
  auto v = v_proj(x).view({n, t, kv_heads_, head_dim_}).transpose(1, 2);
  return {ApplyRope(q, cos, sin), ApplyRope(k, cos, sin), v};
}

torch::Tensor AttentionImpl::Attend(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, const torch::Tensor& bias) {
  // Heads h*rep .. h*rep+rep-1 share kv head h: fold them into the query
  // length so one batched matmul serves the group without repeating k/v.
  const int64_t n = q.size(0), t = q.size(2), rep = heads_ / kv_heads_;
  const int64_t s = k.size(2);
  auto qg = q.reshape({n, kv_heads_, rep * t, head_dim_});
  auto scores = torch::matmul(qg, k.transpose(-1, -2)).to(AccumulationType(q.scalar_type())) * scale_;
  scores = scores.view({n, kv_heads_, rep, t, s}) + bias.unsqueeze(2);  // softmax in float32
  auto probs = torch::softmax(scores, -1).to(q.scalar_type());
  auto out = torch::matmul(probs.view({n, kv_heads_, rep * t, s}), v);  // [N, KV, rep*T, D]
  return out.view({n, heads_, t, head_dim_}).transpose(1, 2).reshape({n, t, heads_ * head_dim_});
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& bias) {
  auto [q, k, v] = Project(x, cos, sin);
  return o_proj(Attend(q, k, v, bias));
}

torch::Tensor AttentionImpl::Prefill(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const torch::Tensor& bias,
                                     torch::Tensor& cache_k, torch::Tensor& cache_v, int64_t slot) {
  auto [q, k, v] = Project(x, cos, sin);
  const int64_t t = x.size(1);
  cache_k.select(0, slot).narrow(1, 0, t).copy_(k.squeeze(0));
  cache_v.select(0, slot).narrow(1, 0, t).copy_(v.squeeze(0));
  return o_proj(Attend(q, k, v, bias));
}

torch::Tensor AttentionImpl::Decode(const torch::Tensor& x, const torch::Tensor& cos,
                                    const torch::Tensor& sin, const torch::Tensor& bias,
                                    torch::Tensor& cache_k, torch::Tensor& cache_v,
                                    const torch::Tensor& slots, const torch::Tensor& positions,
                                    int64_t span, bool slots_are_prefix) {
  auto [q, k, v] = Project(x, cos, sin);  // k, v [B, KV, 1, D]
  cache_k.index_put_({slots, Slice(), positions}, k.squeeze(2));
  cache_v.index_put_({slots, Slice(), positions}, v.squeeze(2));
  const int64_t b = x.size(0);
  // Slots 0..B-1 (the engine packs them low) are a view; others a gather.
  auto keys = slots_are_prefix ? cache_k.narrow(0, 0, b) : cache_k.index_select(0, slots);
  auto values = slots_are_prefix ? cache_v.narrow(0, 0, b) : cache_v.index_select(0, slots);
  return o_proj(Attend(q, keys.narrow(2, 0, span), values.narrow(2, 0, span), bias));
}

MlpImpl::MlpImpl(const ModelConfig& config, const std::string& activation,
                 const torch::TensorOptions& options)
    : activation_(activation) {
  const int64_t h = config.hidden_size, m = config.intermediate_size;
  gate_proj = register_module("gate_proj", Projection(h, m, false, options));
  up_proj = register_module("up_proj", Projection(h, m, false, options));
  down_proj = register_module("down_proj", Projection(m, h, false, options));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  auto gate = gate_proj(x);
  if (activation_ == "silu") {
    gate = torch::silu(gate);
  } else if (activation_ == "gelu_pytorch_tanh") {
    gate = torch::gelu(gate, "tanh");
  } else {
    gate = torch::gelu(gate);
  }
  return down_proj(gate * up_proj(x));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, const ArchitectureTraits& traits,
                                   const torch::TensorOptions& options) {
  self_attn = register_module("self_attn", Attention(config, options));
  mlp = register_module("mlp", Mlp(config, traits.activation, options));
  input_layernorm = register_module(
      "input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, traits.norm_adds_one, traits.norm_init, options));
  post_attention_layernorm = register_module(
      "post_attention_layernorm",
      RMSNorm(config.hidden_size, config.rms_norm_eps, traits.norm_adds_one, traits.norm_init, options));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos,
                                       const torch::Tensor& sin, const torch::Tensor& bias) {
  auto x = h + self_attn(input_layernorm(h), cos, sin, bias);
  return x + mlp(post_attention_layernorm(x));
}

DecoderModelImpl::DecoderModelImpl(const ModelConfig& config, const ArchitectureTraits& traits,
                                   const torch::TensorOptions& options) {
  embed_tokens = register_module(
      "embed_tokens", TokenEmbedding(config.vocab_size, config.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    DecoderLayer layer(config, traits, options);
    layers->push_back(layer);
    layer_list.push_back(layer);
  }
  norm = register_module(
      "norm", RMSNorm(config.hidden_size, config.rms_norm_eps, traits.norm_adds_one, traits.norm_init, options));
  if (traits.scale_embeddings) embed_scale_ = std::sqrt(static_cast<double>(config.hidden_size));
}

torch::Tensor DecoderModelImpl::Embed(const torch::Tensor& ids) {
  auto h = embed_tokens(ids);
  if (embed_scale_ != 1.0) {
    // Gemma rounds the scale to the activation dtype first, as HF does.
    h = h * torch::scalar_tensor(embed_scale_, h.options());
  }
  return h;
}

}  // namespace spar
