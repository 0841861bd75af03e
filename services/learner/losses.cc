#include "services/learner/losses.h"

namespace spar {

Result<LossKind> ParseLossKind(const std::string& name) {
  if (name == "sppo") return LossKind::kSppo;
  if (name == "sppo_all_k") return LossKind::kSppoAllK;
  if (name == "gpo") return LossKind::kGpo;
  if (name == "dpo") return LossKind::kDpo;
  return InvalidArgument("loss '" + name + "' is not one of: sppo, sppo_all_k, gpo, dpo");
}

std::string LossKindName(LossKind kind) {
  switch (kind) {
    case LossKind::kSppo: return "sppo";
    case LossKind::kSppoAllK: return "sppo_all_k";
    case LossKind::kGpo: return "gpo";
    case LossKind::kDpo: return "dpo";
  }
  return "sppo";
}

LossOutput PreferenceLoss(const torch::Tensor& logp, const torch::Tensor& ref_logp,
                          const torch::Tensor& win, const torch::Tensor& score,
                          const LossOptions& options) {
  TORCH_CHECK(logp.dim() == 2 && logp.sizes() == ref_logp.sizes(),
              "logp and ref_logp must both be [B, K]");
  const int64_t k = logp.size(1);
  TORCH_CHECK(k >= 2, "a group needs K >= 2 responses");
  const torch::Tensor a = logp - ref_logp.detach();
  // Best and worst by win rate (GPO: by score); first index on ties, as
  // argmax/argmin do in the reference scripts.
  const torch::Tensor& rank_by = options.kind == LossKind::kGpo ? score : win;
  TORCH_CHECK(rank_by.defined() && rank_by.sizes() == logp.sizes(),
              "win rates (or scores for GPO) must be [B, K]");
  LossOutput out;
  out.chosen_index = rank_by.argmax(1);
  out.rejected_index = rank_by.argmin(1);
  auto pick = [](const torch::Tensor& t, const torch::Tensor& idx) {
    return t.gather(1, idx.unsqueeze(1)).squeeze(1);
  };
  switch (options.kind) {
    case LossKind::kSppo: {
      torch::Tensor target = options.eta * (win.to(a.dtype()) - 0.5);
      torch::Tensor lw = (pick(a, out.chosen_index) - pick(target, out.chosen_index)).pow(2);
      torch::Tensor ll = (pick(a, out.rejected_index) - pick(target, out.rejected_index)).pow(2);
      out.loss = (0.5 * (lw + ll)).mean();
      break;
    }
    case LossKind::kSppoAllK: {
      torch::Tensor target = options.eta * (win.to(a.dtype()) - 0.5);
      out.loss = ((a - target).pow(2).sum(1) / static_cast<double>(k)).mean();
      break;
    }
    case LossKind::kGpo: {
      torch::Tensor target =
          (options.eta * score.to(a.dtype())).clamp(-options.gpo_clamp, options.gpo_clamp);
      torch::Tensor lw = (pick(a, out.chosen_index) - pick(target, out.chosen_index)).pow(2);
      torch::Tensor ll = (pick(a, out.rejected_index) - pick(target, out.rejected_index)).pow(2);
      out.loss = (0.5 * (lw + ll)).mean();
      break;
    }
    case LossKind::kDpo: {
      torch::Tensor margin = pick(a, out.chosen_index) - pick(a, out.rejected_index);
      out.loss = -torch::nn::functional::logsigmoid(options.dpo_beta * margin).mean();
      break;
    }
  }
  return out;
}

torch::Tensor SequenceLogProbs(const torch::Tensor& logits, const torch::Tensor& labels,
                               const torch::Tensor& mask) {
  TORCH_CHECK(logits.dim() == 3 && labels.dim() == 2 && mask.sizes() == labels.sizes(),
              "logits [B,T,V], labels [B,T], mask [B,T]");
  // log_softmax in float32 for accuracy under bf16 autocast.
  torch::Tensor logp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  torch::Tensor token = logp.gather(2, labels.clamp_min(0).unsqueeze(2)).squeeze(2);
  return (token * mask.to(token.dtype())).sum(1);
}

}  // namespace spar
