// Batched sampling on the logits' device: one sort (only when a row
// filters), one cumulative sum and one searchsorted for the whole batch;
// only B uniforms go to the device and B tokens + log-probs come back.
#include <algorithm>

#include "model/engine.h"

namespace spar {

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
      auto sorted = probs.sort(/*dim=*/-1, /*descending=*/true);
      auto sorted_probs = std::get<0>(sorted);
      auto order = std::get<1>(sorted);
      auto cumulative = sorted_probs.cumsum(-1);
      auto top_p = torch::tensor(top_ps).to(opts.device()).unsqueeze(1);
      auto top_k = torch::tensor(top_ks).to(opts.device()).unsqueeze(1);
      auto rank = torch::arange(v, torch::TensorOptions().dtype(torch::kLong).device(opts.device()))
                      .unsqueeze(0);
      // Keep the smallest prefix whose mass reaches top_p (the first token
      // always), and at most top_k tokens.
      auto keep = ((cumulative - sorted_probs) < top_p).logical_and(rank < top_k);
      auto cdf = (sorted_probs * keep).cumsum(-1);
      auto target = u * cdf.narrow(1, v - 1, 1);
      auto pos = torch::searchsorted(cdf, target).clamp_max(v - 1);
      chosen = order.gather(1, pos).squeeze(1);
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
