// The trainer on a small real LibTorch language model (token embedding ->
// linear head): loss goes down, a +-eta/2 pair moves its log-ratios the
// right way, two Gloo ranks make the same update as one rank with the
// doubled batch, and optimiser state resumes exactly.
#include "services/learner/trainer.h"

#include "common/net.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/services/learner/bigram_policy.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

std::vector<LearnerExample> Batch(int groups, int offset) {
  std::vector<LearnerExample> out;
  for (int g = 0; g < groups; ++g) {
    LearnerExample e;
    e.prompt_id = "g" + std::to_string(g + offset);
    e.prompt_ids = {1, static_cast<int32_t>(2 + (g + offset) % 5)};
    e.responses = {{7, 8, 9}, {10, 11}, {12}};
    e.win_rates = {0.9, 0.5, 0.1};
    e.mean_scores = {0.2, 0.0, -0.2};
    out.push_back(e);
  }
  return out;
}

LearnerConfig Config() {
  LearnerConfig c;
  c.model = "unused";
  c.learning_rate = 0.05;
  c.warmup_ratio = 0;
  c.loss.eta = 2;
  c.max_length = 16;
  c.max_prompt_length = 8;
  return c;
}

TEST(TrainerTest, StepsLowerTheLossAndMoveTheRightLogRatios) {
  for (auto kind : {LossKind::kSppo, LossKind::kSppoAllK, LossKind::kGpo, LossKind::kDpo}) {
    BigramPolicy policy(1);
    LearnerConfig c = Config();
    c.loss.kind = kind;
    c.optimizer = kind == LossKind::kDpo ? "adamw" : "rmsprop";
    PolicyTrainer trainer(&policy, c, nullptr);
    ASSERT_TRUE(trainer.BeginIteration(20).ok());
    auto batch = Batch(4, 0);
    auto first = trainer.Step(batch);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    double last = first->loss;
    for (int i = 0; i < 15; ++i) {
      auto s = trainer.Step(batch);
      ASSERT_TRUE(s.ok());
      last = s->loss;
    }
    EXPECT_LT(last, first->loss * 0.8) << LossKindName(kind);
    EXPECT_EQ(trainer.step(), 16);
  }
}

TEST(TrainerTest, GradientAccumulationEqualsOneBigBatch) {
  BigramPolicy a(3), b(3);
  LearnerConfig one = Config(), acc = Config();
  acc.grad_accumulation = 2;
  PolicyTrainer ta(&a, one, nullptr), tb(&b, acc, nullptr);
  ASSERT_TRUE(ta.BeginIteration(10).ok());
  ASSERT_TRUE(tb.BeginIteration(10).ok());
  auto batch = Batch(4, 0);
  auto sa = ta.Step(batch);
  auto sb = tb.Step(batch);
  ASSERT_TRUE(sa.ok() && sb.ok());
  EXPECT_NEAR(sa->loss, sb->loss, 1e-10);
  EXPECT_TRUE(torch::allclose(a.Flat(), b.Flat(), 1e-10, 1e-10));
}

