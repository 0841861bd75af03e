#include "services/learner/learner_core.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "tests/services/learner/bigram_policy.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

LearnerExample Example(int i, size_t k = 3) {
  LearnerExample e;
  e.prompt_id = "p" + std::to_string(i);
  e.prompt_ids = {1, static_cast<int32_t>(2 + i % 7)};
  for (size_t r = 0; r < k; ++r) e.responses.push_back({static_cast<int32_t>(10 + r), 11});
  for (size_t r = 0; r < k; ++r) e.win_rates.push_back(r == 0 ? 0.8 : 0.4);
  return e;
}

class LearnerCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.model = (dir_.path() / "pi0").string();
    config_.output_dir = (dir_.path() / "ckpt").string();
    config_.batch_groups = 4;
    config_.learning_rate = 0.05;
    config_.loss.eta = 2;
    config_.max_length = 16;
    config_.max_prompt_length = 8;
    std::filesystem::create_directories(config_.model);
    BigramPolicy init(11);
    ASSERT_TRUE(init.Save(config_.model).ok());
    testing::WriteFile(std::filesystem::path(config_.model) / "config.json", "{}");
  }
  testing::TempDir dir_;
  LearnerConfig config_;
};

TEST_F(LearnerCoreTest, IterationTrainsCheckpointsAndRejectsBadExamples) {
  auto policy = std::make_unique<BigramPolicy>(11);
  BigramPolicy* raw = policy.get();
  torch::Tensor before = raw->Flat().clone();
  auto core = LearnerCore::Create(config_, std::move(policy), nullptr);
  ASSERT_TRUE(core.ok());
  ASSERT_TRUE((*core)->StartIteration(0, 10).ok());
  std::vector<LearnerExample> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(Example(i));
  LearnerExample bad = Example(99);
  bad.responses[1] = {500};  // >= vocab 32
  batch.push_back(bad);
  LearnerExample one = Example(98, 1);
  batch.push_back(one);
  auto outcome = (*core)->Submit(batch);
  EXPECT_EQ(outcome.accepted, 10u);
  ASSERT_EQ(outcome.rejected.size(), 2u);
  EXPECT_EQ(outcome.rejected[0].first, "p99");
  EXPECT_NE(outcome.rejected[0].second.find("responses[1][0] = 500"), std::string::npos);
  EXPECT_NE(outcome.rejected[1].second.find("K >= 2"), std::string::npos);

  auto finished = (*core)->FinishIteration(0, {}, "");
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_EQ(finished->policy_version, 1u);
  EXPECT_EQ(finished->progress.examples_seen, 10u);
  EXPECT_FALSE(torch::allclose(before, raw->Flat()));
  EXPECT_TRUE(std::filesystem::exists(finished->checkpoint_dir + "/spar_learner_state.json"));
  EXPECT_TRUE(std::filesystem::exists(finished->checkpoint_dir + "/optimizer.pt"));
  EXPECT_EQ(finished->checkpoint_dir, config_.output_dir + "/iter-0");
  // Finishing twice, or submitting with no iteration open, is refused.
  EXPECT_EQ((*core)->FinishIteration(0, {}, "").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*core)->Submit({Example(1)}).rejected.size(), 1u);
}

TEST_F(LearnerCoreTest, RestartingAnIterationTrainsFromPiT) {
  // Run iteration 0 twice: the second run must start from pi_0 again and
  // end with the same weights as the first.
  auto run = [&](LearnerCore* core) {
    EXPECT_TRUE(core->StartIteration(0, 8).ok());
    std::vector<LearnerExample> batch;
    for (int i = 0; i < 8; ++i) batch.push_back(Example(i));
    EXPECT_EQ(core->Submit(batch).accepted, 8u);
  };
  auto a_policy = std::make_unique<BigramPolicy>(11);
  BigramPolicy* a = a_policy.get();
  auto core = LearnerCore::Create(config_, std::move(a_policy), nullptr);
  ASSERT_TRUE(core.ok());
  run(core->get());
  // "Crash" of the orchestrator: it starts iteration 0 again.
  run(core->get());
  ASSERT_TRUE((*core)->FinishIteration(0, {}, "").ok());

  auto b_policy = std::make_unique<BigramPolicy>(11);
  BigramPolicy* b = b_policy.get();
  LearnerConfig other = config_;
  other.output_dir = (dir_.path() / "ckpt-b").string();
  auto straight = LearnerCore::Create(other, std::move(b_policy), nullptr);
  run(straight->get());
  ASSERT_TRUE((*straight)->FinishIteration(0, {}, "").ok());
  EXPECT_TRUE(torch::allclose(a->Flat(), b->Flat(), 1e-12, 1e-12));
}

