// spar/orchestrator/run_config.h — the typed configuration of a run.
//
// One YAML file describes a whole run; each service reads its own section
// (later issues add `generators`, `scorer`, `learner`). Unknown keys and bad
// values are errors that name the file, the dotted key and what is allowed.
// Relative paths are resolved against the folder the command runs in.
//
//   log_level: info
//   run:        {dir: runs/demo, iterations: 3, seed: 1, algorithm: sppo}
//   prompts:    {path: examples/prompts.jsonl, limit: 0}
//   policy:     {model: runs/demo/models/policy,
//                init: {arch: llama, preset: tiny, seed: 1,
//                       tokenizer: .cache/tokenizers/llama3}}
//   generation: {samples_per_prompt: 5, temperature: 0.7, top_p: 0.9,
//                top_k: 0, max_new_tokens: 64, batch: 16}
//   storage:    {sync_writes: false}
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace spar {

struct ModelInitConfig {
  bool enabled = false;         // build the model folder if it is absent
  std::string arch = "llama";   // llama | gemma
  std::string preset = "tiny";
  std::string tokenizer;        // folder with tokenizer.json
  int64_t seed = 1;
  // Preference models only (scorer.init): the head init-model adds.
  std::string head;             // gpm | bt
  int64_t k = 2;                // GPM: value_head has 2k rows
  bool prompt_head = false;
};

struct PolicyConfig {
  std::string model;            // HF folder
  ModelInitConfig init;
};

struct GenerationConfig {
  uint32_t samples_per_prompt = 5;  // K
  double temperature = 0.7;
  double top_p = 0.9;
  int32_t top_k = 0;
  int32_t max_new_tokens = 64;
  int32_t batch = 16;               // sequences decoded together
};

struct PromptsConfig {
  std::string path;                 // JSONL: {"prompt": ...} or {"messages": [...]}
  int64_t limit = 0;                // 0 = all
};

struct StorageConfig {
  bool sync_writes = false;
};

struct RunSection {
  std::string dir = "runs/default";
  uint32_t iterations = 3;
  int64_t seed = 1;
  std::string algorithm = "sppo";   // sppo | sppo_all_k | gpo | dpo (the learner's loss)
  std::string launch = "local";     // local: start every service as a child; remote: connect
  int64_t held_out = 8;             // prompts kept out of training to judge pi_t against pi_0
  bool pipelined = true;            // false: all generation, then scoring, then training
  int32_t inflight_per_generator = 4;
};

// Where the orchestrator reaches the services (remote mode), and how many
// generators it starts (local mode). Each service validates its own
// section in full when it starts.
struct ServiceAddresses {
  std::vector<std::string> generators;  // one per `generators:` entry
  std::string scorer;
  std::string learner;
};

// The preference model spar run builds when it starts the scorer itself and
// the folder is absent:
//   scorer: {kind: gpm, model: DIR,
//            init: {arch: llama, preset: tiny, tokenizer: DIR, seed: 7, head: gpm, k: 2}}
// (the scorer service ignores `init`).
struct ScorerModelConfig {
  std::string model;
  ModelInitConfig init;
};

struct RunConfig {
  std::string source;               // the file it was read from
  std::string log_level = "info";
  RunSection run;
  PromptsConfig prompts;
  PolicyConfig policy;
  GenerationConfig generation;
  StorageConfig storage;
  ServiceAddresses services;
  ScorerModelConfig scorer_model;

  // Reads and validates a run config. Errors: NotFound (no file),
  // InvalidArgument naming the file, key and allowed values.
  static Result<RunConfig> Load(const std::string& path);
  static Result<RunConfig> Parse(const std::string& yaml_text, const std::string& name);
};

}  // namespace spar
