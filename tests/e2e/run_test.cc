// `spar run` end to end: every service a real child process over loopback
// gRPC, a real RocksDB run store, a tiny real Llama-3 policy with the real
// tokenizer; then resume, export, and the trained checkpoint.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "model/causal_lm.h"
#include "storage/run_store.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using ::spar::testing::ChildProcess;
using ::spar::testing::RunProcess;
using ::spar::testing::SparBinary;
using ::spar::testing::TempDir;
using ::spar::testing::TokenizerDir;
using ::spar::testing::WriteFile;

// The scorer section of a rule scorer preferring responses of `words` words.
std::string RuleScorer(int words) {
  return "scorer:\n  kind: rule\n  tau: 1.0\n  rule:\n    target_words: " + std::to_string(words) +
         "\n    length_scale: 1\n";
}

struct ConfigOptions {
  int iterations = 2;
  int generators = 1;
  int held_out = 0;
  std::string scorer = RuleScorer(1);
  int max_new_tokens = 8;
  int samples = 3;
  int batch_groups = 2;
  int epochs = 1;
  std::string eta = "10";
  std::string learning_rate = "1.0e-3";
  int top_k = 0;
  std::string extra_run;      // more `run:` keys, each line indented by two spaces
  std::string extra_learner;  // more `learner:` keys, likewise
};

// Three iterations over 30 prompts (12 held out, shards of 6, K = 4) that
// show a learning signal. A random tiny policy is nearly flat over 128k
// tokens: sampling from its top 20 per step and a large step size let three
// short iterations show what the judge prefers (eta = 1000 is the SPPO
// scripts' beta = 0.001).
ConfigOptions LearningSignalOptions() {
  ConfigOptions o;
  o.iterations = 3;
  o.held_out = 12;  // 6 judged too few: one unlucky prompt moved the win rate by 0.1
  o.samples = 4;
  o.batch_groups = 1;
  o.epochs = 2;
  o.top_k = 20;
  o.eta = "1000";
  o.learning_rate = "1.0e-2";
  return o;
}

std::string Config(const fs::path& root, const std::string& tokenizer, const ConfigOptions& o) {
  std::string generators = "generators:\n";
  for (int i = 0; i < o.generators; ++i) generators += "  - {}\n";
  std::string yaml = R"(log_level: info
run:
  dir: )" + (root / "run").string() + R"(
  iterations: )" + std::to_string(o.iterations) + R"(
  seed: 3
  launch: local
  held_out: )" + std::to_string(o.held_out) + R"(
)" + o.extra_run + R"(prompts:
  path: )" + (root / "prompts.jsonl").string() + R"(
policy:
  model: )" + (root / "run/models/init").string() + R"(
  init:
    arch: llama
    preset: tiny
    tokenizer: )" + tokenizer + R"(
    seed: 4
generation:
  samples_per_prompt: )" + std::to_string(o.samples) + R"(
  temperature: 1.0
  top_p: 1.0
  top_k: )" + std::to_string(o.top_k) + R"(
  max_new_tokens: )" + std::to_string(o.max_new_tokens) + R"(
  batch: 12
)" + generators + R"(generator:
  model: unused-spar-run-passes-the-policy
  max_batch: 12
  max_context: 512
)" + o.scorer + R"(learner:
  model: unused-spar-run-passes-the-policy
  loss: sppo
  eta: )" + o.eta + R"(
  optimizer: adamw
  learning_rate: )" + o.learning_rate + R"(
  batch_groups: )" + std::to_string(o.batch_groups) + R"(
  epochs: )" + std::to_string(o.epochs) + R"(
  max_length: 128
  max_prompt_length: 64
)" + o.extra_learner;
  return yaml;
}

// Pids of live processes whose command line contains every one of `parts`
// as an argument.
std::vector<pid_t> FindProcesses(const std::vector<std::string>& parts) {
  std::vector<pid_t> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args;
    std::stringstream ss(cmdline);
    for (std::string a; std::getline(ss, a, '\0');) args.push_back(a);
    bool all = !args.empty();
    for (const auto& p : parts) all = all && std::find(args.begin(), args.end(), p) != args.end();
    if (all) pids.push_back(std::stoi(name));
  }
  return pids;
}

