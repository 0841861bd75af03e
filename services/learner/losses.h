// spar/services/learner/losses.h — the preference-optimisation losses,
// exactly as in the official code (uclaml/SPPO, loss_type=sppo) and its GPO
// sibling, plus DPO as a baseline. All take per-response sequence
// log-probabilities (summed over response tokens), so they do not care
// which model produced them.
//
// Notation for a batch of B prompt groups with K responses each:
//   logp[b,i]     log pi_theta(y_i | x_b)    (requires grad)
//   ref_logp[b,i] log pi_t(y_i | x_b)        (frozen reference)
//   win[b,i]      P_hat(y_i > pi_t | x_b)    (win rates from the scorer)
//   score[b,i]    s_hat(y_i > pi_t | x_b)    (mean scores, for GPO)
//   a[b,i] = logp - ref_logp,  eta = 1 / beta.
// SPPO (pair):  w = argmax_i win, l = argmin_i win;
//   L_b = 1/2 [ (a_w - eta (win_w - 1/2))^2 + (a_l - eta (win_l - 1/2))^2 ]
// SPPO all-K:   L_b = 1/2 * (2/K) sum_i (a_i - eta (win_i - 1/2))^2
//   (scaled so K = 2 matches the pair loss).
// GPO (pair):   as SPPO with targets clamp(eta * score_i, -clamp, clamp).
// DPO (pair):   L_b = -log sigma(beta_dpo ((a_w) - (a_l))).
// Every loss is the mean over the batch.
#pragma once

#include <string>

#include <torch/torch.h>

#include "common/status.h"

namespace spar {

enum class LossKind { kSppo, kSppoAllK, kGpo, kDpo };

Result<LossKind> ParseLossKind(const std::string& name);  // sppo | sppo_all_k | gpo | dpo
std::string LossKindName(LossKind kind);

struct LossOptions {
  LossKind kind = LossKind::kSppo;
  double eta = 1000.0;      // 1 / beta for SPPO and GPO
  double gpo_clamp = 1000.0;
  double dpo_beta = 0.1;
};

struct LossOutput {
  torch::Tensor loss;            // scalar, differentiable
  torch::Tensor chosen_index;    // [B] int64, the response treated as y_w
  torch::Tensor rejected_index;  // [B] int64, y_l
};

// Shapes: [B, K] each (win and score may be undefined when the loss does not
// use them). Throws c10::Error on mismatched shapes (model-code convention);
// callers validate examples before they get here.
LossOutput PreferenceLoss(const torch::Tensor& logp, const torch::Tensor& ref_logp,
                          const torch::Tensor& win, const torch::Tensor& score,
                          const LossOptions& options);

// Sums the log-probabilities of `labels` under `logits` over the positions
// where `mask` is 1: logits [B, T, V] predict labels [B, T] (already shifted
// so that logits[:, t] scores labels[:, t]); returns [B].
torch::Tensor SequenceLogProbs(const torch::Tensor& logits, const torch::Tensor& labels,
                               const torch::Tensor& mask);

}  // namespace spar
