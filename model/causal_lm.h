// spar/model/causal_lm.h — Llama-3 and Gemma decoders in LibTorch, with
// module names equal to the Hugging Face weight names, a training forward
// over padded batches and a decoding forward over a slotted KV cache.
//
// The architectures share their blocks (model/layers.h); what differs is
// set by model/llama.cc and model/gemma.cc (embedding scale, RMSNorm form,
// activation, head tying).
//
// Ownership: a CausalLM is a torch::nn::Module holder (shared). A KvCache
// is a plain value owned by whoever decodes (the generation engine).
// Thread safety: like any module, one thread at a time.
// Errors: forwards throw c10::Error on shape misuse (model code may throw);
// the loaders return Status naming the folder and tensor.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/layers.h"

namespace spar {

// Keys and values of `slots` sequences, each up to `capacity` positions:
// per layer k[l], v[l] of shape [slots, num_key_value_heads, capacity,
// head_dim]. A slot holds one sequence; the engine tracks its length.
struct KvCache {
  std::vector<torch::Tensor> k;
  std::vector<torch::Tensor> v;
  int64_t slots = 0;
  int64_t capacity = 0;

  static KvCache Allocate(const ModelConfig& config, int64_t slots, int64_t capacity,
                          torch::ScalarType dtype, torch::Device device);
  // Copies positions [0, length) of slot `from` into slot `to` (the K
  // samples of one prompt share its prefill).
  void CopySlot(int64_t from, int64_t to, int64_t length);
  // Bytes held by the cache.
  int64_t nbytes() const;
};

struct CausalLMOptions {
  // false: the backbone only (model.*), for preference-model scorers.
  bool with_lm_head = true;
  // Dtype and device the parameters are allocated with (uninitialised;
  // see CreateCausalLM / LoadCausalLM).
  torch::TensorOptions parameters = torch::TensorOptions().dtype(torch::kFloat32);
};

class CausalLMImpl : public torch::nn::Module {
 public:
  CausalLMImpl(const ModelConfig& config, const CausalLMOptions& options = {});

  // Training / scoring forward. input_ids [N, T] (any padding side),
  // attention_mask [N, T] (1 = real token). Positions count real tokens
  // only; attention is causal and ignores padded keys. Returns logits
  // [N, T, V] in float32 (HF's LlamaForCausalLM upcasts too).
  torch::Tensor Forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  // The same, stopping at the final norm: hidden states [N, T, H].
  torch::Tensor Hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  // Prefill of one sequence into cache slot `slot`: ids [T] -> logits of
  // the last position [V] (float32). Positions [0, T) of the slot are
  // overwritten.
  torch::Tensor Prefill(const torch::Tensor& ids, KvCache& cache, int64_t slot);
  // One decode step for B sequences: tokens [B] (int64) at positions [B]
  // (int64, the index the token takes) in cache slots [B] (int64, distinct).
  // Writes their keys/values and returns logits [B, V] (float32).
  torch::Tensor Decode(const torch::Tensor& tokens, const torch::Tensor& positions,
                       const torch::Tensor& slots, KvCache& cache);

  // Gradient checkpointing: when on, and the module is training with grad
  // mode enabled, each decoder layer runs without keeping its activations
  // (only its input is saved) and is run again during backward to compute
  // its gradients. Same loss and gradients, less memory, about one more
  // forward pass of compute. Off by default; CPU and GPU alike.
  void SetGradientCheckpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }

  // Output head weight (lm_head, or the embedding when tied).
  torch::Tensor OutputWeight();

  // Parameters under their HF names (lm_head left out when tied, as
  // save_pretrained does).
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights();

  const ModelConfig& config() const { return config_; }
  const ArchitectureTraits& traits() const { return traits_; }

 private:
  torch::Tensor LogitsOf(const torch::Tensor& hidden);

  ModelConfig config_;
  ArchitectureTraits traits_;
  DecoderModel model_{nullptr};
  Projection lm_head_{nullptr};
  // float32 [head_dim / 2]; not a buffer, so module.to(bf16) leaves it be.
  torch::Tensor inv_freq_;
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(CausalLM);

// The thread's autocast (mixed precision) settings for the CPU and CUDA,
// read and written through the API of the LibTorch it is built against
// (1.13 and 2.x differ).
struct AutocastState {
  bool cpu_enabled = false;
  bool cuda_enabled = false;
  torch::ScalarType cpu_dtype = torch::kBFloat16;
  torch::ScalarType cuda_dtype = torch::kHalf;

  static AutocastState Current();
  void Apply() const;
};

// Mixed-precision scope for training: while alive, autocast-eligible ops
// (linear, matmul) on `device_type` run in `dtype` while the parameters
// stay as they are (float32 master weights, float32 gradients). nullopt
// leaves autocast as it is. The previous state comes back on destruction
// (and the autocast weight cache is cleared when the outermost scope ends).
// Thread-local, like torch's autocast: construct it on the thread that runs
// the forward.
class ScopedAutocast {
 public:
  ScopedAutocast(torch::DeviceType device_type, std::optional<torch::ScalarType> dtype);
  ~ScopedAutocast();
  ScopedAutocast(const ScopedAutocast&) = delete;
  ScopedAutocast& operator=(const ScopedAutocast&) = delete;

 private:
  bool active_ = false;
  AutocastState previous_;
};

// A model with HF-style random initialisation (normal(0, 0.02) for linear
// and embedding weights, norms at identity), seeded, in float32 on the CPU.
// InvalidArgument if config.Validate() fails.
Result<CausalLM> CreateCausalLM(const ModelConfig& config, uint64_t seed,
                                const CausalLMOptions& options = {});

struct LoadOptions {
  torch::Device device = torch::kCPU;
  // Parameter dtype; nullopt = config.json's torch_dtype (float32 when the
  // device is the CPU and the file says bfloat16/float16, since CPU kernels
  // for half types are slow; set it explicitly to override).
  std::optional<torch::ScalarType> dtype;
  CausalLMOptions model;
  // Tensors in the checkpoint that are not parameters are an error unless
  // their name starts with one of these (e.g. "value_head." for a GPM).
  std::vector<std::string> allowed_extra_prefixes;
};

// Loads an HF folder (config.json + safetensors). Errors name the folder
// and tensor: NotFound for a missing weight, InvalidArgument for a shape
// mismatch or an unexpected tensor, then CheckpointReader's and
// ModelConfig's errors.
Result<CausalLM> LoadCausalLM(const std::string& dir, const LoadOptions& options = {});
// Copies the weights of `reader` into an existing model (same shapes), e.g.
// a new policy version. Same errors; on error the model may be partly
// updated, so callers load into a staging copy when that matters.
Status LoadWeightsInto(CausalLM& model, const CheckpointReader& reader,
                       const std::vector<std::string>& allowed_extra_prefixes = {});
// Copies named tensors (any dtype/device) into the model's parameters by
// name. Every parameter must be present exactly once (InvalidArgument
// naming the missing or unknown name, or the shape mismatch). Nothing is
// changed when validation fails.
Status AssignWeights(CausalLM& model,
                     const std::vector<std::pair<std::string, torch::Tensor>>& named);

// Dtype from a config string ("bfloat16", "float16", "float32").
Result<torch::ScalarType> DTypeFromName(const std::string& name);

}  // namespace spar
