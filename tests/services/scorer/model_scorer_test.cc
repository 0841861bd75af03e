// GPM and Bradley-Terry scorers on tiny real backbones (Gemma and Llama,
// seeded weights, the real tokenizers), in the released checkpoint layout.
#include "services/scorer/model_scorer.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "tests/support/test_support.h"

namespace spar {
namespace {

using ::spar::testing::TempDir;
using ::spar::testing::TokenizerDir;

// Writes backbone + heads like `spar init-model --head`.
void WriteScorerFolder(const std::string& dir, const std::string& arch, const std::string& tokenizer,
                       int64_t value_rows, int64_t prompt_rows) {
  auto config = *ModelConfig::Preset(arch, "tiny");
  CausalLMOptions options;
  options.with_lm_head = false;
  auto model = *CreateCausalLM(config, 21, options);
  auto weights = model->NamedWeights();
  auto gen = at::detail::createCPUGenerator(5);
  auto value = torch::empty({value_rows, config.hidden_size});
  value.normal_(0, 0.5, gen);
  weights.emplace_back("value_head.weight", value);
  if (prompt_rows > 0) {
    auto prompt = torch::empty({prompt_rows, config.hidden_size});
    prompt.normal_(0, 0.5, gen);
    weights.emplace_back("prompt_head.weight", prompt);
  }
  ASSERT_TRUE(WriteHfFolder(dir, config, weights, tokenizer).ok());
}

ScoreGroupInput Group(const std::string& id, const std::string& prompt, std::vector<std::string> responses) {
  ScoreGroupInput g;
  g.group_id = id;
  g.prompt_text = prompt;
  g.responses = std::move(responses);
  return g;
}

class ModelScorerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tokenizer_ = TokenizerDir(GetParam() == "gemma" ? "gemma" : "llama3").string();
    if (tokenizer_.empty()) GTEST_SKIP() << "tokenizers absent: run scripts/setup.sh";
  }
  std::string tokenizer_;
};

TEST_P(ModelScorerTest, GpmMatrixIsTheGatedSkewProductOfUnbatchedEmbeddings) {
  TempDir dir;
  const std::string folder = dir.str() + "/gpm";
  WriteScorerFolder(folder, GetParam(), tokenizer_, 6, 3);  // k = 3 with a prompt head
  ModelScorerOptions options;
  options.model_dir = folder;
  options.tau = 0.1;
  options.max_batch_responses = 4;  // groups span several batches
  auto scorer = ModelScorer::Load(options);
  ASSERT_TRUE(scorer.ok()) << scorer.status().ToString();
  auto d = (*scorer)->Describe();
  EXPECT_EQ(d.kind, "gpm");
  EXPECT_EQ(d.k, 3u);
  EXPECT_TRUE(d.has_prompt_head);

  std::vector<ScoreGroupInput> groups = {
      Group("a", "Name a colour.", {"Blue.", "I think the answer is green, mostly.", "Red"}),
      Group("b", "What is 2+2?", {"4", "Four, of course.", "five", "It is 4 because 2 and 2 make 4."})};
  auto prefs = (*scorer)->Score(groups);
  ASSERT_TRUE(prefs.ok()) << prefs.status().ToString();
  ASSERT_EQ(prefs->size(), 2u);

  // The same numbers from one unpadded forward per response.
  auto backbone = *LoadCausalLM(folder, [] {
    LoadOptions o;
    o.model.with_lm_head = false;
    o.allowed_extra_prefixes = {"value_head.", "prompt_head."};
    return o;
  }());
  auto reader = CheckpointReader::Open(folder);
  ASSERT_TRUE(reader.ok());
  PreferenceHeads heads{*(*reader)->Load("value_head.weight"), *(*reader)->Load("prompt_head.weight")};
  torch::NoGradGuard no_grad;
  for (size_t g = 0; g < groups.size(); ++g) {
    const auto& p = (*prefs)[g];
    const int64_t k = static_cast<int64_t>(groups[g].responses.size());
    ASSERT_EQ(p.k, static_cast<uint32_t>(k));
    std::vector<torch::Tensor> last;
    torch::Tensor prompt_h;
    for (const auto& response : groups[g].responses) {
      auto e = *(*scorer)->Encode(groups[g], response);
      EXPECT_EQ(e.ids.back(), (*ModelConfig::FromFile(folder)).primary_eos_token_id());
      auto ids = torch::tensor(std::vector<int64_t>(e.ids.begin(), e.ids.end())).unsqueeze(0);
      auto h = backbone->Hidden(ids, torch::ones_like(ids))[0];
      last.push_back(h[static_cast<int64_t>(e.ids.size()) - 1]);
      prompt_h = h[e.prompt_last];
    }
    auto emb = GpmEmbeddings(heads, torch::stack(last));
    auto gates = GpmGates(heads, prompt_h.unsqueeze(0)).squeeze(0);
    auto scores = GpmScoreMatrix(emb, gates);
    for (int64_t i = 0; i < k; ++i) {
      double row = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double s = p.scores[i * k + j];
        EXPECT_NEAR(s, scores[i][j].item<double>(), 1e-4) << g << ": " << i << "," << j;
        EXPECT_NEAR(s, -p.scores[j * k + i], 1e-9);
        const double prob = p.probabilities[i * k + j];
        EXPECT_NEAR(prob, 1.0 / (1.0 + std::exp(-s / 0.1)), 1e-9);
        row += prob;
      }
      EXPECT_NEAR(p.probabilities[i * k + i], 0.5, 1e-12);
      EXPECT_NEAR(p.win_rates[i], row / k, 1e-9);
    }
  }
}

