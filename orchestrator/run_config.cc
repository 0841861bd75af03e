#include "orchestrator/run_config.h"

namespace spar {
namespace {

Status ReadModelInit(ConfigNode node, ModelInitConfig* out) {
  out->enabled = node.Has("arch") || node.Has("preset") || node.Has("tokenizer") ||
                 node.Has("seed");
  node.GetEnum("arch", &out->arch, {"llama", "gemma"});
  node.Get("preset", &out->preset);
  node.Get("tokenizer", &out->tokenizer);
  node.Get("seed", &out->seed, 0);
  if (out->enabled && out->tokenizer.empty()) node.Require("tokenizer");
  return node.Finish();
}

Status ReadPolicy(ConfigNode node, PolicyConfig* out) {
  node.Require("model");
  node.Get("model", &out->model);
  SPAR_RETURN_IF_ERROR(ReadModelInit(node.Child("init"), &out->init));
  return node.Finish();
}

Status ReadGeneration(ConfigNode node, GenerationConfig* out) {
  node.Get("samples_per_prompt", &out->samples_per_prompt, 2, 64);
  node.Get("temperature", &out->temperature, 0.0, 100.0);
  node.Get("top_p", &out->top_p, 0.0, 1.0, /*min_exclusive=*/true);
  node.Get("top_k", &out->top_k, 0, 1 << 20);
  node.Get("max_new_tokens", &out->max_new_tokens, 1, 1 << 20);
  node.Get("batch", &out->batch, 1, 4096);
  return node.Finish();
}

Status ReadPrompts(ConfigNode node, PromptsConfig* out) {
  node.Require("path");
  node.Get("path", &out->path);
  node.Get("limit", &out->limit, 0);
  return node.Finish();
}

Status ReadStorage(ConfigNode node, StorageConfig* out) {
  node.Get("sync_writes", &out->sync_writes);
  return node.Finish();
}

Status ReadRun(ConfigNode node, RunSection* out) {
  node.Get("dir", &out->dir);
  if (out->dir.empty()) node.Error("dir", "must not be empty");
  node.Get("iterations", &out->iterations, 1, 1000);
  node.Get("seed", &out->seed, 0);
  node.GetEnum("algorithm", &out->algorithm, {"sppo", "sppo_all_k", "gpo", "dpo"});
  return node.Finish();
}

Result<RunConfig> FromRoot(ConfigNode root) {
  RunConfig config;
  config.source = root.file();
  root.GetEnum("log_level", &config.log_level,
               {"trace", "debug", "info", "warn", "error", "critical", "off"});
  SPAR_RETURN_IF_ERROR(ReadRun(root.Child("run"), &config.run));
  root.Require("prompts");
  SPAR_RETURN_IF_ERROR(ReadPrompts(root.Child("prompts"), &config.prompts));
  root.Require("policy");
  SPAR_RETURN_IF_ERROR(ReadPolicy(root.Child("policy"), &config.policy));
  SPAR_RETURN_IF_ERROR(ReadGeneration(root.Child("generation"), &config.generation));
  SPAR_RETURN_IF_ERROR(ReadStorage(root.Child("storage"), &config.storage));
  // The services' own sections are read by the services (and by the local
  // launcher when it starts them).
  for (const auto& section : KnownConfigSections()) root.Ignore(section);
  SPAR_RETURN_IF_ERROR(root.Finish());
  return config;
}

}  // namespace

Result<RunConfig> RunConfig::Load(const std::string& path) {
  SPAR_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadFile(path));
  return FromRoot(std::move(root));
}

Result<RunConfig> RunConfig::Parse(const std::string& yaml_text, const std::string& name) {
  SPAR_ASSIGN_OR_RETURN(ConfigNode root, ConfigNode::LoadString(yaml_text, name));
  return FromRoot(std::move(root));
}

}  // namespace spar
