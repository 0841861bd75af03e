// spar/services/scorer/gpm_heads.h — the General Preference Model's heads
// (arXiv 2410.02197) on top of a decoder's final hidden states.
//
//   v_i     = L2-normalise(value_head @ h_last(i))            [2k]
//   lambda  = softmax(prompt_head @ h_prompt)   (or all ones) [k]
//   s(i>j)  = sum_l lambda_l (v_i[2l] v_j[2l+1] - v_i[2l+1] v_j[2l])
//           = <R v_i, v_j>, R = blockdiag(lambda_l [[0,-1],[1,0]])
// s is antisymmetric by construction. k is read from value_head's shape.
// The Bradley-Terry head is value_head [1, H]: r_i = value_head @ h_last(i).
#pragma once

#include <torch/torch.h>

#include "common/status.h"

namespace spar {

struct PreferenceHeads {
  torch::Tensor value_head;   // [2k, H] (GPM) or [1, H] (BT)
  torch::Tensor prompt_head;  // [k, H] or undefined
  int64_t k() const { return value_head.size(0) / 2; }
  bool is_bt() const { return value_head.size(0) == 1; }
};

// Checks head shapes against the backbone's hidden size: value_head must be
// [2k, H] with k >= 1 or [1, H]; prompt_head [k, H]. InvalidArgument
// naming the tensor and both shapes.
Status ValidateHeads(const PreferenceHeads& heads, int64_t hidden_size);

// [N, H] -> [N, 2k], each row of unit L2 norm (computed in float32).
torch::Tensor GpmEmbeddings(const PreferenceHeads& heads, const torch::Tensor& last_hidden);
// [G, H] -> [G, k] gates (softmax over k; ones without a prompt head).
torch::Tensor GpmGates(const PreferenceHeads& heads, const torch::Tensor& prompt_hidden);
// One group: embeddings [K, 2k], gates [k] -> scores [K, K].
torch::Tensor GpmScoreMatrix(const torch::Tensor& embeddings, const torch::Tensor& gates);
// BT rewards: [N, H] -> [N].
torch::Tensor BtRewards(const PreferenceHeads& heads, const torch::Tensor& last_hidden);

}  // namespace spar
