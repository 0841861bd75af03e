// spar/services/scorer/preference_model.h — what any preference model
// behind the PreferenceScorer service implements.
//
// A model takes text (a prompt and K responses per group), so it can use
// its own tokenizer and chat template, and returns each group's preference
// table. Implementations: GPM (gpm_scorer.h), Bradley-Terry reward model,
// rule-based scorer (rule_scorer.h). A model is used by one thread at a time
// (the ScorerCore's worker); it may batch the groups it is handed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/chat.h"
#include "common/status.h"
#include "services/scorer/preference_math.h"

namespace spar {

struct ScoreGroupInput {
  std::string group_id;
  std::string prompt_text;              // raw prompt (no template), or
  std::vector<ChatMessage> messages;    // a conversation (rendered by the model)
  std::vector<std::string> responses;   // K >= 2
};

struct ScorerDescription {
  std::string kind;           // "gpm" | "bt" | "rule" | ...
  std::string model_name;
  uint32_t k = 0;             // GPM: value head has 2k outputs
  double tau = 1.0;
  bool has_prompt_head = false;
  uint32_t max_length = 0;    // tokens of prompt + response (0 = no limit)
  ProbabilityConvention convention = ProbabilityConvention::kSigmoidSOverTau;
};

class PreferenceModel {
 public:
  virtual ~PreferenceModel() = default;
  virtual ScorerDescription Describe() const = 0;
  // Scores every group; the result has one entry per input group, in order.
  // Inputs are already validated by the caller (K >= 2, non-empty texts).
  virtual Result<std::vector<GroupPreferences>> Score(const std::vector<ScoreGroupInput>& groups) = 0;
};

}  // namespace spar
