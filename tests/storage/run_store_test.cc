#include "storage/run_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

RolloutGroup MakeGroup(uint32_t iteration, uint64_t index, int k = 5, int tokens = 8) {
  RolloutGroup g;
  g.iteration = iteration;
  g.prompt_index = index;
  g.prompt_id = "p" + std::to_string(iteration) + "-" + std::to_string(index);
  g.prompt_token_ids = {128000, 1, 2, 3};
  for (int s = 0; s < k; ++s) {
    RolloutRecord r;
    r.sample_index = s;
    r.text = "response " + std::to_string(s) + " of " + g.prompt_id;
    for (int t = 0; t < tokens; ++t) {
      r.token_ids.push_back(static_cast<int32_t>(index * 100 + s * 10 + t));
      r.logprobs.push_back(-0.125f * static_cast<float>(t + s));
    }
    r.finish_reason = s % 2 ? FinishReasonCode::kLength : FinishReasonCode::kStop;
    r.policy_version = iteration;
    r.generator_id = "generator-" + std::to_string(s % 2);
    g.rollouts.push_back(std::move(r));
  }
  return g;
}

ScoreRecord MakeScore(uint32_t iteration, uint64_t index, uint32_t k = 3) {
  ScoreRecord s;
  s.iteration = iteration;
  s.prompt_index = index;
  s.prompt_id = "p" + std::to_string(index);
  s.k = k;
  for (uint32_t i = 0; i < k; ++i) {
    double row = 0;
    for (uint32_t j = 0; j < k; ++j) {
      double p = i == j ? 0.5 : (i < j ? 0.7 : 0.3);
      s.probabilities.push_back(p);
      s.scores.push_back(i == j ? 0.0 : (i < j ? 0.1 : -0.1));
      row += p;
    }
    s.win_rates.push_back(row / k);
    s.mean_scores.push_back(0.0);
  }
  s.model = "rule:length";
  return s;
}

TEST(RunStoreTest, GroupsRoundTripAndScanInOrder) {
  TempDir dir;
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  // Written out of order, across iterations, with indices that would sort
  // wrongly as decimal strings (9 < 10 < 100).
  for (uint64_t index : {100, 9, 10, 0}) ASSERT_TRUE((*store)->PutGroup(MakeGroup(1, index)).ok());
  ASSERT_TRUE((*store)->PutGroup(MakeGroup(0, 7)).ok());
  ASSERT_TRUE((*store)->PutGroup(MakeGroup(2, 1)).ok());

  std::vector<std::pair<uint32_t, uint64_t>> seen;
  ASSERT_TRUE((*store)->ForEachGroup(std::nullopt, [&](const RolloutGroup& g) {
    seen.emplace_back(g.iteration, g.prompt_index);
    EXPECT_EQ(g.rollouts.size(), 5u);
    return true;
  }).ok());
  std::vector<std::pair<uint32_t, uint64_t>> want = {{0, 7}, {1, 0}, {1, 9}, {1, 10}, {1, 100}, {2, 1}};
  EXPECT_EQ(seen, want);

  seen.clear();
  ASSERT_TRUE((*store)->ForEachGroup(1, [&](const RolloutGroup& g) {
    seen.emplace_back(g.iteration, g.prompt_index);
    return true;
  }).ok());
  EXPECT_EQ(seen.size(), 4u);

  auto got = (*store)->GetGroup(1, 9);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  RolloutGroup expected = MakeGroup(1, 9);
  const RolloutGroup& g = **got;
  EXPECT_EQ(g.prompt_id, expected.prompt_id);
  EXPECT_EQ(g.prompt_token_ids, expected.prompt_token_ids);
  EXPECT_GT(g.created_micros, 0);
  for (size_t s = 0; s < g.rollouts.size(); ++s) {
    EXPECT_EQ(g.rollouts[s].text, expected.rollouts[s].text);
    EXPECT_EQ(g.rollouts[s].token_ids, expected.rollouts[s].token_ids);
    EXPECT_EQ(g.rollouts[s].logprobs, expected.rollouts[s].logprobs);
    EXPECT_EQ(g.rollouts[s].finish_reason, expected.rollouts[s].finish_reason);
    EXPECT_EQ(g.rollouts[s].generator_id, expected.rollouts[s].generator_id);
  }
  auto missing = (*store)->GetGroup(1, 11);
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  EXPECT_TRUE(*(*store)->HasGroup(2, 1));
  EXPECT_FALSE(*(*store)->HasGroup(2, 2));
}

