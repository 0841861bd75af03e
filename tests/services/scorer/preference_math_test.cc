#include "services/scorer/preference_math.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "services/scorer/rule_scorer.h"

namespace spar {
namespace {

std::vector<double> RandomAntisymmetric(uint32_t k, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0, 0.3);
  std::vector<double> s(k * k, 0);
  for (uint32_t i = 0; i < k; ++i)
    for (uint32_t j = i + 1; j < k; ++j) {
      s[i * k + j] = dist(rng);
      s[j * k + i] = -s[i * k + j];
    }
  return s;
}

TEST(PreferenceMathTest, TableInvariants) {
  for (uint32_t k : {2u, 5u, 16u}) {
    for (auto conv : {ProbabilityConvention::kSigmoidSOverTau, ProbabilityConvention::kSigmoid2SOverTau}) {
      auto p = PreferencesFromScores(RandomAntisymmetric(k, k), k, 0.1, conv);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      for (uint32_t i = 0; i < k; ++i) {
        EXPECT_DOUBLE_EQ(p->probabilities[i * k + i], 0.5);
        EXPECT_DOUBLE_EQ(p->scores[i * k + i], 0.0);
        double win = 0;
        for (uint32_t j = 0; j < k; ++j) {
          EXPECT_DOUBLE_EQ(p->scores[i * k + j], -p->scores[j * k + i]);
          EXPECT_NEAR(p->probabilities[i * k + j] + p->probabilities[j * k + i], 1.0, 1e-15);
          win += p->probabilities[i * k + j];
        }
        EXPECT_NEAR(p->win_rates[i], win / k, 1e-15);
      }
      double total = 0;
      for (double w : p->win_rates) total += w;
      EXPECT_NEAR(total, k / 2.0, 1e-12);  // sum_i sum_j P_ij = K^2 / 2
    }
  }
}

TEST(PreferenceMathTest, HandComputedValuesAndConventions) {
  // s_01 = 0.1, tau = 0.1: sigma(1) vs sigma(2).
  std::vector<double> s = {0, 0.1, -0.1, 0};
  auto a = PreferencesFromScores(s, 2, 0.1, ProbabilityConvention::kSigmoidSOverTau);
  auto b = PreferencesFromScores(s, 2, 0.1, ProbabilityConvention::kSigmoid2SOverTau);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR(a->probabilities[1], 1 / (1 + std::exp(-1.0)), 1e-15);
  EXPECT_NEAR(b->probabilities[1], 1 / (1 + std::exp(-2.0)), 1e-15);
  EXPECT_NEAR(a->win_rates[0], (0.5 + 1 / (1 + std::exp(-1.0))) / 2, 1e-15);
  EXPECT_NEAR(a->mean_scores[0], 0.05, 1e-15);
  EXPECT_NEAR(a->mean_scores[1], -0.05, 1e-15);
  // Rewards: BT-style s_ij = r_i - r_j.
  auto r = PreferencesFromRewards({1.0, 0.0, -1.0}, 1.0, ProbabilityConvention::kSigmoidSOverTau);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->probabilities[0 * 3 + 2], 1 / (1 + std::exp(-2.0)), 1e-15);
  EXPECT_GT(r->win_rates[0], r->win_rates[1]);
  EXPECT_GT(r->win_rates[1], r->win_rates[2]);
  EXPECT_NEAR(r->win_rates[1], 0.5, 1e-15);
}

TEST(PreferenceMathTest, BadInputsAreErrors) {
  EXPECT_FALSE(PreferencesFromScores({0}, 1, 0.1, ProbabilityConvention::kSigmoidSOverTau).ok());
  EXPECT_FALSE(PreferencesFromScores({0, 1, 2}, 2, 0.1, ProbabilityConvention::kSigmoidSOverTau).ok());
  EXPECT_FALSE(PreferencesFromScores({0, 1, -1, 0}, 2, 0, ProbabilityConvention::kSigmoidSOverTau).ok());
  auto nan = PreferencesFromScores({0, std::nan(""), 0, 0}, 2, 1, ProbabilityConvention::kSigmoidSOverTau);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("NaN"), std::string::npos);
  EXPECT_FALSE(ParseConvention("sigmoid").ok());
  // Huge scores saturate without overflow.
  auto big = PreferencesFromScores({0, 1e6, -1e6, 0}, 2, 0.1, ProbabilityConvention::kSigmoidSOverTau);
  ASSERT_TRUE(big.ok());
  EXPECT_DOUBLE_EQ(big->probabilities[1], 1.0);
  EXPECT_DOUBLE_EQ(big->probabilities[2], 0.0);
}

TEST(RuleScorerTest, LengthAndWordsPreferences) {
  RuleScorerOptions o;
  o.target_words = 4;
  o.length_scale = 2;
  o.reward_words = {"Please"};
  o.penalize_words = {"never"};
  auto rule = RuleScorer::Create(o);
  ASSERT_TRUE(rule.ok());
  EXPECT_DOUBLE_EQ((*rule)->Reward("one two three four"), 0.0);
  EXPECT_DOUBLE_EQ((*rule)->Reward("one two"), -1.0);
  EXPECT_DOUBLE_EQ((*rule)->Reward("please, one two three"), 1.0);
  EXPECT_DOUBLE_EQ((*rule)->Reward("never please never three"), -1.0);
  ScoreGroupInput g;
  g.prompt_text = "x";
  g.responses = {"a b c d", "a", "a b c d e f g h"};
  auto scored = (*rule)->Score({g});
  ASSERT_TRUE(scored.ok());
  EXPECT_GT((*scored)[0].win_rates[0], (*scored)[0].win_rates[1]);
  EXPECT_GT((*scored)[0].win_rates[1], (*scored)[0].win_rates[2]);
  EXPECT_EQ((*rule)->Describe().kind, "rule");

  RuleScorerOptions nothing;
  auto bad = RuleScorer::Create(nothing);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("prefers nothing"), std::string::npos);
}

}  // namespace
}  // namespace spar
