// The learner's policy over the real decoders: the masked log-prob path
// equals the full-forward path (values and gradients), frozen copies, and
// HF checkpoints with tokenizer files.
#include "services/learner/causal_lm_policy.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/test_support.h"

namespace spar {
namespace {

CausalLMPolicy MakePolicy(const std::string& arch, uint64_t seed) {
  auto config = *ModelConfig::Preset(arch, "tiny");
  CausalLM model = *CreateCausalLM(config, seed);
  return CausalLMPolicy(model, "", arch + "-tiny");
}

class CausalLMPolicyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalLMPolicyTest, MaskedLogProbsEqualTheFullForwardWithTheSameGradients) {
  auto policy = MakePolicy(GetParam(), 3);
  auto ids = torch::tensor({{2, 10, 11, 12, 13, 0}, {2, 20, 21, 0, 0, 0}}, torch::kLong);
  auto mask = torch::tensor({{1, 1, 1, 1, 1, 0}, {1, 1, 1, 0, 0, 0}}, torch::kLong);
  auto labels = torch::tensor({{10, 11, 12, 13, 0, 0}, {20, 21, 0, 0, 0, 0}}, torch::kLong);
  auto loss_mask = torch::tensor({{0, 0, 1, 1, 0, 0}, {0, 1, 0, 0, 0, 0}}, torch::kLong);

  auto masked = policy.MaskedSequenceLogProbs(ids, mask, labels, loss_mask);
  masked.sum().backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : policy.Parameters()) {
    grads.push_back(p.grad().clone());
    p.mutable_grad().zero_();
  }
  auto full = SequenceLogProbs(policy.Forward(ids, mask), labels, loss_mask);
  full.sum().backward();
  EXPECT_TRUE(torch::allclose(masked, full, 1e-5, 1e-5)) << masked << full;
  auto params = policy.Parameters();
  for (size_t i = 0; i < params.size(); ++i)
    EXPECT_TRUE(torch::allclose(grads[i], params[i].grad(), 1e-4, 1e-6)) << "parameter " << i;
}

TEST_P(CausalLMPolicyTest, FrozenCopyIsEqualAndHasNoGradients) {
  auto policy = MakePolicy(GetParam(), 4);
  auto frozen = policy.FrozenCopy();
  auto ids = torch::tensor({{2, 5, 6, 7}}, torch::kLong);
  auto mask = torch::ones_like(ids);
  EXPECT_TRUE(torch::allclose(policy.Forward(ids, mask), frozen->Forward(ids, mask)));
  for (auto& p : frozen->Parameters()) EXPECT_FALSE(p.requires_grad());
}

INSTANTIATE_TEST_SUITE_P(Architectures, CausalLMPolicyTest, ::testing::Values("llama", "gemma"));

// The chunked head against the plain [M, V] form, values and gradients, for
// chunk sizes that split M unevenly, one row, and all rows at once.
TEST(ChunkedTokenLogProbs, EqualThePlainLogSoftmaxWithTheSameGradients) {
  torch::manual_seed(11);
  const int64_t m = 7, v = 50, h = 6;
  auto hidden0 = torch::randn({m, h}, torch::kFloat64);
  auto weight0 = torch::randn({v, h}, torch::kFloat64);
  auto labels = torch::randint(0, v, {m}, torch::kLong);
  auto upstream = torch::randn({m}, torch::kFloat64);  // a non-uniform d loss / d logp

  auto hp = hidden0.clone().requires_grad_(true), wp = weight0.clone().requires_grad_(true);
  auto plain = torch::log_softmax(torch::mm(hp, wp.t()), 1).gather(1, labels.unsqueeze(1)).squeeze(1);
  (plain * upstream).sum().backward();

  for (int64_t chunk : {1, 3, 7, 100}) {  // 7 and 100: one chunk, its logits kept for backward
    auto hc = hidden0.clone().requires_grad_(true), wc = weight0.clone().requires_grad_(true);
    auto chunked = ChunkedTokenLogProbs(hc, wc, labels, chunk);
    EXPECT_EQ(chunked.scalar_type(), torch::kFloat64);
    (chunked * upstream).sum().backward();
    EXPECT_TRUE(torch::allclose(chunked, plain, 1e-12, 1e-12)) << "chunk " << chunk;
    EXPECT_TRUE(torch::allclose(hc.grad(), hp.grad(), 1e-12, 1e-12)) << "chunk " << chunk;
    EXPECT_TRUE(torch::allclose(wc.grad(), wp.grad(), 1e-12, 1e-12)) << "chunk " << chunk;
  }
}

TEST(ChunkedTokenLogProbs, Float32InputsGiveFloat32AndNoGradWorks) {
  torch::manual_seed(12);
  auto hidden = torch::randn({5, 4}), weight = torch::randn({9, 4});
  auto labels = torch::tensor({0, 8, 3, 3, 1}, torch::kLong);
  torch::NoGradGuard no_grad;  // the frozen reference's path
  auto out = ChunkedTokenLogProbs(hidden, weight, labels, 2);
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  auto plain = torch::log_softmax(torch::mm(hidden, weight.t()), 1).gather(1, labels.unsqueeze(1)).squeeze(1);
  EXPECT_TRUE(torch::allclose(out, plain, 1e-5, 1e-6));
  EXPECT_TRUE((out <= 0).all().item<bool>());
}

TEST(ChunkedTokenLogProbs, ChunkRowsKeepOneChunkNear256MegabytesOfLogits) {
  EXPECT_EQ(TokenLogProbChunkRows(128256), (int64_t{256} << 20) / (128256 * 4));
  EXPECT_EQ(TokenLogProbChunkRows(int64_t{1} << 40), 1);
  EXPECT_GE(TokenLogProbChunkRows(0), 1);
}

TEST(CausalLMPolicySave, WritesAnHfFolderWithTheTokenizerThatLoadsBack) {
  auto tokenizer = ::spar::testing::TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  ::spar::testing::TempDir dir;
  auto config = *ModelConfig::Preset("llama", "tiny");
  CausalLM initial = *CreateCausalLM(config, 1);
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/init", config, initial->NamedWeights(), tokenizer.string()).ok());
  auto policy = CausalLMPolicy::Load(dir.str() + "/init", "cpu", "float32");
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  {
    torch::NoGradGuard no_grad;
    (*policy)->Parameters()[0].add_(1.0);
  }
  ASSERT_TRUE((*policy)->Save(dir.str() + "/saved").ok());
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "saved/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "saved/config.json"));
  auto reloaded = CausalLMPolicy::Load(dir.str() + "/saved", "cpu", "float32");
  ASSERT_TRUE(reloaded.ok());
  EXPECT_TRUE(torch::equal((*reloaded)->Parameters()[0], (*policy)->Parameters()[0]));
  auto other = CausalLMPolicy::Load(dir.str() + "/init", "cpu", "float32");
  ASSERT_TRUE((*other)->Load(dir.str() + "/saved").ok());
  EXPECT_TRUE(torch::equal((*other)->Parameters()[0], (*policy)->Parameters()[0]));
  EXPECT_FALSE(CausalLMPolicy::Load(dir.str() + "/init", "tpu", "float32").ok());
}

}  // namespace
}  // namespace spar