TEST(RunStoreTest, RolloutViewsScanWithoutCopies) {
  TempDir dir;
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE((*store)->PutGroup(MakeGroup(0, i, 5, 16)).ok());
  ASSERT_TRUE((*store)->Flush().ok());
  size_t count = 0;
  ASSERT_TRUE((*store)->ForEachRolloutView(0, [&](const RolloutView& v) {
    EXPECT_EQ(v.num_tokens, 16u);
    EXPECT_EQ(v.num_logprobs, 16u);
    EXPECT_EQ(v.token(3), static_cast<int32_t>(v.prompt_index * 100 + v.sample_index * 10 + 3));
    EXPECT_FLOAT_EQ(v.logprob(2), -0.125f * (2 + v.sample_index));
    ++count;
    return true;
  }).ok());
  EXPECT_EQ(count, 100u);
}

TEST(RunStoreTest, RejectsMalformedGroups) {
  TempDir dir;
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  RolloutGroup empty = MakeGroup(0, 0, 0);
  Status s = (*store)->PutGroup(empty);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no rollouts"), std::string::npos);

  RolloutGroup misnumbered = MakeGroup(0, 1);
  misnumbered.rollouts[2].sample_index = 7;
  s = (*store)->PutGroup(misnumbered);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("sample_index"), std::string::npos);

  RolloutGroup bad_logprobs = MakeGroup(0, 2);
  bad_logprobs.rollouts[0].logprobs.pop_back();
  EXPECT_EQ((*store)->PutGroup(bad_logprobs).code(), StatusCode::kInvalidArgument);

  // A batch with one bad group writes nothing at all.
  s = (*store)->PutGroups({MakeGroup(0, 3), misnumbered});
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(*(*store)->HasGroup(0, 3));
}

TEST(RunStoreTest, PromptsScoresStateAndMetrics) {
  TempDir dir;
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  std::vector<PromptRecord> prompts;
  for (uint64_t i = 0; i < 12; ++i) {
    PromptRecord p;
    p.iteration = 2;
    p.prompt_index = 11 - i;
    p.prompt_id = "q" + std::to_string(11 - i);
    if (i % 2) p.text = "Tell me about " + std::to_string(i);
    else p.messages = {{"system", "Be brief."}, {"user", "Hi " + std::to_string(i)}};
    prompts.push_back(p);
  }
  ASSERT_TRUE((*store)->PutPrompts(prompts).ok());
  std::vector<uint64_t> order;
  ASSERT_TRUE((*store)->ForEachPrompt(2, [&](const PromptRecord& p) {
    order.push_back(p.prompt_index);
    return true;
  }).ok());
  ASSERT_EQ(order.size(), 12u);
  for (size_t i = 0; i < order.size(); ++i) EXPECT_EQ(order[i], i);
  auto p = (*store)->GetPrompt(2, 11);
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->messages.size(), 2u);
  EXPECT_EQ((*p)->messages[1].role, "user");

  ASSERT_TRUE((*store)->PutScore(MakeScore(0, 4)).ok());
  auto score = (*store)->GetScore(0, 4);
  ASSERT_TRUE(score.ok() && score->has_value());
  EXPECT_EQ((*score)->k, 3u);
  EXPECT_DOUBLE_EQ((*score)->probabilities[1], 0.7);
  EXPECT_EQ((*score)->model, "rule:length");

  ScoreRecord bad = MakeScore(0, 5);
  bad.win_rates.pop_back();
  Status s = (*store)->PutScore(bad);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("win_rates"), std::string::npos);
  ScoreRecord nan = MakeScore(0, 6);
  nan.probabilities[1] = std::nan("");
  EXPECT_EQ((*store)->PutScore(nan).code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE((*store)->PutRunState(R"({"iterations":3})").ok());
  ASSERT_TRUE((*store)->PutIterationState(1, R"({"status":"generating"})").ok());
  EXPECT_EQ(**(*store)->GetRunState(), R"({"iterations":3})");
  EXPECT_EQ(**(*store)->GetIterationState(1), R"({"status":"generating"})");
  EXPECT_FALSE((*store)->GetIterationState(2)->has_value());

  for (int i = 0; i < 5; ++i) {
    MetricsPoint m;
    m.unix_micros = 1000 + 10 * (4 - i);
    m.source = "generator-0";
    m.values = {{"spar_generator_tokens_per_second", 100.0 + i}};
    ASSERT_TRUE((*store)->AppendMetrics(m).ok());
  }
  std::vector<int64_t> times;
  ASSERT_TRUE((*store)->ForEachMetrics(1010, 1040, [&](const MetricsPoint& m) {
    times.push_back(m.unix_micros);
    return true;
  }).ok());
  EXPECT_EQ(times, (std::vector<int64_t>{1010, 1020, 1030}));
}

