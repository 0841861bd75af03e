// spar/services/scorer/preference_math.h — from raw pairwise scores to the
// preference table the SPPO/GPO losses need.
//
// For a group of K responses with an antisymmetric score matrix s (s_ij =
// -s_ji, s_ii = 0):
//   P_ij       = sigma(s_ij / tau)      (kSigmoidSOverTau, the GPM paper)
//              = sigma(2 s_ij / tau)    (kSigmoid2SOverTau, the GPM repo's
//                                        SPPO scripts: sigma(t_ij - t_ji))
//   win_i      = (1/K) sum_j P_ij       (self included: P_ii = 0.5, as the
//                                        SPPO code does)
//   mean_s_i   = (1/K) sum_j s_ij       (GPO's target before eta and clamp)
// so P_ij + P_ji = 1 and P_ii = 0.5 exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace spar {

enum class ProbabilityConvention { kSigmoidSOverTau, kSigmoid2SOverTau };

// "sigmoid_s_over_tau" | "sigmoid_2s_over_tau".
std::string ConventionName(ProbabilityConvention c);
Result<ProbabilityConvention> ParseConvention(const std::string& name);

struct GroupPreferences {
  uint32_t k = 0;
  std::vector<double> probabilities;  // K*K row-major
  std::vector<double> scores;         // K*K row-major, antisymmetric
  std::vector<double> win_rates;      // K
  std::vector<double> mean_scores;    // K
};

// Builds the table from an antisymmetric K*K score matrix. InvalidArgument
// if the sizes disagree, tau <= 0, or a value is not finite.
Result<GroupPreferences> PreferencesFromScores(std::vector<double> scores, uint32_t k, double tau,
                                               ProbabilityConvention convention);

// Scalar rewards r_i (Bradley-Terry, rules): s_ij = r_i - r_j.
Result<GroupPreferences> PreferencesFromRewards(const std::vector<double>& rewards, double tau,
                                                ProbabilityConvention convention);

double Sigmoid(double x);

}  // namespace spar
