#include "services/scorer/rule_scorer.h"

#include <cctype>
#include <cmath>
#include <sstream>

namespace spar {
namespace {

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Lower-cased words with leading/trailing ASCII punctuation removed.
std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  std::string w;
  while (in >> w) {
    size_t b = 0, e = w.size();
    while (b < e && std::ispunct(static_cast<unsigned char>(w[b]))) ++b;
    while (e > b && std::ispunct(static_cast<unsigned char>(w[e - 1]))) --e;
    words.push_back(Lower(w.substr(b, e - b)));
  }
  return words;
}

}  // namespace

Result<std::unique_ptr<RuleScorer>> RuleScorer::Create(const RuleScorerOptions& options) {
  if (options.target_words < 0) return InvalidArgument("rule.target_words must be >= 0");
  if (!(options.length_scale > 0)) return InvalidArgument("rule.length_scale must be > 0");
  if (!(options.tau > 0)) return InvalidArgument("tau must be > 0");
  if (options.target_words == 0 && options.reward_words.empty() && options.penalize_words.empty())
    return InvalidArgument(
        "the rule prefers nothing: set rule.target_words, rule.reward_words or "
        "rule.penalize_words");
  return std::unique_ptr<RuleScorer>(new RuleScorer(options));
}

RuleScorer::RuleScorer(RuleScorerOptions options) : options_(std::move(options)) {
  for (const auto& w : options_.reward_words) reward_words_.push_back(Lower(w));
  for (const auto& w : options_.penalize_words) penalize_words_.push_back(Lower(w));
}

ScorerDescription RuleScorer::Describe() const {
  ScorerDescription d;
  d.kind = "rule";
  std::ostringstream name;
  name << "rule(";
  if (options_.target_words > 0) name << "target_words=" << options_.target_words;
  if (!reward_words_.empty()) name << (options_.target_words > 0 ? "," : "") << "reward_words=" << reward_words_.size();
  if (!penalize_words_.empty()) name << ",penalize_words=" << penalize_words_.size();
  name << ")";
  d.model_name = name.str();
  d.tau = options_.tau;
  d.convention = options_.convention;
  return d;
}

double RuleScorer::Reward(const std::string& response) const {
  std::vector<std::string> words = Words(response);
  double r = 0;
  if (options_.target_words > 0) {
    r -= std::abs(static_cast<double>(words.size()) - static_cast<double>(options_.target_words)) /
         options_.length_scale;
  }
  for (const auto& w : words) {
    for (const auto& good : reward_words_)
      if (w == good) r += options_.word_weight;
    for (const auto& bad : penalize_words_)
      if (w == bad) r -= options_.word_weight;
  }
  return r;
}

Result<std::vector<GroupPreferences>> RuleScorer::Score(const std::vector<ScoreGroupInput>& groups) {
  std::vector<GroupPreferences> out;
  out.reserve(groups.size());
  for (const auto& g : groups) {
    std::vector<double> rewards;
    for (const auto& r : g.responses) rewards.push_back(Reward(r));
    SPAR_ASSIGN_OR_RETURN(auto prefs, PreferencesFromRewards(rewards, options_.tau, options_.convention));
    out.push_back(std::move(prefs));
  }
  return out;
}

}  // namespace spar