TEST(RunStoreTest, ReopenKeepsEverything) {
  TempDir dir;
  {
    auto store = RunStore::Open(dir.str());
    ASSERT_TRUE(store.ok());
    for (uint64_t i = 0; i < 50; ++i) ASSERT_TRUE((*store)->PutGroup(MakeGroup(0, i)).ok());
    ASSERT_TRUE((*store)->PutScore(MakeScore(0, 3)).ok());
  }
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  size_t groups = 0;
  ASSERT_TRUE((*store)->ForEachGroup(0, [&](const RolloutGroup&) { return ++groups, true; }).ok());
  EXPECT_EQ(groups, 50u);
  EXPECT_TRUE((*store)->GetScore(0, 3)->has_value());
}

TEST(RunStoreTest, MissingDatabaseIsNotFound) {
  TempDir dir;
  RunStoreOptions options;
  options.create_if_missing = false;
  auto store = RunStore::Open((dir.path() / "nope").string(), options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound) << store.status().ToString();
  EXPECT_NE(store.status().message().find("nope"), std::string::npos);
}

TEST(RunStoreTest, LockedDatabaseIsAClearError) {
  TempDir dir;
  auto first = RunStore::Open(dir.str());
  ASSERT_TRUE(first.ok());
  // Same process.
  auto second = RunStore::Open(dir.str());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << second.status().ToString();
  EXPECT_NE(second.status().message().find("locked"), std::string::npos);
  // Another process.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto other = RunStore::Open(dir.str());
    _exit(!other.ok() && other.status().code() == StatusCode::kFailedPrecondition ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Read-only inspection works while locked.
  RunStoreOptions ro;
  ro.read_only = true;
  auto reader = RunStore::Open(dir.str(), ro);
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
}

TEST(RunStoreTest, CorruptDatabaseIsAClearError) {
  TempDir dir;
  {
    auto store = RunStore::Open(dir.str());
    ASSERT_TRUE(store.ok());
    for (uint64_t i = 0; i < 200; ++i) ASSERT_TRUE((*store)->PutGroup(MakeGroup(0, i, 5, 64)).ok());
    ASSERT_TRUE((*store)->Flush().ok());
  }
  // Overwrite the middle of every table file with garbage.
  int corrupted = 0;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    if (entry.path().extension() != ".sst") continue;
    auto size = fs::file_size(entry.path());
    std::fstream f(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 3));
    std::string junk(4096, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
    ++corrupted;
  }
  ASSERT_GT(corrupted, 0);
  auto store = RunStore::Open(dir.str());
  Status s = store.ok() ? (*store)->ForEachGroup(0, [](const RolloutGroup&) { return true; })
                        : store.status();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.message().find(dir.str()), std::string::npos) << s.ToString();

  // A broken CURRENT file: open fails with a message, no crash.
  testing::WriteFile(dir.path() / "CURRENT", "garbage-no-newline");
  auto broken = RunStore::Open(dir.str());
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find(dir.str()), std::string::npos);
}

// A child process writes groups and reports each acknowledged write on a
// pipe; the parent kills it with SIGKILL mid-stream. Every acknowledged
// group must be there, whole, after reopening.
TEST(RunStoreTest, AcknowledgedWritesSurviveSigkill) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    auto store = RunStore::Open(dir.str());
    if (!store.ok()) _exit(2);
    for (uint64_t i = 0;; ++i) {
      if (!(*store)->PutGroup(MakeGroup(0, i, 5, 256)).ok()) _exit(3);
      uint64_t ack = i;
      if (write(fds[1], &ack, sizeof(ack)) != sizeof(ack)) _exit(4);
    }
  }
  close(fds[1]);
  uint64_t last_ack = 0, ack;
  size_t acks = 0;
  while (acks < 3000 && read(fds[0], &ack, sizeof(ack)) == sizeof(ack)) {
    last_ack = ack;
    ++acks;
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
  // Drain acks that were written before the kill.
  while (read(fds[0], &ack, sizeof(ack)) == sizeof(ack)) last_ack = ack;
  close(fds[0]);
  ASSERT_GE(acks, 3000u);

  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  uint64_t expected = 0;
  ASSERT_TRUE((*store)->ForEachGroup(0, [&](const RolloutGroup& g) {
    EXPECT_EQ(g.prompt_index, expected);
    EXPECT_EQ(g.rollouts.size(), 5u);
    EXPECT_EQ(g.rollouts[4].token_ids.size(), 256u);
    ++expected;
    return true;
  }).ok());
  // Everything acknowledged is there (one more, unacknowledged, may be too).
  EXPECT_GE(expected, last_ack + 1);
  EXPECT_LE(expected, last_ack + 2);
}

}  // namespace
}  // namespace spar