TEST_P(ModelScorerTest, BradleyTerryUsesRewardDifferences) {
  TempDir dir;
  const std::string folder = dir.str() + "/bt";
  WriteScorerFolder(folder, GetParam(), tokenizer_, 1, 0);
  ModelScorerOptions options;
  options.model_dir = folder;
  options.kind = "bt";
  options.tau = 1.0;
  auto scorer = ModelScorer::Load(options);
  ASSERT_TRUE(scorer.ok()) << scorer.status().ToString();
  auto prefs = (*scorer)->Score({Group("a", "Hi", {"Hello!", "Go away.", "Hey"})});
  ASSERT_TRUE(prefs.ok());
  const auto& p = (*prefs)[0];
  // Transitive: s_ij + s_jk = s_ik for reward differences.
  EXPECT_NEAR(p.scores[0 * 3 + 1] + p.scores[1 * 3 + 2], p.scores[0 * 3 + 2], 1e-6);
  // The wrong kind for the head is named.
  options.kind = "gpm";
  auto wrong = ModelScorer::Load(options);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("Bradley-Terry"), std::string::npos);
}

TEST_P(ModelScorerTest, LongInputsAreTruncatedToMaxLengthAndEndInEos) {
  TempDir dir;
  const std::string folder = dir.str() + "/gpm";
  WriteScorerFolder(folder, GetParam(), tokenizer_, 4, 0);
  ModelScorerOptions options;
  options.model_dir = folder;
  options.max_length = 32;
  auto scorer = ModelScorer::Load(options);
  ASSERT_TRUE(scorer.ok()) << scorer.status().ToString();
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "word" + std::to_string(i) + " ";
  auto g = Group("x", long_text, {long_text, "short"});
  auto e = (*scorer)->Encode(g, long_text);
  ASSERT_TRUE(e.ok());
  EXPECT_LE(e->ids.size(), 32u);
  EXPECT_LE(e->prompt_last, 15);
  auto prefs = (*scorer)->Score({g});
  ASSERT_TRUE(prefs.ok()) << prefs.status().ToString();
  for (double v : (*prefs)[0].probabilities) EXPECT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(Backbones, ModelScorerTest, ::testing::Values("gemma", "llama"));

TEST(ModelScorerLoad, AFolderWithoutAValueHeadIsNamed) {
  auto dir_tok = TokenizerDir("llama3");
  if (dir_tok.empty()) GTEST_SKIP();
  TempDir dir;
  auto config = *ModelConfig::Preset("llama", "tiny");
  auto model = *CreateCausalLM(config, 1);
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/plain", config, model->NamedWeights(), dir_tok.string()).ok());
  ModelScorerOptions options;
  options.model_dir = dir.str() + "/plain";
  auto scorer = ModelScorer::Load(options);
  ASSERT_FALSE(scorer.ok());
  EXPECT_NE(scorer.status().message().find("value_head"), std::string::npos) << scorer.status().ToString();
}

}  // namespace
}  // namespace spar