bool FileContains(const fs::path& path, const std::string& text) {
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.find(text) != std::string::npos;
}

// Polls `ready` every 200 ms until it is true or `timeout` passes.
bool WaitUntil(const std::function<bool()>& ready, std::chrono::seconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// Rollout groups stored for `iteration`, read through a read-only view of a
// store that a live run may be writing.
int StoredGroups(const fs::path& store, uint32_t iteration) {
  RunStoreOptions options;
  options.read_only = true;
  auto db = RunStore::Open(store.string(), options);
  if (!db.ok()) return 0;
  int n = 0;
  (void)(*db)->ForEachGroup(iteration, [&](const RolloutGroup&) { return ++n, true; });
  return n;
}

// Every prompt of every shard has exactly one group of K rollouts (sample
// indices 0..K-1) and one score record of size K, and nothing else is stored.
void ExpectExactlyOnce(const fs::path& store, uint32_t iterations, int per_shard, uint32_t k) {
  RunStoreOptions options;
  options.read_only = true;
  auto db = RunStore::Open(store.string(), options);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  std::map<uint32_t, std::set<uint64_t>> groups, scores;
  ASSERT_TRUE((*db)->ForEachGroup(std::nullopt, [&](const RolloutGroup& g) {
    EXPECT_TRUE(groups[g.iteration].insert(g.prompt_index).second) << "duplicate group " << g.prompt_id;
    EXPECT_EQ(g.rollouts.size(), k) << g.prompt_id;
    for (size_t i = 0; i < g.rollouts.size(); ++i) EXPECT_EQ(g.rollouts[i].sample_index, i) << g.prompt_id;
    return true;
  }).ok());
  ASSERT_TRUE((*db)->ForEachScore(std::nullopt, [&](const ScoreRecord& r) {
    EXPECT_TRUE(scores[r.iteration].insert(r.prompt_index).second) << "duplicate score " << r.prompt_id;
    EXPECT_EQ(r.k, k) << r.prompt_id;
    return true;
  }).ok());
  EXPECT_EQ(groups.size(), iterations);
  EXPECT_EQ(scores.size(), iterations);
  for (uint32_t t = 0; t < iterations; ++t) {
    EXPECT_EQ(groups[t].size(), static_cast<size_t>(per_shard)) << "iteration " << t;
    EXPECT_EQ(scores[t].size(), static_cast<size_t>(per_shard)) << "iteration " << t;
  }
}

size_t WordCount(const std::string& text) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
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
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string(), ConfigOptions{}));
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

// learner.publish_every_steps through the whole pipeline: the learner steps
// on each group as it is scored and publishes after every step, so later
// groups of an iteration are sampled from revisions of pi_t; the store keeps
// each rollout's revision, versions stay per iteration, every iteration ends
// on version t+1 revision 0, and the exactly-once bookkeeping is unchanged.
TEST(EndToEnd, IntermediatePublicationsReachTheGeneratorsAndTheStore) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  WritePrompts(dir.path() / "prompts.jsonl", 23);  // 24 prompts, 2 iterations of 12
  ConfigOptions o;
  o.batch_groups = 1;
  o.max_new_tokens = 16;
  o.extra_run = "  inflight_per_generator: 1\n";  // groups finish one by one
  o.extra_learner = "  publish_every_steps: 1\n";
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string(), o));
  std::string output;
  int rc = RunProcess({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string()}, &output);
  ASSERT_EQ(rc, 0) << output;

  const fs::path run = dir.path() / "run";
  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  ASSERT_EQ(summary["iterations"].size(), 2u);
  EXPECT_EQ(summary["iterations"][1]["policy_version"], 2);
  ExpectExactlyOnce(run / "store", 2, 12, 3);

  RunStoreOptions ro;
  ro.read_only = true;
  auto db = RunStore::Open((run / "store").string(), ro);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  std::map<uint32_t, uint64_t> highest_revision;
  ASSERT_TRUE((*db)->ForEachGroup(std::nullopt, [&](const RolloutGroup& g) {
    for (const auto& r : g.rollouts) {
      EXPECT_EQ(r.policy_version, g.iteration) << g.prompt_id;
      highest_revision[g.iteration] = std::max(highest_revision[g.iteration], r.policy_revision);
    }
    return true;
  }).ok());
  // Iteration 0's first group is always revision 0; with 12 groups and a
  // step after each scored one, later groups come from revisions >= 1.
  EXPECT_GE(highest_revision[0] + highest_revision[1], 1u);
  std::printf("highest revision sampled: %llu in iteration 0, %llu in iteration 1\n",
              static_cast<unsigned long long>(highest_revision[0]),
              static_cast<unsigned long long>(highest_revision[1]));
  EXPECT_TRUE(FileContains(run / "logs/generator-0.log", "revision 1")) << "no intermediate publication applied";
}

