#include "storage/export.h"

#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/test_support.h"

namespace spar {
namespace {

TEST(ExportTest, ScoredGroupsBecomeSppoPairs) {
  testing::TempDir dir;
  auto store = RunStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  PromptRecord p;
  p.iteration = 0;
  p.prompt_index = 0;
  p.prompt_id = "a";
  p.messages = {{"user", "Say hi"}};
  PromptRecord q = p;
  q.prompt_index = 1;
  q.prompt_id = "b";
  q.messages.clear();
  q.text = "Plain prompt";
  ASSERT_TRUE((*store)->PutPrompts({p, q}).ok());
  for (uint64_t index : {0, 1}) {
    RolloutGroup g;
    g.iteration = 0;
    g.prompt_index = index;
    g.prompt_id = index ? "b" : "a";
    for (uint32_t s = 0; s < 3; ++s) {
      RolloutRecord r;
      r.sample_index = s;
      r.text = "answer " + std::to_string(s);
      r.policy_version = 0;
      g.rollouts.push_back(r);
    }
    ASSERT_TRUE((*store)->PutGroup(g).ok());
  }
  ScoreRecord s;
  s.iteration = 0;
  s.prompt_index = 0;
  s.prompt_id = "a";
  s.k = 3;
  // Response 2 beats everything, response 0 loses to everything.
  s.probabilities = {0.5, 0.2, 0.1, 0.8, 0.5, 0.3, 0.9, 0.7, 0.5};
  s.win_rates = {(0.5 + 0.2 + 0.1) / 3, (0.8 + 0.5 + 0.3) / 3, (0.9 + 0.7 + 0.5) / 3};
  s.model = "rule";
  ASSERT_TRUE((*store)->PutScore(s).ok());

  std::ostringstream out;
  ExportStats stats;
  ASSERT_TRUE(ExportJsonl(**store, {}, out, &stats).ok());
  EXPECT_EQ(stats.groups_written, 1u);
  EXPECT_EQ(stats.groups_unscored, 1u);
  auto line = nlohmann::json::parse(out.str());
  EXPECT_EQ(line["prompt_id"], "a");
  EXPECT_EQ(line["responses"].size(), 3u);
  EXPECT_EQ(line["chosen"].back()["content"], "answer 2");
  EXPECT_EQ(line["rejected"].back()["content"], "answer 0");
  EXPECT_EQ(line["chosen"][0]["content"], "Say hi");
  EXPECT_DOUBLE_EQ(line["chosen_probs"].get<double>(), 0.9);
  EXPECT_DOUBLE_EQ(line["chosen_probs_win"].get<double>(), s.win_rates[2]);
  EXPECT_DOUBLE_EQ(line["chosen_probs_lose"].get<double>(), s.win_rates[0]);

  std::ostringstream all;
  ExportOptions options;
  options.include_unscored = true;
  ASSERT_TRUE(ExportJsonl(**store, options, all, &stats).ok());
  EXPECT_EQ(stats.groups_written, 2u);
  std::istringstream lines(all.str());
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  auto unscored = nlohmann::json::parse(second);
  EXPECT_EQ(unscored["prompt"], "Plain prompt");
  EXPECT_FALSE(unscored.contains("chosen"));
}

}  // namespace
}  // namespace spar
