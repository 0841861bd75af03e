// `spar run` end to end: every service a real child process over loopback
// gRPC, a real RocksDB run store, a tiny real Llama-3 policy with the real
// tokenizer; then resume, export, and the trained checkpoint.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "model/causal_lm.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using ::spar::testing::RunProcess;
using ::spar::testing::SparBinary;
using ::spar::testing::TempDir;
using ::spar::testing::TokenizerDir;
using ::spar::testing::WriteFile;

std::string Config(const fs::path& root, const std::string& tokenizer, int iterations) {
  std::string yaml = R"(log_level: info
run:
  dir: )" + (root / "run").string() + R"(
  iterations: )" + std::to_string(iterations) + R"(
  seed: 3
  launch: local
prompts:
  path: )" + (root / "prompts.jsonl").string() + R"(
policy:
  model: )" + (root / "run/models/init").string() + R"(
  init:
    arch: llama
    preset: tiny
    tokenizer: )" + tokenizer + R"(
    seed: 4
generation:
  samples_per_prompt: 3
  temperature: 1.0
  top_p: 1.0
  max_new_tokens: 8
  batch: 12
generator:
  model: unused-spar-run-passes-the-policy
  max_batch: 12
  max_context: 512
scorer:
  kind: rule
  tau: 1.0
  rule:
    target_words: 1
    length_scale: 1
learner:
  model: unused-spar-run-passes-the-policy
  loss: sppo
  eta: 10
  optimizer: adamw
  learning_rate: 1.0e-3
  batch_groups: 2
  max_length: 128
  max_prompt_length: 64
)";
  return yaml;
}

void WritePrompts(const fs::path& path, int n) {
  std::ofstream out(path);
  for (int i = 0; i < n; ++i) out << nlohmann::json{{"prompt", "Tell me about item " + std::to_string(i) + "."}}.dump() << "\n";
  out << nlohmann::json{{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello?"}}}}}.dump() << "\n";
}

TEST(EndToEnd, RunTrainsResumesAndExports) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  WritePrompts(dir.path() / "prompts.jsonl", 7);  // 8 prompts, 2 iterations of 4
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string(), 2));
  std::string output;
  int rc = RunProcess({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string()}, &output);
  ASSERT_EQ(rc, 0) << output;

  const fs::path run = dir.path() / "run";
  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["iterations_done"], 2);
  ASSERT_EQ(summary["iterations"].size(), 2u);
  for (const auto& it : summary["iterations"]) {
    EXPECT_EQ(it["prompts"], 4);
    EXPECT_EQ(it["rollouts"], 12);
    EXPECT_GT(it["rollout_tokens"].get<int64_t>(), 0);
    EXPECT_GT(it["learner_step"].get<int64_t>(), 0);
    EXPECT_EQ(it["trained_examples"], 4);
  }
  EXPECT_EQ(summary["iterations"][1]["policy_version"], 2);
  const fs::path final_model = summary["final_model"].get<std::string>();
  EXPECT_TRUE(fs::exists(final_model / "config.json"));
  EXPECT_TRUE(fs::exists(final_model / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(final_model / "model.safetensors"));

  // The trained policy differs from the initial one, and loads.
  auto initial = LoadCausalLM((run / "models/init").string());
  auto trained = LoadCausalLM(final_model.string());
  ASSERT_TRUE(initial.ok() && trained.ok()) << trained.status().ToString();
  double moved = 0;
  auto a = (*initial)->NamedWeights(), b = (*trained)->NamedWeights();
  for (size_t i = 0; i < a.size(); ++i) moved += (a[i].second - b[i].second).abs().sum().item<double>();
  EXPECT_GT(moved, 0) << "training did not change the policy";

  // A second run on the same folder resumes past both iterations.
  rc = RunProcess({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string()}, &output);
  ASSERT_EQ(rc, 0) << output;
  summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["iterations_resumed"], 2);
  EXPECT_EQ(summary["iterations"].size(), 0u);

  // Export: one line per prompt group with win rates and chosen/rejected.
  rc = RunProcess({SparBinary(), "export", "--db", (run / "store").string(), "--out",
                   (dir.path() / "export.jsonl").string()},
                  &output);
  ASSERT_EQ(rc, 0) << output;
  std::ifstream in(dir.path() / "export.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["responses"].size(), 3u);
    EXPECT_TRUE(j.contains("chosen"));
    ++lines;
  }
  EXPECT_EQ(lines, 8);
}

}  // namespace
}  // namespace spar
