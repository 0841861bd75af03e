// spar/services/learner/policy.h — what the learner needs of a policy
// model. The LibTorch decoders (model/) implement it for Llama and Gemma;
// the trainer never depends on an architecture.
//
// Thread safety: a policy is used by the learner's training thread only.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"
#include "services/learner/losses.h"

namespace spar {

class TrainablePolicy {
 public:
  virtual ~TrainablePolicy() = default;
  // Logits [N, T, V] for right-padded input_ids [N, T] with attention_mask.
  virtual torch::Tensor Forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) = 0;
  // Sums log p(labels[n, t]) over the positions where loss_mask is 1 ->
  // [N] (labels already shifted: position t predicts labels[n, t]). The
  // default runs Forward over every position; decoders override it to apply
  // the output head only where the mask is set (the vocabulary projection
  // is most of a small model's cost).
  virtual torch::Tensor MaskedSequenceLogProbs(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                               const torch::Tensor& labels, const torch::Tensor& loss_mask) {
    return SequenceLogProbs(Forward(input_ids, attention_mask), labels, loss_mask);
  }
  virtual std::vector<torch::Tensor> Parameters() = 0;
  // Weights under their Hugging Face names (views, no copies).
  virtual std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() = 0;
  // A deep copy (the frozen reference pi_t); the copy does not require grad.
  virtual std::unique_ptr<TrainablePolicy> FrozenCopy() = 0;
  virtual void SetTraining(bool training) = 0;
  // Training-time memory and precision options (learner.gradient_checkpointing,
  // learner.dtype: "float32" | "bfloat16" = autocast with float32 master
  // weights). The default supports neither: InvalidArgument when asked.
  virtual Status ConfigureTraining(bool gradient_checkpointing, const std::string& compute_dtype) {
    if (gradient_checkpointing)
      return InvalidArgument("learner.gradient_checkpointing: policy " + name() + " does not support it");
    if (compute_dtype != "float32")
      return InvalidArgument("learner.dtype: policy " + name() + " supports float32 only, not '" + compute_dtype + "'");
    return Status::Ok();
  }
  // Writes an HF folder (config.json, safetensors, tokenizer files).
  virtual Status Save(const std::string& dir) = 0;
  // Replaces the weights with those of an HF folder of the same shape.
  virtual Status Load(const std::string& dir) = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual torch::Device device() const = 0;
  virtual std::string name() const = 0;
};

}  // namespace spar
