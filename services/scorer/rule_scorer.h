// spar/services/scorer/rule_scorer.h — a preference model made of a
// checkable rule, for tests, demos and sanity runs: proof that the
// preference model behind the service can be swapped without touching the
// rest, and a known signal the end-to-end tests use to show that training
// really moves the policy.
//
// Each response gets a reward
//   r(y) = - |words(y) - target_words| / length_scale        (if target_words > 0)
//          + word_weight * (occurrences of reward_words in y)
//          - word_weight * (occurrences of penalize_words in y)
// (words are whitespace-separated; word matching is case-insensitive and on
// whole words), and the pairwise score is s_ij = r_i - r_j, P_ij per the
// configured convention and tau.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "services/scorer/preference_model.h"

namespace spar {

struct RuleScorerOptions {
  int64_t target_words = 0;          // 0 = no length preference
  double length_scale = 10.0;
  std::vector<std::string> reward_words;
  std::vector<std::string> penalize_words;
  double word_weight = 1.0;
  double tau = 1.0;
  ProbabilityConvention convention = ProbabilityConvention::kSigmoidSOverTau;
};

class RuleScorer : public PreferenceModel {
 public:
  // InvalidArgument if the rule prefers nothing or a number is out of range.
  static Result<std::unique_ptr<RuleScorer>> Create(const RuleScorerOptions& options);

  ScorerDescription Describe() const override;
  Result<std::vector<GroupPreferences>> Score(const std::vector<ScoreGroupInput>& groups) override;

  // The reward of one response (public so tests and reports can show it).
  double Reward(const std::string& response) const;

 private:
  explicit RuleScorer(RuleScorerOptions options);
  RuleScorerOptions options_;
  std::vector<std::string> reward_words_;    // lower-cased
  std::vector<std::string> penalize_words_;  // lower-cased
};

}  // namespace spar