TEST_F(LearnerCoreTest, RetriedFinishAfterAFailedPublicationOnlyPublishes) {
  // A generator down the chain fails the publication; the orchestrator
  // retries FinishIteration. Training again (here: the second epoch) would
  // publish other weights under the same version, so the retry must not.
  config_.epochs = 2;
  auto policy = std::make_unique<BigramPolicy>(11);
  BigramPolicy* raw = policy.get();
  auto core = LearnerCore::Create(config_, std::move(policy), nullptr);
  ASSERT_TRUE(core.ok());
  ASSERT_TRUE((*core)->StartIteration(0, 8).ok());
  std::vector<LearnerExample> batch;
  for (int i = 0; i < 8; ++i) batch.push_back(Example(i));
  ASSERT_EQ((*core)->Submit(batch).accepted, 8u);
  auto failed = (*core)->FinishIteration(0, {"127.0.0.1:1"}, "");
  ASSERT_FALSE(failed.ok());
  const torch::Tensor trained = raw->Flat().clone();
  const int64_t steps = (*core)->Progress().step;
  auto retried = (*core)->FinishIteration(0, {}, "");
  ASSERT_TRUE(retried.ok()) << retried.status().ToString();
  EXPECT_EQ(retried->policy_version, 1u);
  EXPECT_TRUE(torch::equal(trained, raw->Flat()));
  EXPECT_EQ(retried->progress.step, steps);
  EXPECT_TRUE(std::filesystem::exists(retried->checkpoint_dir + "/spar_learner_state.json"));
}

TEST_F(LearnerCoreTest, PublishEveryStepsIsRefusedWithGeneratorLogprobsOrNccl) {
  config_.publish_every_steps = 2;
  config_.reference = "generator_logprobs";
  auto refused = LearnerCore::Create(config_, std::make_unique<BigramPolicy>(11), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("learner.publish_every_steps"), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("reference: frozen_copy"), std::string::npos);
  config_.reference = "frozen_copy";
  config_.weight_sync = "nccl";
  refused = LearnerCore::Create(config_, std::make_unique<BigramPolicy>(11), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("weight_sync: grpc"), std::string::npos) << refused.status().ToString();

  auto parse = [](const std::string& yaml, LearnerConfig* c) -> Status {
    auto root = ConfigNode::LoadString(yaml, "l.yaml");
    if (!root.ok()) return root.status();
    return ReadLearnerConfig(root->Child("learner"), c);
  };
  LearnerConfig c;
  Status s = parse("learner: {model: m, publish_every_steps: 4, reference: generator_logprobs}", &c);
  EXPECT_NE(s.message().find("learner.publish_every_steps: must be 0 with reference: generator_logprobs"),
            std::string::npos)
      << s.ToString();
  LearnerConfig ok;
  ASSERT_TRUE(parse("learner: {model: m, publish_every_steps: 4}", &ok).ok());
  EXPECT_EQ(ok.publish_every_steps, 4);
}

TEST_F(LearnerCoreTest, AFailedIntermediatePublicationIsCountedAndTrainingGoesOn) {
  config_.publish_every_steps = 1;
  auto policy = std::make_unique<BigramPolicy>(11);
  BigramPolicy* raw = policy.get();
  torch::Tensor before = raw->Flat().clone();
  auto core = LearnerCore::Create(config_, std::move(policy), nullptr);
  ASSERT_TRUE(core.ok()) << core.status().ToString();
  EXPECT_EQ((*core)->StartIteration(0, 8, {"127.0.0.1:50071", ""}).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*core)->StartIteration(0, 8, {"127.0.0.1:1"}).ok());  // nothing listens there
  std::vector<LearnerExample> batch;
  for (int i = 0; i < 8; ++i) batch.push_back(Example(i));
  ASSERT_EQ((*core)->Submit(batch).accepted, 8u);
  // Two steps of 4, each followed by a publication that fails.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while ((*core)->Progress().intermediate_publish_failures < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  LearnerProgressSnapshot p = (*core)->Progress();
  EXPECT_EQ(p.step, 2);
  EXPECT_EQ(p.intermediate_publish_failures, 2u);
  EXPECT_EQ(p.intermediate_publications, 0u);
  EXPECT_EQ(p.policy_version, 0u);
  EXPECT_EQ(p.policy_revision, 0u);
  auto finished = (*core)->FinishIteration(0, {}, "");
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_EQ(finished->policy_version, 1u);
  EXPECT_FALSE(torch::allclose(before, raw->Flat()));
}

}  // namespace
}  // namespace spar
