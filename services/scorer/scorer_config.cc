#include "services/scorer/scorer_config.h"

#include "services/scorer/model_scorer.h"


namespace spar {
Status ReadScorerConfig(ConfigNode node, ScorerConfig* out) {
  node.Get("listen", &out->listen);
  node.Get("address", &out->address);
  node.GetEnum("kind", &out->kind, {"gpm", "bt", "rule"});
  if (out->kind != "gpm") out->tau = 1.0;
  node.Get("model", &out->model);
  if (out->kind != "rule") node.Require("model");
  node.Get("tau", &out->tau, 0.0, 1e6, /*min_exclusive=*/true);
  std::string convention = ConventionName(out->convention);
  node.GetEnum("convention", &convention, {"sigmoid_s_over_tau", "sigmoid_2s_over_tau"});
  out->convention = *ParseConvention(convention);
  node.Get("max_length", &out->max_length, 8, 1 << 20);
  node.Get("device", &out->device);
  uint64_t max_batch = out->limits.max_batch_responses;
  node.Get("max_batch_responses", &max_batch, 1, 1 << 16);
  out->limits.max_batch_responses = max_batch;
  node.Get("max_k", &out->limits.max_k, 2, 1024);
  node.Ignore("init");  // how spar run builds `model` when absent (orchestrator/run_config.h)

  ConfigNode rule = node.Child("rule");
  rule.Get("target_words", &out->rule.target_words, 0, 1 << 20);
  rule.Get("length_scale", &out->rule.length_scale, 0.0, 1e9, true);
  rule.Get("reward_words", &out->rule.reward_words);
  rule.Get("penalize_words", &out->rule.penalize_words);
  rule.Get("word_weight", &out->rule.word_weight, 0.0, 1e9);
  SPAR_RETURN_IF_ERROR(rule.Finish());
  out->rule.tau = out->tau;
  out->rule.convention = out->convention;
  if (out->address.empty()) out->address = out->listen;
  if (out->kind == "rule" && out->rule.target_words == 0 && out->rule.reward_words.empty() &&
      out->rule.penalize_words.empty())
    node.Error("rule", "kind is rule but the rule prefers nothing: set target_words, "
                       "reward_words or penalize_words");
  return node.Finish();
}

Result<ScorerConfig> LoadScorerConfig(const std::string& path, std::string* log_level) {
  SPAR_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadFile(path));
  for (const auto& section : KnownConfigSections()) root.Ignore(section);
  if (log_level)
    root.GetEnum("log_level", log_level,
                 {"trace", "debug", "info", "warn", "error", "critical", "off"});
  root.Require("scorer");
  ScorerConfig config;
  SPAR_RETURN_IF_ERROR(ReadScorerConfig(root.Child("scorer"), &config));
  SPAR_RETURN_IF_ERROR(root.Finish());
  return config;
}

Result<std::unique_ptr<PreferenceModel>> CreatePreferenceModel(const ScorerConfig& config) {
  if (config.kind == "rule") {
    SPAR_ASSIGN_OR_RETURN(auto rule, RuleScorer::Create(config.rule));
    return std::unique_ptr<PreferenceModel>(std::move(rule));
  }
  ModelScorerOptions options;
  options.kind = config.kind;
  options.model_dir = config.model;
  options.device = config.device;
  options.tau = config.tau;
  options.convention = config.convention;
  options.max_length = config.max_length;
  options.max_batch_responses = config.limits.max_batch_responses;
  SPAR_ASSIGN_OR_RETURN(auto model, ModelScorer::Load(options));
  return std::unique_ptr<PreferenceModel>(std::move(model));
}

}  // namespace spar
