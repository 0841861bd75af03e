// The orchestrator's learner client against the real Learner service over
// loopback gRPC (on a small LibTorch policy).
#include <filesystem>

#include <gtest/gtest.h>

#include "orchestrator/clients.h"
#include "services/common/server.h"
#include "services/learner/learner_service.h"
#include "tests/services/learner/bigram_policy.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

TEST(LearnerServiceTest, IterationOverLoopbackGrpc) {
  testing::TempDir dir;
  LearnerConfig config;
  config.model = (dir.path() / "pi0").string();
  config.output_dir = (dir.path() / "ckpt").string();
  config.batch_groups = 2;
  config.learning_rate = 0.05;
  config.max_length = 16;
  config.max_prompt_length = 8;
  auto core = LearnerCore::Create(config, std::make_unique<BigramPolicy>(3), nullptr);
  ASSERT_TRUE(core.ok());
  LearnerService service(core->get());
  auto server = StartGrpcServer({}, {&service});
  ASSERT_TRUE(server.ok());
  auto client = MakeGrpcLearnerClient(server->address);

  ASSERT_TRUE(client->StartIteration(0, 5, std::chrono::seconds(30)).ok());
  std::vector<RolloutGroup> groups;
  std::vector<ScoreRecord> scores;
  for (int i = 0; i < 5; ++i) {
    RolloutGroup g;
    g.prompt_index = static_cast<uint64_t>(i);
    g.prompt_id = "p" + std::to_string(i);
    g.prompt_token_ids = {1, 2};
    for (uint32_t s = 0; s < 3; ++s) {
      RolloutRecord r;
      r.sample_index = s;
      r.token_ids = {static_cast<int32_t>(5 + s), 6};
      r.logprobs = {-1.0f, -1.0f};
      g.rollouts.push_back(r);
    }
    if (i == 4) g.rollouts[1].token_ids[0] = 999;  // not a token of this model
    ScoreRecord sc;
    sc.prompt_id = g.prompt_id;
    sc.k = 3;
    sc.win_rates = {0.7, 0.5, 0.3};
    sc.mean_scores = {0.1, 0, -0.1};
    groups.push_back(g);
    scores.push_back(sc);
  }
  std::vector<const RolloutGroup*> gp;
  std::vector<const ScoreRecord*> sp;
  for (int i = 0; i < 5; ++i) {
    gp.push_back(&groups[static_cast<size_t>(i)]);
    sp.push_back(&scores[static_cast<size_t>(i)]);
  }
  auto accepted = client->Submit(gp, sp, std::chrono::seconds(30));
  ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
  EXPECT_EQ(*accepted, 4u);  // the bad one is rejected, the rest train
  auto finished = client->FinishIteration(0, {}, "", std::chrono::seconds(60));
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_EQ(finished->policy_version, 1u);
  EXPECT_EQ(finished->progress.examples_seen, 4u);
  EXPECT_TRUE(std::filesystem::exists(finished->checkpoint_dir + "/optimizer.pt"));
  // Finishing an iteration that is not open is a clear error.
  auto again = client->FinishIteration(0, {}, "", std::chrono::seconds(10));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("learner at"), std::string::npos);
  server->server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace spar
