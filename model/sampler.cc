// Batched sampling on the logits' device: one sort (only when a row
// filters), one cumulative sum and one searchsorted for the whole batch;
// only B uniforms go to the device and B tokens + log-probs come back.
#include <algorithm>

#include "model/engine.h"

namespace spar {

namespace {

constexpr int64_t kCandidates = 1024;

// Rows with a top-k or top-p filter. Transformers' order: temperature, then
// top-k, then top-p over the renormalised top-k distribution. The head of
// each row (its kCandidates most likely tokens, or top_k if larger) comes
// from one topk, which is all a trained model's nucleus needs; a row whose
// nucleus is wider than the head (a flat distribution, e.g. a freshly
// initialised model) finds its probability threshold by bisection instead
// of sorting the whole vocabulary (~3x faster at V = 128k).
torch::Tensor SampleFiltered(const torch::Tensor& probs, const std::vector<float>& top_ps,
                             const std::vector<int64_t>& top_ks, const torch::Tensor& u) {
  const int64_t b = probs.size(0), v = probs.size(1);
  const auto device = probs.device();
  int64_t width = std::min(v, kCandidates);
  for (int64_t k : top_ks) width = std::max(width, std::min(k, v));
  auto head = probs.topk(width, /*dim=*/-1, /*largest=*/true, /*sorted=*/true);
  auto head_probs = std::get<0>(head);
  auto head_ids = std::get<1>(head);
  auto top_p = torch::tensor(top_ps).to(device).unsqueeze(1);
  auto top_k = torch::tensor(top_ks).to(device).unsqueeze(1);
  auto rank = torch::arange(width, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(0);
  auto in_k = rank < top_k;
  // With top-k the nucleus is measured on the renormalised top-k mass.
  auto k_mass = (head_probs * in_k).sum(-1, /*keepdim=*/true);
  std::vector<uint8_t> limited(b);
  for (int64_t i = 0; i < b; ++i) limited[i] = top_ks[i] < v;
  auto has_k = torch::tensor(std::vector<int64_t>(limited.begin(), limited.end())).to(device).to(torch::kBool)
                   .unsqueeze(1);
  auto q = torch::where(has_k, head_probs / k_mass, head_probs);
  auto cumulative = q.cumsum(-1);
  auto keep = ((cumulative - q) < top_p).logical_and(in_k);
  auto cdf = (head_probs * keep).cumsum(-1);
  auto pos = torch::searchsorted(cdf, u * cdf.narrow(1, width - 1, 1)).clamp_max(width - 1);
  auto chosen = head_ids.gather(1, pos).squeeze(1);

  // Rows without top-k whose nucleus does not fit in the head.
  auto covered = (cumulative.narrow(1, width - 1, 1) >= top_p).logical_or(has_k).squeeze(1);
  auto uncovered = covered.logical_not().nonzero().squeeze(1);
  if (uncovered.numel() == 0) return chosen;
  auto rows = probs.index_select(0, uncovered);
  auto row_p = top_p.index_select(0, uncovered);
  // The largest threshold t with mass(p >= t) >= top_p: the nucleus up to ties.
  auto lo = torch::zeros({rows.size(0), 1}, rows.options());
  auto hi = std::get<0>(rows.max(-1, /*keepdim=*/true));
  for (int i = 0; i < 20; ++i) {
    auto mid = (lo + hi) * 0.5;
    auto mass = torch::where(rows >= mid, rows, torch::zeros({}, rows.options())).sum(-1, true);
    auto ok = mass >= row_p;
    lo = torch::where(ok, mid, lo);
    hi = torch::where(ok, hi, mid);
  }
  auto nucleus_cdf = torch::where(rows >= lo, rows, torch::zeros({}, rows.options())).cumsum(-1);
  auto row_u = u.index_select(0, uncovered);
  auto picked = torch::searchsorted(nucleus_cdf, row_u * nucleus_cdf.narrow(1, v - 1, 1)).clamp_max(v - 1);
  chosen.index_put_({uncovered}, picked.squeeze(1));
  return chosen;
}

}  // namespace

void SampleTokens(const torch::Tensor& logits, const std::vector<SamplerRow>& rows,
                  std::vector<int32_t>* tokens, std::vector<float>* logprobs) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(rows.size()),
              "SampleTokens: logits [B, V] with one row each");
  const int64_t b = logits.size(0), v = logits.size(1);
  auto x = logits.to(torch::kFloat32);
  auto log_probs = torch::log_softmax(x, -1);  // the temperature-1 distribution

  std::vector<float> temps(b), top_ps(b), uniforms(b);
  std::vector<int64_t> top_ks(b);
  bool any_sampled = false, any_filtered = false, any_greedy = false;
  for (int64_t i = 0; i < b; ++i) {
    const auto& r = rows[i];
    const bool greedy = r.temperature <= 0;
    temps[i] = greedy ? 1.0f : r.temperature;
    top_ps[i] = r.top_p > 0 && r.top_p < 1 ? r.top_p : 1.0f;
    top_ks[i] = r.top_k > 0 && r.top_k < v ? r.top_k : v;
    uniforms[i] = static_cast<float>(std::clamp(r.uniform, 1e-12, 1.0 - 1e-7));
    any_greedy = any_greedy || greedy;
    any_sampled = any_sampled || !greedy;
    any_filtered = any_filtered || (!greedy && (top_ps[i] < 1 || top_ks[i] < v));
  }
  auto opts = x.options();
  auto chosen = torch::Tensor();
  if (any_sampled) {
    auto temp = torch::tensor(temps).to(opts.device()).unsqueeze(1);
    auto u = torch::tensor(uniforms).to(opts.device()).unsqueeze(1);
    auto probs = torch::softmax(x / temp, -1);
    if (any_filtered) {
      chosen = SampleFiltered(probs, top_ps, top_ks, u);
    } else {
      auto cdf = probs.cumsum(-1);
      auto target = u * cdf.narrow(1, v - 1, 1);
      chosen = torch::searchsorted(cdf, target).clamp_max(v - 1).squeeze(1);
    }
  }
  if (any_greedy) {
    auto greedy_choice = x.argmax(-1);
    if (!chosen.defined()) {
      chosen = greedy_choice;
    } else {
      std::vector<uint8_t> is_greedy(b);
      for (int64_t i = 0; i < b; ++i) is_greedy[i] = rows[i].temperature <= 0;
      auto mask = torch::tensor(std::vector<int64_t>(is_greedy.begin(), is_greedy.end()))
                      .to(opts.device())
                      .to(torch::kBool);
      chosen = torch::where(mask, greedy_choice, chosen);
    }
  }
  auto chosen_logprobs = log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1);
  auto host_tokens = chosen.to(torch::kCPU, torch::kLong).contiguous();
  auto host_logprobs = chosen_logprobs.to(torch::kCPU).contiguous();
  tokens->resize(b);
  logprobs->resize(b);
  const int64_t* t = host_tokens.data_ptr<int64_t>();
  const float* l = host_logprobs.data_ptr<float>();
  for (int64_t i = 0; i < b; ++i) {
    (*tokens)[i] = static_cast<int32_t>(t[i]);
    (*logprobs)[i] = l[i];
  }
}

}  // namespace spar
