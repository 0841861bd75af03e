#include "services/scorer/gpm_heads.h"

#include <gtest/gtest.h>

namespace spar {
namespace {

TEST(GpmHeadsTest, ScoreMatchesTheDefinitionAndIsAntisymmetric) {
  torch::manual_seed(3);
  const int64_t H = 16, K = 5;
  for (int64_t k : {1, 3, 4}) {
    for (bool with_prompt_head : {false, true}) {
      PreferenceHeads heads;
      heads.value_head = torch::randn({2 * k, H});
      if (with_prompt_head) heads.prompt_head = torch::randn({k, H});
      ASSERT_TRUE(ValidateHeads(heads, H).ok());
      EXPECT_EQ(heads.k(), k);
      auto v = GpmEmbeddings(heads, torch::randn({K, H}));
      EXPECT_TRUE(torch::allclose(v.norm(2, -1), torch::ones({K}), 1e-5, 1e-5));
      auto gates = GpmGates(heads, torch::randn({1, H}));
      EXPECT_NEAR(gates.sum().item<double>(), with_prompt_head ? 1.0 : static_cast<double>(k), 1e-5);
      EXPECT_TRUE((gates >= 0).all().item<bool>());
      auto s = GpmScoreMatrix(v, gates[0]);
      EXPECT_TRUE(torch::allclose(s, -s.t(), 1e-6, 1e-6));
      // Loop form of the definition.
      auto va = v.accessor<float, 2>();
      auto g = gates[0];
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < K; ++j) {
          double expected = 0;
          for (int64_t l = 0; l < k; ++l)
            expected += g[l].item<double>() *
                        (va[i][2 * l] * va[j][2 * l + 1] - va[i][2 * l + 1] * va[j][2 * l]);
          EXPECT_NEAR(s[i][j].item<double>(), expected, 1e-5);
        }
    }
  }
}

TEST(GpmHeadsTest, HeadShapesAreValidated) {
  PreferenceHeads heads;
  EXPECT_FALSE(ValidateHeads(heads, 8).ok());
  heads.value_head = torch::randn({3, 8});
  auto s = ValidateHeads(heads, 8);
  EXPECT_NE(s.message().find("[3, 8]"), std::string::npos) << s.ToString();
  heads.value_head = torch::randn({4, 9});
  EXPECT_FALSE(ValidateHeads(heads, 8).ok());
  heads.value_head = torch::randn({4, 8});
  heads.prompt_head = torch::randn({3, 8});
  EXPECT_NE(ValidateHeads(heads, 8).message().find("prompt_head"), std::string::npos);
  heads.value_head = torch::randn({1, 8});
  heads.prompt_head = torch::Tensor();
  EXPECT_TRUE(ValidateHeads(heads, 8).ok());
  EXPECT_TRUE(heads.is_bt());
  auto r = BtRewards(heads, torch::ones({2, 8}));
  EXPECT_EQ(r.sizes(), torch::IntArrayRef({2}));
}

}  // namespace
}  // namespace spar
