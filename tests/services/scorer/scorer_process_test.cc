// `spar scorer` as its own process, reached over loopback gRPC.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include "services/common/server.h"
#include "spar/v1/scorer.grpc.pb.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

TEST(ScorerProcessTest, ServesTheRuleScorerAndStopsCleanly) {
  testing::TempDir dir;
  auto config = dir.path() / "spar.yaml";
  testing::WriteFile(config,
                     "log_level: warn\n"
                     "scorer:\n  kind: rule\n  listen: 127.0.0.1:0\n"
                     "  rule: {target_words: 2, reward_words: [yes]}\n");
  auto ready = (dir.path() / "ready").string();
  testing::ChildProcess scorer({testing::SparBinary(), "scorer", "--config", config.string(),
                                "--ready-file", ready},
                               (dir.path() / "scorer.log").string());
  std::string address = testing::WaitForFile(ready, std::chrono::seconds(30));
  ASSERT_FALSE(address.empty()) << testing::ReadFile(dir.path() / "scorer.log");

  auto stub = v1::PreferenceScorer::NewStub(MakeChannel(address));
  v1::ScoreRequest req;
  auto* g = req.add_groups();
  g->set_group_id("g");
  g->mutable_prompt()->set_text("Answer");
  g->add_responses("no no no no");
  g->add_responses("yes indeed");
  v1::ScoreResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status st = stub->Score(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_GT(resp.groups(0).matrix().win_rates(1), resp.groups(0).matrix().win_rates(0));

  int status = scorer.Stop(SIGTERM, std::chrono::seconds(10));
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(ScorerProcessTest, BadConfigExitsWithTheKeyNamed) {
  testing::TempDir dir;
  auto config = dir.path() / "spar.yaml";
  testing::WriteFile(config, "scorer:\n  kind: rule\n  rule: {target_words: -1}\n");
  std::string out;
  EXPECT_EQ(testing::RunProcess({testing::SparBinary(), "scorer", "--config", config.string()}, &out), 2);
  EXPECT_NE(out.find("scorer.rule.target_words"), std::string::npos) << out;
}

}  // namespace
}  // namespace spar
