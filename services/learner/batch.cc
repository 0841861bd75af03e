#include "services/learner/batch.h"

#include <algorithm>
#include <cmath>

namespace spar {
namespace {

Status CheckIds(const std::string& where, const std::vector<int32_t>& ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      return InvalidArgument(where + "[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                             " is not a token id of this model (vocab " + std::to_string(vocab) + ")");
  return Status::Ok();
}

}  // namespace

Status ValidateExample(const LearnerExample& e, int64_t vocab_size, bool needs_scores) {
  const std::string at = "example '" + e.prompt_id + "'";
  const size_t k = e.responses.size();
  if (k < 2) return InvalidArgument(at + ": needs K >= 2 responses, got " + std::to_string(k));
  if (e.prompt_ids.empty()) return InvalidArgument(at + ": prompt_token_ids is empty");
  SPAR_RETURN_IF_ERROR(CheckIds(at + ": prompt_token_ids", e.prompt_ids, vocab_size));
  if (e.win_rates.size() != k)
    return InvalidArgument(at + ": " + std::to_string(e.win_rates.size()) + " win_rates for " +
                           std::to_string(k) + " responses");
  for (double w : e.win_rates)
    if (!std::isfinite(w) || w < 0 || w > 1)
      return InvalidArgument(at + ": win_rates must be finite and in [0, 1]");
  if (needs_scores && e.mean_scores.size() != k)
    return InvalidArgument(at + ": GPO needs " + std::to_string(k) + " mean_scores, got " +
                           std::to_string(e.mean_scores.size()));
  if (!e.mean_scores.empty() && e.mean_scores.size() != k)
    return InvalidArgument(at + ": mean_scores must be empty or have K values");
  for (double s : e.mean_scores)
    if (!std::isfinite(s)) return InvalidArgument(at + ": mean_scores must be finite");
  if (!e.ref_logprobs.empty() && e.ref_logprobs.size() != k)
    return InvalidArgument(at + ": ref_logprobs must be empty or given for all K responses");
  for (size_t i = 0; i < k; ++i) {
    const std::string r = at + ": responses[" + std::to_string(i) + "]";
    if (e.responses[i].empty()) return InvalidArgument(r + " is empty");
    SPAR_RETURN_IF_ERROR(CheckIds(r, e.responses[i], vocab_size));
    if (!e.ref_logprobs.empty()) {
      if (e.ref_logprobs[i].size() != e.responses[i].size())
        return InvalidArgument(r + ": " + std::to_string(e.ref_logprobs[i].size()) +
                               " ref_logprobs for " + std::to_string(e.responses[i].size()) + " tokens");
      for (float lp : e.ref_logprobs[i])
        if (!std::isfinite(lp) || lp > 0) return InvalidArgument(r + ": ref_logprobs must be finite and <= 0");
    }
  }
  return Status::Ok();
}

TokenBatch Collate(const std::vector<LearnerExample>& examples, const CollateOptions& o) {
  TORCH_CHECK(!examples.empty(), "Collate: no examples");
  TORCH_CHECK(o.max_prompt_length >= 1 && o.max_length > o.max_prompt_length,
              "Collate: need 1 <= max_prompt_length < max_length");
  const int64_t k = static_cast<int64_t>(examples[0].responses.size());
  TokenBatch b;
  b.groups = static_cast<int64_t>(examples.size());
  b.k = k;
  const int64_t n = b.groups * k;
  // Build each sequence, then pad to the longest.
  std::vector<std::vector<int64_t>> seqs;
  std::vector<int64_t> prompt_lens, response_lens;
  bool all_ref = true;
  std::vector<float> ref(static_cast<size_t>(n), 0.0f);
  for (int64_t g = 0; g < b.groups; ++g) {
    const auto& e = examples[static_cast<size_t>(g)];
    TORCH_CHECK(static_cast<int64_t>(e.responses.size()) == k, "Collate: examples with different K");
    const int64_t plen = std::min<int64_t>(static_cast<int64_t>(e.prompt_ids.size()), o.max_prompt_length);
    const auto prompt_begin = e.prompt_ids.end() - plen;  // left truncation
    if (e.ref_logprobs.empty()) all_ref = false;
    for (int64_t i = 0; i < k; ++i) {
      const auto& r = e.responses[static_cast<size_t>(i)];
      const int64_t rlen = std::min<int64_t>(static_cast<int64_t>(r.size()), o.max_length - plen);
      std::vector<int64_t> s(prompt_begin, e.prompt_ids.end());
      s.insert(s.end(), r.begin(), r.begin() + rlen);
      seqs.push_back(std::move(s));
      prompt_lens.push_back(plen);
      response_lens.push_back(rlen);
      if (!e.ref_logprobs.empty()) {
        float sum = 0;
        for (int64_t t = 0; t < rlen; ++t) sum += e.ref_logprobs[static_cast<size_t>(i)][static_cast<size_t>(t)];
        ref[static_cast<size_t>(g * k + i)] = sum;
      }
    }
  }
  int64_t t_max = 0;
  for (const auto& s : seqs) t_max = std::max<int64_t>(t_max, static_cast<int64_t>(s.size()));
  b.input_ids = torch::full({n, t_max}, o.pad_id, torch::kInt64);
  b.attention_mask = torch::zeros({n, t_max}, torch::kInt64);
  b.labels = torch::full({n, t_max}, o.pad_id, torch::kInt64);
  b.loss_mask = torch::zeros({n, t_max}, torch::kFloat32);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto am = b.attention_mask.accessor<int64_t, 2>();
  auto lab = b.labels.accessor<int64_t, 2>();
  auto lm = b.loss_mask.accessor<float, 2>();
  for (int64_t row = 0; row < n; ++row) {
    const auto& s = seqs[static_cast<size_t>(row)];
    const int64_t len = static_cast<int64_t>(s.size());
    for (int64_t t = 0; t < len; ++t) {
      ids[row][t] = s[static_cast<size_t>(t)];
      am[row][t] = 1;
      if (t + 1 < len) lab[row][t] = s[static_cast<size_t>(t + 1)];
    }
    // Position t predicts token t+1; response tokens start at prompt_len.
    const int64_t first = prompt_lens[static_cast<size_t>(row)] - 1;
    for (int64_t t = first; t < first + response_lens[static_cast<size_t>(row)]; ++t) lm[row][t] = 1.0f;
    b.tokens += len;
    b.response_tokens += response_lens[static_cast<size_t>(row)];
  }
  std::vector<double> win, score;
  for (const auto& e : examples) {
    win.insert(win.end(), e.win_rates.begin(), e.win_rates.end());
    if (e.mean_scores.empty()) score.insert(score.end(), static_cast<size_t>(k), 0.0);
    else score.insert(score.end(), e.mean_scores.begin(), e.mean_scores.end());
  }
  b.win_rates = torch::tensor(win, torch::kFloat64).reshape({b.groups, k});
  b.mean_scores = torch::tensor(score, torch::kFloat64).reshape({b.groups, k});
  if (all_ref) b.ref_logps = torch::tensor(ref, torch::kFloat32).reshape({b.groups, k});
  return b;
}

double LinearWarmupLr(double base_lr, int64_t step, int64_t total_steps, double warmup_ratio) {
  if (total_steps <= 0) return base_lr;
  const int64_t warmup = static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
  if (step < warmup) return base_lr * static_cast<double>(step) / static_cast<double>(warmup);
  const double left = static_cast<double>(std::max<int64_t>(0, total_steps - step));
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  return base_lr * left / span;
}

}  // namespace spar
