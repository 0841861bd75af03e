#include "services/scorer/gpm_heads.h"

namespace spar {
namespace {

std::string Shape(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

Status ValidateHeads(const PreferenceHeads& heads, int64_t hidden_size) {
  if (!heads.value_head.defined()) return InvalidArgument("value_head.weight is missing");
  const auto& v = heads.value_head;
  if (v.dim() != 2 || v.size(1) != hidden_size || (v.size(0) != 1 && (v.size(0) < 2 || v.size(0) % 2)))
    return InvalidArgument("value_head.weight has shape " + Shape(v) + "; expected [2k, " +
                           std::to_string(hidden_size) + "] (GPM) or [1, " +
                           std::to_string(hidden_size) + "] (Bradley-Terry)");
  if (heads.prompt_head.defined()) {
    const auto& p = heads.prompt_head;
    if (v.size(0) == 1) return InvalidArgument("prompt_head.weight given with a Bradley-Terry value head");
    if (p.dim() != 2 || p.size(0) != v.size(0) / 2 || p.size(1) != hidden_size)
      return InvalidArgument("prompt_head.weight has shape " + Shape(p) + "; expected [" +
                             std::to_string(v.size(0) / 2) + ", " + std::to_string(hidden_size) + "]");
  }
  return Status::Ok();
}

torch::Tensor GpmEmbeddings(const PreferenceHeads& heads, const torch::Tensor& last_hidden) {
  auto h = last_hidden.to(torch::kFloat32);
  auto v = torch::matmul(h, heads.value_head.to(h.device(), torch::kFloat32).t());
  return torch::nn::functional::normalize(v, torch::nn::functional::NormalizeFuncOptions().p(2).dim(-1).eps(1e-12));
}

torch::Tensor GpmGates(const PreferenceHeads& heads, const torch::Tensor& prompt_hidden) {
  const int64_t k = heads.k();
  if (!heads.prompt_head.defined())
    return torch::ones({prompt_hidden.size(0), k}, prompt_hidden.options().dtype(torch::kFloat32));
  auto h = prompt_hidden.to(torch::kFloat32);
  auto logits = torch::matmul(h, heads.prompt_head.to(h.device(), torch::kFloat32).t());
  return torch::softmax(logits, -1);
}

torch::Tensor GpmScoreMatrix(const torch::Tensor& embeddings, const torch::Tensor& gates) {
  using torch::indexing::Slice;
  auto even = embeddings.index({Slice(), Slice(0, torch::indexing::None, 2)});  // v[2l]   [K, k]
  auto odd = embeddings.index({Slice(), Slice(1, torch::indexing::None, 2)});   // v[2l+1] [K, k]
  // s_ij = sum_l g_l (even_i odd_j - odd_i even_j)
  auto s = torch::matmul(even * gates, odd.t()) - torch::matmul(odd * gates, even.t());
  return s;
}

torch::Tensor BtRewards(const PreferenceHeads& heads, const torch::Tensor& last_hidden) {
  auto h = last_hidden.to(torch::kFloat32);
  return torch::matmul(h, heads.value_head.to(h.device(), torch::kFloat32).t()).squeeze(-1);
}

}  // namespace spar
