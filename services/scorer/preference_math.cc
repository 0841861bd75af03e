#include "services/scorer/preference_math.h"

#include <cmath>

namespace spar {

double Sigmoid(double x) {
  // Stable on both tails.
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

std::string ConventionName(ProbabilityConvention c) {
  return c == ProbabilityConvention::kSigmoidSOverTau ? "sigmoid_s_over_tau" : "sigmoid_2s_over_tau";
}

Result<ProbabilityConvention> ParseConvention(const std::string& name) {
  if (name == "sigmoid_s_over_tau") return ProbabilityConvention::kSigmoidSOverTau;
  if (name == "sigmoid_2s_over_tau") return ProbabilityConvention::kSigmoid2SOverTau;
  return InvalidArgument("probability convention '" + name +
                         "' is not one of: sigmoid_s_over_tau, sigmoid_2s_over_tau");
}

Result<GroupPreferences> PreferencesFromScores(std::vector<double> scores, uint32_t k, double tau,
                                               ProbabilityConvention convention) {
  if (k < 2) return InvalidArgument("a group needs k >= 2 responses, got " + std::to_string(k));
  if (scores.size() != static_cast<size_t>(k) * k)
    return InvalidArgument("score matrix has " + std::to_string(scores.size()) +
                           " values, expected k*k = " + std::to_string(k * k));
  if (!(tau > 0) || !std::isfinite(tau)) return InvalidArgument("tau must be > 0");
  for (double v : scores)
    if (!std::isfinite(v)) return InvalidArgument("score matrix contains NaN or Inf");
  const double scale = (convention == ProbabilityConvention::kSigmoid2SOverTau ? 2.0 : 1.0) / tau;
  GroupPreferences out;
  out.k = k;
  out.probabilities.assign(scores.size(), 0.5);
  out.win_rates.assign(k, 0.0);
  out.mean_scores.assign(k, 0.0);
  for (uint32_t i = 0; i < k; ++i) {
    scores[i * k + i] = 0.0;
    for (uint32_t j = i + 1; j < k; ++j) {
      // Enforce exact antisymmetry from the upper triangle's average of the
      // two directions, so P_ij + P_ji = 1 holds to the last bit.
      double s = 0.5 * (scores[i * k + j] - scores[j * k + i]);
      scores[i * k + j] = s;
      scores[j * k + i] = -s;
      double p = Sigmoid(s * scale);
      out.probabilities[i * k + j] = p;
      out.probabilities[j * k + i] = 1.0 - p;
    }
  }
  for (uint32_t i = 0; i < k; ++i) {
    double win = 0, mean = 0;
    for (uint32_t j = 0; j < k; ++j) {
      win += out.probabilities[i * k + j];
      mean += scores[i * k + j];
    }
    out.win_rates[i] = win / k;
    out.mean_scores[i] = mean / k;
  }
  out.scores = std::move(scores);
  return out;
}

Result<GroupPreferences> PreferencesFromRewards(const std::vector<double>& rewards, double tau,
                                                ProbabilityConvention convention) {
  const uint32_t k = static_cast<uint32_t>(rewards.size());
  std::vector<double> scores(static_cast<size_t>(k) * k, 0.0);
  for (uint32_t i = 0; i < k; ++i)
    for (uint32_t j = 0; j < k; ++j) scores[i * k + j] = rewards[i] - rewards[j];
  return PreferencesFromScores(std::move(scores), k, tau, convention);
}

}  // namespace spar
