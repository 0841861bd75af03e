// spar/services/scorer/scorer_config.h — the `scorer:` section of a spar
// config file, and the factory that turns it into a preference model.
//
//   scorer:
//     listen: 127.0.0.1:50061     # gRPC address to serve on (port 0 = any)
//     address: 127.0.0.1:50061    # where clients reach it (defaults to listen)
//     kind: gpm                   # gpm | bt | rule
//     model: path/to/hf-folder    # gpm, bt
//     tau: 0.1
//     convention: sigmoid_s_over_tau   # or sigmoid_2s_over_tau (GPM repo SPPO scripts)
//     max_length: 1024            # tokens of prompt + response
//     max_batch_responses: 64
//     device: cpu                 # cpu | cuda | cuda:N
//     rule: {target_words: 20, length_scale: 10, reward_words: [], penalize_words: [], word_weight: 1}
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "services/scorer/preference_model.h"
#include "services/scorer/rule_scorer.h"
#include "services/scorer/scorer_core.h"

namespace spar {

struct ScorerConfig {
  std::string listen = "127.0.0.1:50061";
  std::string address;              // defaults to listen
  std::string kind = "gpm";
  std::string model;
  double tau = 0.1;                 // GPM's default; rule and bt default to 1
  ProbabilityConvention convention = ProbabilityConvention::kSigmoidSOverTau;
  uint32_t max_length = 1024;
  std::string device = "cpu";
  ScorerLimits limits;
  RuleScorerOptions rule;
};

// Reads the section (Finish() included). Errors name the key.
Status ReadScorerConfig(ConfigNode node, ScorerConfig* out);

// Loads `scorer:` (and `log_level`) from a whole spar config file.
Result<ScorerConfig> LoadScorerConfig(const std::string& path, std::string* log_level);

// Builds the configured preference model. InvalidArgument for a bad rule;
// errors from loading a model folder name the folder.
Result<std::unique_ptr<PreferenceModel>> CreatePreferenceModel(const ScorerConfig& config);

}  // namespace spar
