#include "services/learner/losses.h"

#include <cmath>

#include <gtest/gtest.h>

namespace spar {
namespace {

torch::Tensor T(std::vector<double> v, int64_t b, int64_t k) {
  return torch::tensor(v, torch::kFloat64).reshape({b, k});
}

TEST(LossesTest, SppoPairMatchesHandComputation) {
  // One group, K = 3. Win rates: best is 2, worst is 0.
  auto logp = T({-10, -12, -9}, 1, 3).requires_grad_(true);
  auto ref = T({-10.5, -12, -8}, 1, 3);
  auto win = T({0.3, 0.5, 0.7}, 1, 3);
  LossOptions o;
  o.eta = 10;
  auto out = PreferenceLoss(logp, ref, win, torch::Tensor(), o);
  // a = [0.5, 0, -1]; targets = 10*(win-0.5) = [-2, 0, 2]
  // L = 1/2 [(-1 - 2)^2 + (0.5 + 2)^2] = 1/2 (9 + 6.25) = 7.625
  EXPECT_NEAR(out.loss.item<double>(), 7.625, 1e-12);
  EXPECT_EQ(out.chosen_index.item<int64_t>(), 2);
  EXPECT_EQ(out.rejected_index.item<int64_t>(), 0);
  out.loss.backward();
  auto g = logp.grad();
  EXPECT_NEAR(g[0][2].item<double>(), -3.0, 1e-12);  // d/da_w = a_w - t_w
  EXPECT_NEAR(g[0][0].item<double>(), 2.5, 1e-12);
  EXPECT_NEAR(g[0][1].item<double>(), 0.0, 1e-12);
}

TEST(LossesTest, AllKAndGpoAndDpo) {
  auto logp = T({-1, -2, -3, -4, -5, -6}, 2, 3);
  auto ref = T({-1, -1, -1, -4, -4, -4}, 2, 3);
  auto win = T({0.5, 0.6, 0.4, 0.9, 0.1, 0.5}, 2, 3);
  LossOptions o;
  o.eta = 2;
  o.kind = LossKind::kSppoAllK;
  // a = [0,-1,-2 | 0,-1,-2]; t = [0,0.2,-0.2 | 0.8,-0.8,0]
  // group1: (0)^2+(-1.2)^2+(-1.8)^2 = 0+1.44+3.24 = 4.68 /3 = 1.56
  // group2: (-0.8)^2+(-0.2)^2+(-2)^2 = 0.64+0.04+4 = 4.68 /3 = 1.56
  EXPECT_NEAR(PreferenceLoss(logp, ref, win, {}, o).loss.item<double>(), 1.56, 1e-12);

  o.kind = LossKind::kGpo;
  o.eta = 100;
  o.gpo_clamp = 5;
  auto score = T({0.01, -0.02, 0.1, 0, 0, 0}, 2, 3);
  // group1: w = 2 (0.1 -> target clamp(10) = 5), l = 1 (-0.02 -> -2)
  //   1/2 [(-2 - 5)^2 + (-1 + 2)^2] = 1/2 (49 + 1) = 25
  // group2: all ties -> w = l = 0, target 0: 1/2 [0 + 0] = 0
  EXPECT_NEAR(PreferenceLoss(logp, ref, win, score, o).loss.item<double>(), 12.5, 1e-12);

  o.kind = LossKind::kDpo;
  o.dpo_beta = 0.5;
  // group1: w = 1 (0.6), l = 2 (0.4): margin = -1 - -2 = 1 -> -log sig(0.5)
  // group2: w = 0, l = 1: margin = 0 - -1 = 1 -> same
  double expected = -std::log(1 / (1 + std::exp(-0.5)));
  EXPECT_NEAR(PreferenceLoss(logp, ref, win, {}, o).loss.item<double>(), expected, 1e-12);
}

TEST(LossesTest, GradientMatchesFiniteDifferences) {
  torch::manual_seed(0);
  auto base = torch::randn({4, 5}, torch::kFloat64);
  auto ref = torch::randn({4, 5}, torch::kFloat64);
  auto win = torch::rand({4, 5}, torch::kFloat64);
  auto score = torch::randn({4, 5}, torch::kFloat64) * 0.01;
  for (auto kind : {LossKind::kSppo, LossKind::kSppoAllK, LossKind::kGpo, LossKind::kDpo}) {
    LossOptions o;
    o.kind = kind;
    o.eta = 3;
    auto x = base.clone().requires_grad_(true);
    PreferenceLoss(x, ref, win, score, o).loss.backward();
    auto analytic = x.grad();
    const double h = 1e-6;
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j) {
        auto plus = base.clone();
        plus[i][j] += h;
        auto minus = base.clone();
        minus[i][j] -= h;
        double numeric = (PreferenceLoss(plus, ref, win, score, o).loss.item<double>() -
                          PreferenceLoss(minus, ref, win, score, o).loss.item<double>()) / (2 * h);
        EXPECT_NEAR(analytic[i][j].item<double>(), numeric, 1e-6) << LossKindName(kind);
      }
  }
}

TEST(LossesTest, TargetsPlusMinusHalfEtaMoveLogRatiosTheRightWay) {
  // Pair with win rates 1 and 0: targets +eta/2 and -eta/2. A gradient step
  // from a = 0 must raise a_w and lower a_l.
  auto logp = T({-5, -5}, 1, 2).requires_grad_(true);
  auto ref = T({-5, -5}, 1, 2);
  auto win = T({1.0, 0.0}, 1, 2);
  LossOptions o;
  o.eta = 4;
  PreferenceLoss(logp, ref, win, {}, o).loss.backward();
  EXPECT_LT(logp.grad()[0][0].item<double>(), 0);  // descent raises a_w
  EXPECT_GT(logp.grad()[0][1].item<double>(), 0);  // and lowers a_l
}

TEST(LossesTest, SequenceLogProbsSumOverMaskedTokens) {
  auto logits = torch::zeros({1, 3, 4}, torch::kFloat32);  // uniform: log(1/4) each
  auto labels = torch::tensor({1, 2, 3}, torch::kInt64).reshape({1, 3});
  auto mask = torch::tensor({0, 1, 1}, torch::kInt64).reshape({1, 3});
  EXPECT_NEAR(SequenceLogProbs(logits, labels, mask).item<double>(), 2 * std::log(0.25), 1e-6);
  EXPECT_FALSE(ParseLossKind("ppo").ok());
}

}  // namespace
}  // namespace spar
