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
