// The LibTorch decoders: HF names, save/load round trips, agreement with an
// independent Python forward (tests/model/reference/hf_forward.py), and the
// KV-cache path (prefill + decode) against the full forward.
#include "model/causal_lm.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using ::spar::testing::TempDir;

ModelConfig Preset(const std::string& arch, const std::string& name) {
  auto config = ModelConfig::Preset(arch, name);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *config;
}

CausalLM Create(const ModelConfig& config, uint64_t seed = 7) {
  auto model = CreateCausalLM(config, seed);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return *model;
}

class CausalLMTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CausalLMTest, ParameterNamesAreTheHuggingFaceNames) {
  auto config = Preset(GetParam(), "tiny");
  auto model = Create(config);
  std::set<std::string> names;
  for (auto& [name, t] : model->NamedWeights()) names.insert(name);
  EXPECT_TRUE(names.count("model.embed_tokens.weight"));
  EXPECT_TRUE(names.count("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.1.self_attn.o_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.1.mlp.gate_proj.weight"));
  EXPECT_TRUE(names.count("model.layers.0.input_layernorm.weight"));
  EXPECT_TRUE(names.count("model.layers.0.post_attention_layernorm.weight"));
  EXPECT_TRUE(names.count("model.norm.weight"));
  EXPECT_EQ(names.count("lm_head.weight"), config.tie_word_embeddings ? 0u : 1u);
  int64_t count = 0;
  for (auto& [name, t] : model->NamedWeights()) count += t.numel();
  EXPECT_EQ(count, config.NumParameters());
}

TEST_P(CausalLMTest, SaveLoadRoundTripGivesTheSameLogits) {
  auto config = Preset(GetParam(), "tiny");
  auto model = Create(config);
  TempDir dir;
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/m", config, model->NamedWeights(), "").ok());
  auto loaded = LoadCausalLM(dir.str() + "/m");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto ids = torch::tensor({{5, 17, 900, 3}}, torch::kLong);
  auto mask = torch::ones_like(ids);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(model->Forward(ids, mask), (*loaded)->Forward(ids, mask)));
}

TEST_P(CausalLMTest, MatchesTheIndependentPythonForward) {
  if (!::spar::testing::PythonHasTorch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (scripts/setup.sh installs it)";
  auto config = Preset(GetParam(), "tiny");
  auto model = Create(config, 11);
  TempDir dir;
  const std::string folder = dir.str() + "/m";
  ASSERT_TRUE(WriteHfFolder(folder, config, model->NamedWeights(), "").ok());
  // Row 0 full; row 1 left-padded; row 2 right-padded.
  std::vector<std::vector<int64_t>> ids = {
      {1, 200, 3000, 42, 7, 99}, {0, 0, 15, 16, 17, 18}, {128000, 5, 6, 0, 0, 0}};
  std::vector<std::vector<int64_t>> mask = {{1, 1, 1, 1, 1, 1}, {0, 0, 1, 1, 1, 1}, {1, 1, 1, 0, 0, 0}};
  if (GetParam() == "gemma") ids[2][0] = 2;
  std::vector<int64_t> columns;
  for (int64_t c = 0; c < 48; ++c) columns.push_back(c * 2671 % config.vocab_size);
  columns.push_back(config.vocab_size - 1);
  nlohmann::json input = {{"input_ids", ids}, {"attention_mask", mask}, {"columns", columns}};
  ::spar::testing::WriteFile(dir.path() / "input.json", input.dump());
  std::string output;
  const auto script = ::spar::testing::SourceDir() / "tests/model/reference/hf_forward.py";
  ASSERT_EQ(::spar::testing::RunProcess(
                {"/usr/bin/python3", script.string(), folder, (dir.path() / "input.json").string()}, &output),
            0)
      << output;
  auto expected = nlohmann::json::parse(output)["logits"];

  auto loaded = LoadCausalLM(folder);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  torch::NoGradGuard no_grad;
  auto ids_t = torch::empty({3, 6}, torch::kLong), mask_t = torch::empty({3, 6}, torch::kLong);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 6; ++j) {
      ids_t[i][j] = ids[i][j];
      mask_t[i][j] = mask[i][j];
    }
  auto logits = (*loaded)->Forward(ids_t, mask_t);
  auto cols = torch::tensor(columns, torch::kLong);
  double worst = 0;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 6; ++j) {
      if (!mask[i][j]) continue;
      auto row = logits[i][j].index_select(0, cols);
      for (size_t c = 0; c < columns.size(); ++c) {
        const double want = expected[i][j][c].get<double>();
        worst = std::max(worst, std::abs(row[c].item<double>() - want));
      }
    }
  EXPECT_LT(worst, 2e-4) << "largest logit difference against the Python reference";
}

