// spar/services/learner/batch.h — training examples as the learner sees
// them, their validation, and collation into padded token batches.
//
// A prompt group becomes K sequences prompt + response_i. As in the SPPO
// seed, the prompt is truncated from the LEFT to max_prompt_length tokens
// (the end of the prompt, nearest the answer, is kept), then the response
// from the right so the whole fits in max_length. The loss mask covers the
// response tokens only; labels are the next tokens, so logits[:, t] score
// labels[:, t].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace spar {

struct LearnerExample {
  std::string prompt_id;
  std::vector<int32_t> prompt_ids;
  std::vector<std::vector<int32_t>> responses;      // K
  std::vector<std::vector<float>> ref_logprobs;     // K or empty (generator's log pi_t)
  std::vector<double> win_rates;                    // K
  std::vector<double> mean_scores;                  // K or empty (needed for GPO)
  uint64_t policy_version = 0;
};

// Checks one example: K >= 2, win rates (and mean scores when present, and
// required for GPO) of length K and finite, non-empty prompt and responses,
// token ids in [0, vocab_size), ref_logprobs matching the responses'
// lengths. InvalidArgument naming the prompt id and field.
Status ValidateExample(const LearnerExample& example, int64_t vocab_size, bool needs_scores);

struct CollateOptions {
  int64_t max_length = 1024;
  int64_t max_prompt_length = 512;
  int64_t pad_id = 0;
};

struct TokenBatch {
  torch::Tensor input_ids;      // [N, T] int64, N = groups * K, right-padded
  torch::Tensor attention_mask; // [N, T] int64
  torch::Tensor labels;         // [N, T] int64, next token (pad where none)
  torch::Tensor loss_mask;      // [N, T] float32, 1 where labels[:, t] is a response token
  torch::Tensor ref_logps;      // [groups, K] float32 sums of the generator's logprobs (if all given)
  torch::Tensor win_rates;      // [groups, K] float64
  torch::Tensor mean_scores;    // [groups, K] float64 (zeros if absent)
  int64_t groups = 0;
  int64_t k = 0;
  int64_t response_tokens = 0;  // tokens under the loss mask
  int64_t tokens = 0;           // non-pad tokens
};

// All examples must have the same K (the caller groups them). Throws
// c10::Error on inconsistent K (a programming error after validation).
TokenBatch Collate(const std::vector<LearnerExample>& examples, const CollateOptions& options);

// Linear schedule with warm-up: 0 -> lr over warmup_steps, then linearly to
// 0 at total_steps (as transformers' get_linear_schedule_with_warmup).
double LinearWarmupLr(double base_lr, int64_t step, int64_t total_steps, double warmup_ratio);

}  // namespace spar
