// spar/model/layers.h — the blocks Llama-3 and Gemma share: RMSNorm, RoPE,
// grouped-query attention (training and KV-cache paths), the gated MLP, the
// decoder layer and the decoder stack. Submodules carry the Hugging Face
// names (self_attn.q_proj, mlp.gate_proj, input_layernorm, ...), so a
// module's named_parameters() are the checkpoint's tensor names.
//
// Model code may throw (c10::Error) on misuse; loaders above it return
// Status.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "model/hf_config.h"

namespace spar {

// What sets one architecture apart (filled by model/llama.cc, gemma.cc).
struct ArchitectureTraits {
  std::string name;              // "llama" | "gemma"
  bool norm_adds_one = false;    // Gemma: x * (1 + w), computed in float32
  bool scale_embeddings = false; // Gemma: embeddings * sqrt(hidden_size)
  std::string activation;        // "silu" | "gelu_pytorch_tanh" | "gelu"
  float norm_init = 1.0f;        // RMSNorm weight at initialisation
};

// Traits of config.architecture; InvalidArgument for an unknown one.
ArchitectureTraits LlamaTraits(const ModelConfig& config);
ArchitectureTraits GemmaTraits(const ModelConfig& config);

// RoPE inverse frequencies [head_dim / 2] (float32), with the llama3
// frequency scaling when config.rope_scaling.type == "llama3".
torch::Tensor RopeInverseFrequencies(const ModelConfig& config);
// cos, sin [N, 1, T, head_dim] for positions [N, T] (computed in float32,
// returned in `dtype`).
std::pair<torch::Tensor, torch::Tensor> RopeCosSin(const torch::Tensor& inv_freq,
                                                   const torch::Tensor& positions,
                                                   torch::ScalarType dtype);
// x [N, heads, T, D] rotated (HF rotate_half convention).
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// A bias-optional linear map whose weight [out, in] is allocated with
// `options` and left uninitialised (loaders fill it; CreateCausalLM draws
// it), so an 8B model is built straight on its device in its dtype.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }
  torch::Tensor weight, bias;
};
TORCH_MODULE(Projection);

class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(TokenEmbedding);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, bool adds_one, float init, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
  bool adds_one_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const torch::TensorOptions& options);
  // Full-sequence attention. x [N, T, H]; cos/sin from RopeCosSin; `bias`
  // [N, 1, T, T] additive float32 mask (0, or the float32 minimum).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& bias);
  // The same for one sequence, also writing its keys/values into
  // cache_k/v[slot, :, 0:T].
  torch::Tensor Prefill(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& bias, torch::Tensor& cache_k, torch::Tensor& cache_v,
                        int64_t slot);
  // One token per sequence. x [B, 1, H]; writes keys/values at
  // (slots[b], positions[b]) and attends over [0, span) of each slot with
  // `bias` [B, 1, 1, span] masking positions beyond each sequence.
  torch::Tensor Decode(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                       const torch::Tensor& bias, torch::Tensor& cache_k, torch::Tensor& cache_v,
                       const torch::Tensor& slots, const torch::Tensor& positions, int64_t span,
                       bool slots_are_prefix);

  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  // q [N, heads, T, D], k/v [N, kv_heads, S, D], bias broadcastable to
  // [N, 1, T, S] (float32) -> [N, T, heads * D]. Grouped: no copies of k/v
  // per head.
  torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& bias);
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> Project(const torch::Tensor& x,
                                                                  const torch::Tensor& cos,
                                                                  const torch::Tensor& sin);
  int64_t heads_, kv_heads_, head_dim_;
  double scale_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, const std::string& activation,
          const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  std::string activation_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const ArchitectureTraits& traits,
                   const torch::TensorOptions& options);
  // One pre-norm block over the full sequence (training / scoring path):
  // h + attn(norm(h)), then + mlp(norm(.)). Same arguments as
  // AttentionImpl::forward.
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& bias);
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// "model": embed_tokens, layers.N, norm.
class DecoderModelImpl : public torch::nn::Module {
 public:
  DecoderModelImpl(const ModelConfig& config, const ArchitectureTraits& traits,
                   const torch::TensorOptions& options);
  // Token embeddings, scaled for Gemma.
  torch::Tensor Embed(const torch::Tensor& ids);
  TokenEmbedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  std::vector<DecoderLayer> layer_list;

 private:
  double embed_scale_ = 1.0;
};
TORCH_MODULE(DecoderModel);

}  // namespace spar
