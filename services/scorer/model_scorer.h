// spar/services/scorer/model_scorer.h — preference models on a LibTorch
// decoder backbone: the General Preference Model (value_head 2k x H and an
// optional prompt_head k x H) and a Bradley-Terry reward model (value_head
// 1 x H), loaded from the released GPM checkpoint layout (backbone under
// model.*, heads beside it, config.json the backbone's).
//
// Per response: the conversation [prompt..., assistant: response] is
// rendered with the scorer's own chat template and tokenized; the prompt
// part is the rendering with the generation prompt. Truncation (documented
// in the README): the prompt keeps its last max_length/2 tokens (its first
// token, BOS, is kept), then the response is cut to fit max_length; the
// last token is forced to EOS, as the GPM code does. One forward pass per
// response, batched across all groups (sorted by length to pad little);
// the embedding is the final hidden state of the last token, the gate
// input that of the last prompt token.
//
// Thread safety: one thread at a time (the ScorerCore worker).
#pragma once

#include <memory>
#include <string>

#include "model/causal_lm.h"
#include "services/scorer/gpm_heads.h"
#include "services/scorer/preference_model.h"
#include "tokenizer/tokenizer.h"

namespace spar {

struct ModelScorerOptions {
  std::string kind = "gpm";   // gpm | bt
  std::string model_dir;
  std::string device = "cpu";
  double tau = 0.1;
  ProbabilityConvention convention = ProbabilityConvention::kSigmoidSOverTau;
  uint32_t max_length = 1024;
  size_t max_batch_responses = 64;  // per forward pass
};

class ModelScorer final : public PreferenceModel {
 public:
  // Loads the folder. NotFound naming the folder/tensor (no value_head,
  // missing backbone weights), InvalidArgument for heads of the wrong shape
  // or a kind that does not match them (a 1-row head is BT, 2k rows GPM).
  static Result<std::unique_ptr<ModelScorer>> Load(const ModelScorerOptions& options);

  ScorerDescription Describe() const override;
  Result<std::vector<GroupPreferences>> Score(const std::vector<ScoreGroupInput>& groups) override;

  // Token ids of one (prompt, response) as scored, and the index of the
  // last prompt token (exposed for tests).
  struct Encoded {
    std::vector<int32_t> ids;
    int64_t prompt_last = 0;
  };
  Result<Encoded> Encode(const ScoreGroupInput& group, const std::string& response) const;

 private:
  ModelScorer(ModelScorerOptions options, CausalLM backbone, PreferenceHeads heads,
              std::unique_ptr<Tokenizer> tokenizer);

  ModelScorerOptions options_;
  CausalLM backbone_;
  PreferenceHeads heads_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace spar
