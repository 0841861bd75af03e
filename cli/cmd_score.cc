// `spar score`: offline scoring of prompt groups, through the same
// ScorerCore the PreferenceScorer service runs.
//   spar score --model DIR --input groups.jsonl --out out.jsonl [--tau --convention --kind]
//   spar score --config FILE --input ... --out ...     (the config's scorer: section)
// Input lines: {"prompt": text | "messages": [...], "responses": [K texts], "id"?}
// Output lines: {"id", "k", "probabilities": [[...]], "scores": [[...]],
//                "win_rates", "mean_scores", "model"}
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "services/scorer/scorer_config.h"

namespace spar::cli {
namespace {

struct ScoreArgs {
  std::string model;
  std::string config;
  std::string input;
  std::string out;
  std::string kind;
  double tau = 0;
  std::string convention;
  int64_t batch = 64;
};

Result<std::vector<ScoreGroupInput>> ReadGroups(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read input '" + path + "'");
  std::vector<ScoreGroupInput> groups;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& what) {
      return InvalidArgument(path + ":" + std::to_string(n) + ": " + what);
    };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      return bad(std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) return bad("each line must be a JSON object");
    ScoreGroupInput g;
    g.group_id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                                  : std::to_string(n);
    if (j.contains("prompt") && j["prompt"].is_string()) {
      g.prompt_text = j["prompt"].get<std::string>();
    } else if (j.contains("messages") && j["messages"].is_array()) {
      for (const auto& m : j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
            !m["role"].is_string() || !m["content"].is_string())
          return bad("messages must be objects with string role and content");
        g.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
    } else {
      return bad("needs \"prompt\" (text) or \"messages\" (a list)");
    }
    if (!j.contains("responses") || !j["responses"].is_array())
      return bad("needs \"responses\": a list of texts");
    for (const auto& r : j["responses"]) {
      if (!r.is_string()) return bad("responses must be strings");
      g.responses.push_back(r.get<std::string>());
    }
    groups.push_back(std::move(g));
  }
  return groups;
}

nlohmann::json Square(const std::vector<double>& flat, uint32_t k) {
  nlohmann::json rows = nlohmann::json::array();
  for (uint32_t i = 0; i < k; ++i)
    rows.push_back(std::vector<double>(flat.begin() + i * k, flat.begin() + (i + 1) * k));
  return rows;
}

int RunScore(const ScoreArgs& args) {
  ScorerConfig config;
  if (!args.config.empty()) {
    auto loaded = LoadScorerConfig(args.config, nullptr);
    if (!loaded.ok()) return Fail("score", loaded.status());
    config = *loaded;
  } else {
    if (args.model.empty()) return Fail("score", InvalidArgument("give --model DIR or --config FILE"));
    config.kind = args.kind.empty() ? "gpm" : args.kind;
    config.model = args.model;
    config.tau = config.kind == "gpm" ? 0.1 : 1.0;
  }
  if (args.tau > 0) config.tau = args.tau;
  if (!args.convention.empty()) {
    auto c = ParseConvention(args.convention);
    if (!c.ok()) return Fail("score", c.status());
    config.convention = *c;
  }
  config.limits.max_batch_responses = static_cast<size_t>(args.batch);
  auto groups = ReadGroups(args.input);
  if (!groups.ok()) return Fail("score", groups.status());
  if (groups->empty()) return Fail("score", InvalidArgument(args.input + ": no groups"));
  config.limits.max_groups_per_request = std::max<size_t>(groups->size(), 1);
  config.limits.max_queued_groups = std::max(config.limits.max_queued_groups, groups->size());
  auto model = CreatePreferenceModel(config);
  if (!model.ok()) return Fail("score", model.status());
  auto core = ScorerCore::Create(std::move(*model), config.limits);
  if (!core.ok()) return Fail("score", core.status());
  std::vector<std::string> ids;
  for (const auto& g : *groups) ids.push_back(g.group_id);
  auto start = std::chrono::steady_clock::now();
  auto scored = (*core)->Score(std::move(*groups), start + std::chrono::hours(24 * 365));
  if (!scored.ok()) return Fail("score", scored.status());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ofstream out(args.out, std::ios::trunc);
  if (!out) return Fail("score", Unavailable("cannot write '" + args.out + "'"));
  const auto& d = (*core)->description();
  for (size_t i = 0; i < scored->size(); ++i) {
    const auto& g = (*scored)[i];
    nlohmann::json line = {{"id", ids[i]},
                           {"k", g.k},
                           {"probabilities", Square(g.probabilities, g.k)},
                           {"scores", Square(g.scores, g.k)},
                           {"win_rates", g.win_rates},
                           {"mean_scores", g.mean_scores},
                           {"model", d.model_name}};
    out << line.dump() << "\n";
  }
  std::cerr << "spar score: " << scored->size() << " groups scored by " << d.kind << " ("
            << d.model_name << ") in " << seconds << " s\n";
  return out ? 0 : Fail("score", Unavailable("writing '" + args.out + "' failed"));
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ScoreArgs>();
  sub.add_option("--model", args->model, "preference model folder (GPM or BT head)");
  sub.add_option("--config", args->config, "spar config: use its scorer: section instead");
  sub.add_option("--kind", args->kind, "gpm | bt (with --model; default gpm)")
      ->check(CLI::IsMember({"gpm", "bt"}));
  sub.add_option("--input", args->input, "groups JSONL")->required();
  sub.add_option("--out", args->out, "output JSONL")->required();
  sub.add_option("--tau", args->tau, "temperature tau (default: 0.1 for gpm, 1 otherwise)");
  sub.add_option("--convention", args->convention, "sigmoid_s_over_tau | sigmoid_2s_over_tau");
  sub.add_option("--batch", args->batch, "responses per forward batch")->check(CLI::Range(1, 4096));
  sub.callback([args]() { Exit(RunScore(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("score", "Score prompt groups offline (same code path as the scorer service)",
                      55, Setup);

}  // namespace spar::cli