// The rule scorer prefers one-word answers; after three iterations the policy
// beats pi_0 on held-out prompts by the scorer's own judgement (a learning
// signal through the whole pipeline). The orchestrator is killed (SIGKILL)
// in the middle of iteration 1; the second `spar run` finishes the run
// without redoing or duplicating anything that was stored.
TEST(EndToEnd, RuleRunLearnsAndResumesAfterOrchestratorKill) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  WritePrompts(dir.path() / "prompts.jsonl", 29);  // 30 prompts: 12 held out, 3 shards of 6
  ConfigOptions o = LearningSignalOptions();
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string(), o));
  const fs::path run = dir.path() / "run";
  const fs::path first_log = dir.path() / "first.log";
  {
    ChildProcess orchestrator({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string()},
                              first_log.string());
    ASSERT_TRUE(WaitUntil([&] { return FileContains(first_log, "iteration 1:") || !orchestrator.Running(); },
                          std::chrono::seconds(300)))
        << ::spar::testing::ReadFile(first_log);
    ASSERT_TRUE(orchestrator.Running()) << ::spar::testing::ReadFile(first_log);
    // Some of iteration 1 is stored, not all of it.
    WaitUntil([&] { return StoredGroups(run / "store", 1) >= 2; }, std::chrono::seconds(60));
    ASSERT_NE(orchestrator.Stop(SIGKILL, std::chrono::seconds(10)), -1);
  }
  EXPECT_LT(StoredGroups(run / "store", 1), 6) << "iteration 1 finished before the kill";
  // Its children follow it (parent-death signal) before the restart.
  WaitUntil([&] { return FindProcesses({"--config", fs::absolute(dir.path() / "spar.yaml").string()}).empty(); },
            std::chrono::seconds(20));

  std::string output;
  int rc = RunProcess({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string()}, &output);
  ASSERT_EQ(rc, 0) << output;
  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["iterations_resumed"], 1);
  ASSERT_EQ(summary["iterations"].size(), 2u) << summary.dump(2);
  EXPECT_GT(summary["iterations"][0]["reused_groups"].get<int64_t>(), 0) << "nothing stored was reused";
  ExpectExactlyOnce(run / "store", 3, 6, 4);

  // The learning signal, by the scorer and by counting words directly.
  const auto& last = summary["iterations"][1];
  const double after_1 = summary["iterations"][0].value("held_out_win_rate", -1.0);
  const double after_2 = last.value("held_out_win_rate", -1.0);
  std::printf("held-out win rate against pi_0: %.3f after iteration 1, %.3f after iteration 2\n", after_1, after_2);
  EXPECT_EQ(last["held_out_prompts"], 12);
  // A tiny random policy trained with large AdamW steps sometimes overshoots
  // in one iteration (seen: 0.79 after iteration 1, then 0.50), and the run
  // is not bit-reproducible (scheduling decides which samples share a
  // batch). Over 15 runs the better of the two was always >= 0.64 and the
  // last >= 0.49: the signal asserted is that a policy after the resume
  // beats pi_0 clearly and the last does not lose to it (with the word count
  // below as a direct measure).
  EXPECT_GT(std::max(after_1, after_2), 0.6) << summary.dump(2);
  EXPECT_GT(after_2, 0.45) << summary.dump(2);
  RunStoreOptions ro;
  ro.read_only = true;
  auto db = RunStore::Open((run / "store").string(), ro);
  ASSERT_TRUE(db.ok());
  auto baseline = (*db)->GetDocument("eval/baseline");
  ASSERT_TRUE(baseline.ok() && *baseline);
  double words0 = 0, words_last = 0;
  int n0 = 0, n_last = 0;
  const auto baseline_json = nlohmann::json::parse(**baseline);
  for (const auto& p : baseline_json["prompts"])
    for (const auto& r : p["responses"]) words0 += WordCount(r.get<std::string>()), ++n0;
  ASSERT_TRUE((*db)->ForEachGroup(2, [&](const RolloutGroup& g) {
    for (const auto& r : g.rollouts) words_last += WordCount(r.text), ++n_last;
    return true;
  }).ok());
  // pi_2 sampled iteration 2's rollouts; pi_0 the baseline: fewer words now.
  EXPECT_LT(words_last / n_last, words0 / n0) << "pi_2 " << words_last / n_last << " words, pi_0 " << words0 / n0;
}

