#include "storage/export.h"

#include <nlohmann/json.hpp>

namespace spar {

Status ExportJsonl(const RunStore& store, const ExportOptions& options, std::ostream& out,
                   ExportStats* stats) {
  ExportStats local;
  Status inner;
  Status scan = store.ForEachGroup(options.iteration, [&](const RolloutGroup& g) {
    auto score = store.GetScore(g.iteration, g.prompt_index);
    if (!score.ok()) {
      inner = score.status();
      return false;
    }
    auto prompt = store.GetPrompt(g.iteration, g.prompt_index);
    if (!prompt.ok()) {
      inner = prompt.status();
      return false;
    }
    const bool scored = score->has_value();
    if (!scored) {
      ++local.groups_unscored;
      if (!options.include_unscored) return true;
    }
    nlohmann::json line;
    line["prompt_id"] = g.prompt_id;
    line["iteration"] = g.iteration;
    nlohmann::json conversation = nlohmann::json::array();
    if (prompt->has_value() && !(*prompt)->messages.empty()) {
      for (const auto& m : (*prompt)->messages)
        conversation.push_back({{"role", m.role}, {"content", m.content}});
      line["messages"] = conversation;
    } else {
      std::string text = prompt->has_value() ? (*prompt)->text : std::string();
      line["prompt"] = text;
      conversation.push_back({{"role", "user"}, {"content", text}});
    }
    nlohmann::json responses = nlohmann::json::array();
    uint64_t version = 0;
    for (const auto& r : g.rollouts) {
      responses.push_back(r.text);
      version = std::max(version, r.policy_version);
    }
    line["responses"] = responses;
    line["policy_version"] = version;
    if (scored) {
      const ScoreRecord& s = **score;
      if (s.k != g.rollouts.size()) {
        inner = DataLoss("group " + g.prompt_id + " has " + std::to_string(g.rollouts.size()) +
                         " rollouts but its score record has k = " + std::to_string(s.k));
        return false;
      }
      size_t best = 0, worst = 0;
      for (size_t i = 1; i < s.k; ++i) {
        if (s.win_rates[i] > s.win_rates[best]) best = i;
        if (s.win_rates[i] < s.win_rates[worst]) worst = i;
      }
      auto with_answer = [&](size_t i) {
        nlohmann::json c = conversation;
        c.push_back({{"role", "assistant"}, {"content", g.rollouts[i].text}});
        return c;
      };
      line["win_rates"] = s.win_rates;
      line["chosen"] = with_answer(best);
      line["rejected"] = with_answer(worst);
      line["chosen_probs"] = s.probabilities[best * s.k + worst];
      line["chosen_probs_win"] = s.win_rates[best];
      line["chosen_probs_lose"] = s.win_rates[worst];
      line["scorer"] = s.model;
    }
    out << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    ++local.groups_written;
    return true;
  });
  SPAR_RETURN_IF_ERROR(scan);
  SPAR_RETURN_IF_ERROR(inner);
  if (!out) return Unavailable("export: writing the output failed");
  if (stats) *stats = local;
  return Status::Ok();
}

}  // namespace spar