TEST_P(CausalLMTest, PrefillAndDecodeMatchTheFullForward) {
  auto config = Preset(GetParam(), "tiny");
  auto model = Create(config, 3);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> a = {9, 8, 7, 6, 5, 4, 3, 2};
  std::vector<int64_t> b = {100, 200, 300, 400, 500};
  auto full_a = model->Forward(torch::tensor(a).unsqueeze(0), torch::ones({1, 8}, torch::kLong))[0];
  auto full_b = model->Forward(torch::tensor(b).unsqueeze(0), torch::ones({1, 5}, torch::kLong))[0];

  auto cache = KvCache::Allocate(config, 4, 16, torch::kFloat32, torch::kCPU);
  // a's first 5 tokens in slot 2, b's first 2 in slot 0 (unpacked slots:
  // the gather path), then decode both a token at a time.
  auto la = model->Prefill(torch::tensor(std::vector<int64_t>(a.begin(), a.begin() + 5)), cache, 2);
  auto lb = model->Prefill(torch::tensor(std::vector<int64_t>(b.begin(), b.begin() + 2)), cache, 0);
  EXPECT_TRUE(torch::allclose(la, full_a[4], 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(lb, full_b[1], 1e-4, 1e-4));
  for (int step = 0; step < 3; ++step) {
    auto tokens = torch::tensor({b[2 + step], a[5 + step]});
    auto positions = torch::tensor({int64_t{2 + step}, int64_t{5 + step}});
    auto slots = torch::tensor({int64_t{0}, int64_t{2}});
    auto logits = model->Decode(tokens, positions, slots, cache);
    EXPECT_TRUE(torch::allclose(logits[0], full_b[2 + step], 1e-4, 1e-4)) << "step " << step;
    EXPECT_TRUE(torch::allclose(logits[1], full_a[5 + step], 1e-4, 1e-4)) << "step " << step;
  }
  // A copied slot continues like the original (the K samples of a prompt).
  cache.CopySlot(2, 1, 8);
  auto tokens = torch::tensor({int64_t{1}, int64_t{1}});
  auto positions = torch::tensor({int64_t{8}, int64_t{8}});
  auto logits = model->Decode(tokens, positions, torch::tensor({int64_t{0}, int64_t{1}}), cache);
  auto again = model->Decode(tokens, positions, torch::tensor({int64_t{2}, int64_t{1}}), cache);
  EXPECT_TRUE(torch::allclose(again[0], again[1], 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(logits[1], again[1], 1e-5, 1e-5));
}

TEST_P(CausalLMTest, TrainingForwardHasGradientsForEveryParameter) {
  auto config = Preset(GetParam(), "tiny");
  auto model = Create(config);
  auto ids = torch::tensor({{1, 2, 3, 4}, {5, 6, 0, 0}}, torch::kLong);
  auto mask = torch::tensor({{1, 1, 1, 1}, {1, 1, 0, 0}}, torch::kLong);
  auto logits = model->Forward(ids, mask);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 4, config.vocab_size}));
  logits.log_softmax(-1).select(2, 3).sum().backward();
  for (auto& [name, p] : model->NamedWeights()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, CausalLMTest, ::testing::Values("llama", "gemma"));

TEST(CausalLMLoad, MissingUnknownAndMisshapenWeightsAreNamed) {
  auto config = Preset("llama", "tiny");
  auto model = Create(config);
  TempDir dir;
  auto weights = model->NamedWeights();

  auto without = weights;
  without.erase(without.begin() + 3);
  const std::string missing_name = weights[3].first;
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/missing", config, without, "").ok());
  auto missing = LoadCausalLM(dir.str() + "/missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(missing_name), std::string::npos) << missing.status().ToString();

  auto extra = weights;
  extra.emplace_back("model.layers.9.mlp.up_proj.weight", torch::zeros({2, 2}));
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/extra", config, extra, "").ok());
  auto unknown = LoadCausalLM(dir.str() + "/extra");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("model.layers.9.mlp.up_proj.weight"), std::string::npos);

  auto reshaped = weights;
  reshaped[0].second = torch::zeros({3, 3});
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/shape", config, reshaped, "").ok());
  auto bad_shape = LoadCausalLM(dir.str() + "/shape");
  ASSERT_FALSE(bad_shape.ok());
  EXPECT_NE(bad_shape.status().message().find(weights[0].first), std::string::npos)
      << bad_shape.status().ToString();
}

TEST(CausalLMLoad, AssignWeightsValidatesBeforeChangingAnything) {
  auto config = Preset("llama", "tiny");
  auto model = Create(config, 1);
  auto other = Create(config, 2);
  auto before = model->NamedWeights()[0].second.clone();
  auto partial = other->NamedWeights();
  partial.pop_back();
  EXPECT_FALSE(AssignWeights(model, partial).ok());
  EXPECT_TRUE(torch::equal(before, model->NamedWeights()[0].second));
  ASSERT_TRUE(AssignWeights(model, other->NamedWeights()).ok());
  EXPECT_TRUE(torch::equal(model->NamedWeights()[0].second, other->NamedWeights()[0].second));
}

TEST(CausalLMLoad, Bfloat16FolderLoadsAsFloat32OnTheCpuByDefault) {
  auto config = Preset("llama", "tiny");
  auto model = Create(config);
  TempDir dir;
  CheckpointWriteOptions options;
  options.dtype = torch::kBFloat16;
  ASSERT_TRUE(WriteHfFolder(dir.str() + "/bf16", config, model->NamedWeights(), "", options).ok());
  auto loaded = LoadCausalLM(dir.str() + "/bf16");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->OutputWeight().scalar_type(), torch::kFloat32);
  LoadOptions keep;
  keep.dtype = torch::kBFloat16;
  auto kept = LoadCausalLM(dir.str() + "/bf16", keep);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ((*kept)->OutputWeight().scalar_type(), torch::kBFloat16);
}

}  // namespace
}  // namespace spar