// A tiny random GPM built by spar run is the judge: after three iterations
// pi_3 wins more than half of its comparisons against pi_0 on held-out
// prompts. One of the two generators is killed in iteration 0; the run
// finishes on the other.
TEST(EndToEnd, GpmRunWinsAgainstPi0AndSurvivesGeneratorKill) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  WritePrompts(dir.path() / "prompts.jsonl", 29);
  ConfigOptions o = LearningSignalOptions();
  o.generators = 2;
  o.scorer = "scorer:\n  kind: gpm\n  model: " + (dir.path() / "run/models/gpm").string() +
             "\n  tau: 0.1\n  init:\n    arch: llama\n    preset: tiny\n    tokenizer: " + tokenizer.string() +
             "\n    seed: 11\n    head: gpm\n    k: 2\n";
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string(), o));
  const fs::path run = dir.path() / "run";
  const fs::path log = dir.path() / "run.log";
  const std::string config = fs::absolute(dir.path() / "spar.yaml").string();
  ChildProcess orchestrator({SparBinary(), "run", "--config", config}, log.string());
  // Kill generator-1 once iteration 0 is under way.
  ASSERT_TRUE(WaitUntil([&] { return StoredGroups(run / "store", 0) >= 1 || !orchestrator.Running(); },
                        std::chrono::seconds(300)))
      << ::spar::testing::ReadFile(log);
  auto victims = FindProcesses({"generator", "--id", "generator-1", config});
  ASSERT_EQ(victims.size(), 1u) << ::spar::testing::ReadFile(log);
  ASSERT_EQ(kill(victims[0], SIGKILL), 0);
  ASSERT_TRUE(WaitUntil([&] { return !orchestrator.Running(); }, std::chrono::seconds(600)));
  ASSERT_EQ(orchestrator.Stop(0, std::chrono::seconds(1)), 0) << ::spar::testing::ReadFile(log);

  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  ASSERT_EQ(summary["iterations"].size(), 3u);
  EXPECT_NE(summary["iterations"][0]["lost_generators"].dump().find("generator-1"), std::string::npos)
      << summary.dump(2);
  ExpectExactlyOnce(run / "store", 3, 6, 4);
  const auto& last = summary["iterations"][2];
  EXPECT_EQ(last["policy_version"], 3);
  EXPECT_GT(last["held_out_win_rate"].get<double>(), 0.5) << summary.dump(2);
  EXPECT_TRUE(fs::exists(run / "models/gpm/config.json"));
}

