// spar/services/learner/causal_lm_policy.h — the learner's TrainablePolicy
// over the LibTorch Llama / Gemma decoders (model/causal_lm.h).
//
// Save() writes a Hugging Face folder (config.json, generation_config.json,
// safetensors, and the tokenizer files of the folder the policy came from),
// which the generator and transformers load.
//
// Thread safety: the learner's training thread only.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "model/causal_lm.h"
#include "services/learner/policy.h"

namespace spar {

// log softmax(hidden @ weight^T)[label] for each row of `hidden` ([M, H];
// weight [V, H], labels [M] int64), differentiable in hidden and weight.
// It works `chunk_rows` rows at a time and its backward recomputes each
// chunk's logits, so only [chunk_rows, V] logits are ever alive instead of
// the [M, V] logits and log-softmax that autograd would keep: at V = 128k
// and 40k response tokens per step that is ~20 GB of fp32 activations.
// The product runs in hidden's dtype (or autocast's), the softmax in fp32
// (fp64 for fp64 inputs). Returns fp32 (fp64).
torch::Tensor ChunkedTokenLogProbs(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& labels, int64_t chunk_rows);

// Rows per chunk that keep one chunk's fp32 logits near 256 MB.
int64_t TokenLogProbChunkRows(int64_t vocab_size);

class CausalLMPolicy final : public TrainablePolicy {
 public:
  // Loads `dir` on `device` ("cpu", "cuda", "cuda:N") with parameters in
  // `dtype` ("float32" | "bfloat16" | "float16"). Errors: LoadCausalLM's,
  // InvalidArgument for a bad device or dtype name.
  static Result<std::unique_ptr<CausalLMPolicy>> Load(const std::string& dir, const std::string& device,
                                                      const std::string& dtype);
  // Wraps a model in memory (tests); tokenizer_dir may be "".
  CausalLMPolicy(CausalLM model, std::string tokenizer_dir, std::string name);

  torch::Tensor Forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) override;
  torch::Tensor MaskedSequenceLogProbs(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                       const torch::Tensor& labels, const torch::Tensor& loss_mask) override;
  std::vector<torch::Tensor> Parameters() override;
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() override;
  std::unique_ptr<TrainablePolicy> FrozenCopy() override;
  void SetTraining(bool training) override;
  // Gradient checkpointing of every decoder layer, and "bfloat16" autocast
  // of the forward on the policy's device (CUDA, or the CPU's bf16 kernels)
  // over float32 parameters. InvalidArgument when the parameters are not
  // float32 (autocast needs master weights) or for another dtype name.
  Status ConfigureTraining(bool gradient_checkpointing, const std::string& compute_dtype) override;
  Status Save(const std::string& dir) override;
  Status Load(const std::string& dir) override;
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int64_t pad_id() const override;
  torch::Device device() const override;
  std::string name() const override { return name_; }

  CausalLM& model() { return model_; }

 private:
  CausalLM model_;
  std::optional<torch::ScalarType> autocast_;
  std::string tokenizer_dir_;
  std::string name_;
};

}  // namespace spar
