#include "orchestrator/evaluation.h"

#include <atomic>

#include <gtest/gtest.h>

#include "tests/support/test_support.h"

namespace spar {
namespace {

// Answers `words` words per response; the judge below prefers more words.
class WordyGenerator : public GeneratorClient {
 public:
  explicit WordyGenerator(int words) : words_(words) {}
  const std::string& name() const override { return name_; }
  const std::string& address() const override { return name_; }
  Result<RolloutGroup> Generate(const PromptRecord& prompt, const GenerationConfig& config, uint64_t seed,
                                std::chrono::milliseconds) override {
    ++calls;
    RolloutGroup g;
    g.prompt_index = prompt.prompt_index;
    g.prompt_id = prompt.prompt_id;
    for (uint32_t s = 0; s < config.samples_per_prompt; ++s) {
      RolloutRecord r;
      r.sample_index = s;
      for (int w = 0; w < words_; ++w) r.text += "w" + std::to_string(seed % 7) + " ";
      g.rollouts.push_back(r);
    }
    return g;
  }
  Result<GeneratorState> State(std::chrono::milliseconds) override { return GeneratorState{}; }
  std::atomic<int> calls{0};

 private:
  std::string name_ = "wordy";
  int words_;
};

// P(i > j) = 1 when response i is longer, 0 when shorter, 1/2 on a tie.
class LengthJudge : public ScorerClient {
 public:
  const std::string& address() const override { return address_; }
  Result<std::vector<ScoreRecord>> Score(const std::vector<const PromptRecord*>&,
                                         const std::vector<const RolloutGroup*>& groups,
                                         std::chrono::milliseconds) override {
    std::vector<ScoreRecord> out;
    for (const auto* g : groups) {
      ScoreRecord s;
      s.prompt_id = g->prompt_id;
      s.k = static_cast<uint32_t>(g->rollouts.size());
      for (const auto& a : g->rollouts)
        for (const auto& b : g->rollouts)
          s.probabilities.push_back(a.text.size() > b.text.size() ? 1.0 : a.text.size() < b.text.size() ? 0.0 : 0.5);
      out.push_back(s);
    }
    return out;
  }

 private:
  std::string address_ = "judge";
};

std::vector<PromptRecord> Prompts(int n) {
  std::vector<PromptRecord> p(n);
  for (int i = 0; i < n; ++i) {
    p[i].prompt_index = i;
    p[i].prompt_id = "held-" + std::to_string(i);
    p[i].text = "prompt " + std::to_string(i);
  }
  return p;
}

TEST(CrossWinRateTest, AveragesNewAgainstOldPairsOnly) {
  // k = 4, new = {0, 1}, old = {2, 3}; only entries [0|1][2|3] count.
  std::vector<double> p = {0.5, 0.9, 1.0, 0.0,  //
                           0.1, 0.5, 0.5, 0.5,  //
                           0.0, 0.5, 0.5, 0.3,  //
                           1.0, 0.5, 0.7, 0.5};
  EXPECT_DOUBLE_EQ(CrossWinRate(p, 4, 2), (1.0 + 0.0 + 0.5 + 0.5) / 4);
  EXPECT_DOUBLE_EQ(CrossWinRate(p, 4, 4), 0.5);  // no old responses: no evidence
}

TEST(HeldOutEvaluatorTest, StoresPi0OnceAndJudgesLaterPolicies) {
  testing::TempDir dir;
  auto store = RunStore::Open((dir.path() / "store").string());
  ASSERT_TRUE(store.ok());
  GenerationConfig gen;
  gen.samples_per_prompt = 3;
  LengthJudge judge;
  WordyGenerator pi0(2);
  {
    HeldOutEvaluator e(store->get(), Prompts(4), {&pi0}, &judge, {gen, 5});
    ASSERT_TRUE(e.EnsureBaseline(0).ok());
    EXPECT_EQ(pi0.calls, 4);
    // pi_0 judged against itself: every pair ties.
    auto same = e.Judge(0);
    ASSERT_TRUE(same.ok());
    EXPECT_DOUBLE_EQ(same->win_rate, 0.5);
    EXPECT_EQ(same->prompts, 4u);
    EXPECT_EQ(same->comparisons, 4u * 3 * 3);
  }
  // A resumed run reads the stored baseline (no sampling of pi_0), and a
  // longer-winded policy wins every comparison.
  WordyGenerator better(5);
  HeldOutEvaluator resumed(store->get(), Prompts(4), {&better}, &judge, {gen, 5});
  ASSERT_TRUE(resumed.EnsureBaseline(2).ok());
  EXPECT_EQ(better.calls, 0);
  auto judged = resumed.Judge(2);
  ASSERT_TRUE(judged.ok()) << judged.status().ToString();
  EXPECT_DOUBLE_EQ(judged->win_rate, 1.0);
  EXPECT_EQ(judged->policy_version, 2u);

  // Another prompt set on the same store, or no baseline once training has
  // moved on, are errors that say so.
  HeldOutEvaluator fewer(store->get(), Prompts(3), {&better}, &judge, {gen, 5});
  EXPECT_EQ(fewer.EnsureBaseline(2).code(), StatusCode::kFailedPrecondition);
  testing::TempDir other;
  auto empty = RunStore::Open((other.path() / "store").string());
  ASSERT_TRUE(empty.ok());
  HeldOutEvaluator late(empty->get(), Prompts(2), {&better}, &judge, {gen, 5});
  EXPECT_EQ(late.EnsureBaseline(1).code(), StatusCode::kFailedPrecondition);
  // No held-out prompts: nothing to do.
  HeldOutEvaluator none(empty->get(), {}, {&better}, &judge, {gen, 5});
  EXPECT_TRUE(none.EnsureBaseline(1).ok());
  EXPECT_EQ(none.Judge(1)->prompts, 0u);
}

}  // namespace
}  // namespace spar