// Swapping the preference model is a change of address: the same run,
// pointed at two running scorers with opposite preferences, stores the same
// rollouts and opposite choices.
TEST(EndToEnd, ScorerIsSwappedByAddress) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  WritePrompts(dir.path() / "prompts.jsonl", 3);
  std::vector<std::unique_ptr<ChildProcess>> scorers;
  std::vector<std::string> addresses;
  for (int words : {1, 40}) {
    const fs::path cfg = dir.path() / ("scorer-" + std::to_string(words) + ".yaml");
    WriteFile(cfg, RuleScorer(words));
    const fs::path ready = dir.path() / ("scorer-" + std::to_string(words) + ".ready");
    scorers.push_back(std::make_unique<ChildProcess>(
        std::vector<std::string>{SparBinary(), "scorer", "--config", cfg.string(), "--listen", "127.0.0.1:0",
                                 "--ready-file", ready.string()},
        (dir.path() / ("scorer-" + std::to_string(words) + ".log")).string()));
    addresses.push_back(::spar::testing::WaitForFile(ready.string(), std::chrono::seconds(60)));
    ASSERT_FALSE(addresses.back().empty()) << ::spar::testing::ReadFile(dir.path() / ("scorer-" + std::to_string(words) + ".log"));
  }
  std::vector<std::vector<ScoreRecord>> scores(2);
  std::vector<std::vector<RolloutGroup>> groups(2);
  for (int i = 0; i < 2; ++i) {
    ConfigOptions o;
    o.iterations = 1;
    o.max_new_tokens = 24;
    o.samples = 4;
    o.scorer = "scorer:\n  address: " + addresses[i] + "\n";
    const fs::path cfg = dir.path() / ("spar-" + std::to_string(i) + ".yaml");
    WriteFile(cfg, Config(dir.path() / ("r" + std::to_string(i)), tokenizer.string(), o));
    fs::create_directories(dir.path() / ("r" + std::to_string(i)));
    fs::copy_file(dir.path() / "prompts.jsonl", dir.path() / ("r" + std::to_string(i)) / "prompts.jsonl");
    std::string output;
    ASSERT_EQ(RunProcess({SparBinary(), "run", "--config", cfg.string()}, &output), 0) << output;
    EXPECT_NE(output.find("scorer: using the running service at " + addresses[i]), std::string::npos) << output;
    RunStoreOptions ro;
    ro.read_only = true;
    auto db = RunStore::Open((dir.path() / ("r" + std::to_string(i)) / "run/store").string(), ro);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->ForEachScore(0, [&](const ScoreRecord& r) { return scores[i].push_back(r), true; }).ok());
    ASSERT_TRUE((*db)->ForEachGroup(0, [&](const RolloutGroup& g) { return groups[i].push_back(g), true; }).ok());
  }
  ASSERT_EQ(groups[0].size(), 4u);
  ASSERT_EQ(groups[1].size(), 4u);
  ASSERT_EQ(scores[0].size(), 4u);
  ASSERT_EQ(scores[1].size(), 4u);
  int differ = 0;
  for (size_t g = 0; g < 4; ++g) {
    for (size_t r = 0; r < 4; ++r) EXPECT_EQ(groups[0][g].rollouts[r].text, groups[1][g].rollouts[r].text);
    // Scorer 0 prefers the shortest response, scorer 1 the longest.
    for (int i = 0; i < 2; ++i) {
      const auto& w = scores[i][g].win_rates;
      const size_t best = std::max_element(w.begin(), w.end()) - w.begin();
      const size_t worst = std::min_element(w.begin(), w.end()) - w.begin();
      const auto words = [&](size_t r) { return WordCount(groups[i][g].rollouts[r].text); };
      if (i == 0) EXPECT_LE(words(best), words(worst));
      else EXPECT_GE(words(best), words(worst));
    }
    differ += scores[0][g].win_rates != scores[1][g].win_rates;
  }
  EXPECT_GT(differ, 0);
}

}  // namespace
}  // namespace spar
