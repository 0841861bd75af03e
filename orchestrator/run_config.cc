#include "orchestrator/run_config.h"

namespace spar {
namespace {

Status ReadModelInit(ConfigNode node, ModelInitConfig* out, bool preference_head = false) {
  out->enabled = node.Has("arch") || node.Has("preset") || node.Has("tokenizer") ||
                 node.Has("seed");
  node.GetEnum("arch", &out->arch, {"llama", "gemma"});
  node.Get("preset", &out->preset);
  node.Get("tokenizer", &out->tokenizer);
  node.Get("seed", &out->seed, 0);
  if (out->enabled && out->tokenizer.empty()) node.Require("tokenizer");
  if (preference_head) {
    out->head = "gpm";
    node.GetEnum("head", &out->head, {"gpm", "bt"});
    node.Get("k", &out->k, 1, 1 << 16);
    node.Get("prompt_head", &out->prompt_head);
  }
  return node.Finish();
}

// scorer.model and scorer.init (the rest of the section is the scorer's).
Status ReadScorerModel(ConfigNode root, ScorerModelConfig* out) {
  if (!root.Has("scorer")) return Status::Ok();
  ConfigNode scorer = root.Child("scorer");
  if (scorer.Has("model")) scorer.Get("model", &out->model);
  if (!scorer.Has("init")) return Status::Ok();
  if (out->model.empty()) scorer.Error("init", "needs scorer.model (the folder to build)");
  return ReadModelInit(scorer.Child("init"), &out->init, /*preference_head=*/true);
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
  node.GetEnum("launch", &out->launch, {"local", "remote"});
  node.Get("held_out", &out->held_out, 0, 1 << 20);
  node.Get("pipelined", &out->pipelined);
  node.Get("inflight_per_generator", &out->inflight_per_generator, 1, 4096);
  return node.Finish();
}

// Reads only the addresses; the services check their sections in full.
Status ReadAddresses(const YAML::Node& root, const std::string& file, const RunSection& run,
                     ServiceAddresses* out) {
  auto address_of = [&](const YAML::Node& n, const std::string& where, std::string* dest) -> Status {
    if (!n.IsMap()) return InvalidArgument(file + ": " + where + ": must be a mapping");
    // Remote: `address` (or `listen`, when they are the same). Local: only an
    // explicit `address` names a running service to use instead of a child.
    for (const char* key : {"address", "listen"}) {
      if (run.launch == "local" && std::string(key) == "listen") break;
      if (n[key] && n[key].IsScalar()) {
        *dest = n[key].Scalar();
        return Status::Ok();
      }
    }
    if (run.launch == "remote")
      return InvalidArgument(file + ": " + where + ".address: missing (run.launch is remote)");
    return Status::Ok();
  };
  const YAML::Node gens = root["generators"];
  if (!gens && run.launch == "local") {
    out->generators.push_back("");  // one local generator
  } else if (!gens || !gens.IsSequence() || gens.size() == 0) {
    return InvalidArgument(file + ": generators: missing; give a list with one entry per generator");
  }
  for (size_t i = 0; gens && i < gens.size(); ++i) {
    std::string a;
    SPAR_RETURN_IF_ERROR(address_of(gens[i], "generators[" + std::to_string(i) + "]", &a));
    out->generators.push_back(a);
  }
  if (!root["scorer"]) return InvalidArgument(file + ": scorer: missing");
  SPAR_RETURN_IF_ERROR(address_of(root["scorer"], "scorer", &out->scorer));
  if (!root["learner"]) return InvalidArgument(file + ": learner: missing");
  SPAR_RETURN_IF_ERROR(address_of(root["learner"], "learner", &out->learner));
  return Status::Ok();
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
  if (root.Has("generators") || root.Has("scorer") || root.Has("learner"))
    SPAR_RETURN_IF_ERROR(ReadAddresses(root.raw(), root.file(), config.run, &config.services));
  SPAR_RETURN_IF_ERROR(ReadScorerModel(root, &config.scorer_model));
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