TEST(TrainerTest, OptimizerStateResumesExactly) {
  testing::TempDir dir;
  BigramPolicy straight(5), resumed(5);
  // The reference pi_t must not move on resume: take it from the examples
  // (the generator's log-probs), as a restarted learner would from pi_t.
  LearnerConfig c = Config();
  c.reference = "generator_logprobs";
  auto Batch = [](int groups, int offset) {
    auto b = ::spar::Batch(groups, offset);
    for (auto& e : b) e.ref_logprobs = {{-1, -1, -1}, {-2, -2}, {-3}};
    return b;
  };
  PolicyTrainer t1(&straight, c, nullptr);
  ASSERT_TRUE(t1.BeginIteration(10).ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(t1.Step(Batch(3, i)).ok());

  PolicyTrainer t2(&resumed, c, nullptr);
  ASSERT_TRUE(t2.BeginIteration(10).ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(t2.Step(Batch(3, i)).ok());
  const std::string state = (dir.path() / "optimizer.pt").string();
  ASSERT_TRUE(t2.SaveOptimizer(state).ok());
  // A fresh trainer (as after a restart) on the same weights.
  PolicyTrainer t3(&resumed, c, nullptr);
  ASSERT_TRUE(t3.BeginIteration(10).ok());
  ASSERT_TRUE(t3.LoadOptimizer(state).ok());
  for (int i = 2; i < 4; ++i) ASSERT_TRUE(t3.Step(Batch(3, i)).ok());
  EXPECT_TRUE(torch::allclose(straight.Flat(), resumed.Flat(), 1e-12, 1e-12));
  EXPECT_EQ(t3.LoadOptimizer((dir.path() / "missing.pt").string()).code(), StatusCode::kDataLoss);
}


// Worker for the two-rank test: each rank trains on its half and writes
// its final weights.
TEST(TrainerRankWorker, Rank) {
  const char* rank = std::getenv("SPAR_TRAIN_RANK");
  if (!rank) GTEST_SKIP() << "only runs as a worker process";
  DataParallelOptions o;
  o.rank = std::atoi(rank);
  o.world_size = 2;
  o.store_address = std::getenv("SPAR_TRAIN_STORE");
  o.timeout = std::chrono::seconds(60);
  auto group = DataParallelGroup::Create(o);
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  BigramPolicy policy(7 + o.rank);  // different init: the broadcast must fix it
  PolicyTrainer trainer(&policy, Config(), group->get());
  ASSERT_TRUE(trainer.BeginIteration(10).ok());
  for (int step = 0; step < 3; ++step) {
    auto full = Batch(4, step * 4);
    std::vector<LearnerExample> half(full.begin() + 2 * o.rank, full.begin() + 2 * o.rank + 2);
    ASSERT_TRUE(trainer.Step(half).ok());
  }
  torch::save(policy.Flat(), std::string(std::getenv("SPAR_TRAIN_OUT")) + "/rank" + rank + ".pt");
}

TEST(TrainerTest, TwoGlooRanksEqualOneRankWithTheDoubledBatch) {
  testing::TempDir dir;
  const std::string store = "127.0.0.1:" + std::to_string(*FreeLoopbackPort());
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::unique_ptr<testing::ChildProcess>> ranks;
  for (int r = 0; r < 2; ++r) {
    setenv("SPAR_TRAIN_RANK", std::to_string(r).c_str(), 1);
    setenv("SPAR_TRAIN_STORE", store.c_str(), 1);
    setenv("SPAR_TRAIN_OUT", dir.str().c_str(), 1);
    ranks.push_back(std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{self, "--gtest_filter=TrainerRankWorker.Rank"},
        (dir.path() / ("rank" + std::to_string(r) + ".log")).string()));
  }
  unsetenv("SPAR_TRAIN_RANK");
  unsetenv("SPAR_TRAIN_STORE");
  unsetenv("SPAR_TRAIN_OUT");
  for (int r = 0; r < 2; ++r) {
    int status = -1;
    for (int i = 0; i < 1200 && status == -1; ++i) status = ranks[r]->Stop(0, std::chrono::milliseconds(100));
    ASSERT_TRUE(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << testing::ReadFile(dir.path() / ("rank" + std::to_string(r) + ".log"));
  }
  // One rank, whole batches, starting from rank 0's initial weights.
  BigramPolicy single(7);
  PolicyTrainer trainer(&single, Config(), nullptr);
  ASSERT_TRUE(trainer.BeginIteration(10).ok());
  for (int step = 0; step < 3; ++step) ASSERT_TRUE(trainer.Step(Batch(4, step * 4)).ok());
  for (int r = 0; r < 2; ++r) {
    torch::Tensor w;
    torch::load(w, (dir.path() / ("rank" + std::to_string(r) + ".pt")).string());
    EXPECT_TRUE(torch::allclose(w, single.Flat(), 1e-9, 1e-9)) << "rank " << r;
  }
}

}  // namespace
}  // namespace spar
