#include "services/learner/batch.h"

#include <cmath>

#include <gtest/gtest.h>

namespace spar {
namespace {

LearnerExample Example(const std::string& id, std::vector<int32_t> prompt,
                       std::vector<std::vector<int32_t>> responses) {
  LearnerExample e;
  e.prompt_id = id;
  e.prompt_ids = std::move(prompt);
  e.responses = std::move(responses);
  for (size_t i = 0; i < e.responses.size(); ++i) e.win_rates.push_back(0.5);
  return e;
}

TEST(BatchTest, ValidationNamesTheProblem) {
  auto check = [](const LearnerExample& e, const std::string& fragment, bool gpo = false) {
    Status s = ValidateExample(e, 100, gpo);
    ASSERT_FALSE(s.ok()) << fragment;
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("'" + e.prompt_id + "'"), std::string::npos);
  };
  EXPECT_TRUE(ValidateExample(Example("ok", {1, 2}, {{3}, {4, 5}}), 100, false).ok());
  check(Example("one", {1}, {{3}}), "K >= 2");
  auto e = Example("vocab", {1}, {{3}, {100}});
  check(e, "responses[1][0] = 100");
  e = Example("nan", {1}, {{3}, {4}});
  e.win_rates[0] = std::nan("");
  check(e, "win_rates");
  e = Example("len", {1}, {{3}, {4}});
  e.win_rates.pop_back();
  check(e, "1 win_rates for 2 responses");
  check(Example("gpo", {1}, {{3}, {4}}), "mean_scores", true);
  e = Example("ref", {1}, {{3, 4}, {4}});
  e.ref_logprobs = {{-1}, {-1}};
  check(e, "1 ref_logprobs for 2 tokens");
  check(Example("empty", {1}, {{3}, {}}), "responses[1] is empty");
  check(Example("noprompt", {}, {{3}, {4}}), "prompt_token_ids is empty");
}

TEST(BatchTest, CollateTruncatesAndMasks) {
  CollateOptions o;
  o.max_length = 6;
  o.max_prompt_length = 3;
  o.pad_id = 0;
  auto e = Example("a", {11, 12, 13, 14, 15}, {{21, 22}, {31, 32, 33, 34, 35}});
  e.ref_logprobs = {{-1, -2}, {-1, -1, -1, -1, -1}};
  auto b = Collate({e}, o);
  ASSERT_EQ(b.input_ids.size(0), 2);
  // Prompt keeps its last 3 tokens; the long response is cut to 6 - 3 = 3.
  auto row1 = b.input_ids[1];
  std::vector<int64_t> want = {13, 14, 15, 31, 32, 33};
  for (int64_t t = 0; t < 6; ++t) EXPECT_EQ(row1[t].item<int64_t>(), want[static_cast<size_t>(t)]);
  // Row 0: prompt(3) + 2 response tokens, padded to 6.
  EXPECT_EQ(b.attention_mask[0].sum().item<int64_t>(), 5);
  // Loss positions: t = 2 predicts 21, t = 3 predicts 22.
  EXPECT_FLOAT_EQ(b.loss_mask[0][2].item<float>(), 1);
  EXPECT_FLOAT_EQ(b.loss_mask[0][3].item<float>(), 1);
  EXPECT_FLOAT_EQ(b.loss_mask[0].sum().item<float>(), 2);
  EXPECT_EQ(b.labels[0][2].item<int64_t>(), 21);
  EXPECT_EQ(b.labels[0][3].item<int64_t>(), 22);
  EXPECT_EQ(b.response_tokens, 5);
  // Reference sums follow the truncation.
  EXPECT_FLOAT_EQ(b.ref_logps[0][0].item<float>(), -3);
  EXPECT_FLOAT_EQ(b.ref_logps[0][1].item<float>(), -3);
}

TEST(BatchTest, LinearScheduleWithWarmup) {
  // 10 steps, 20% warm-up (2 steps): 0, 0.5, 1.0, then down to 0 at 10.
  EXPECT_DOUBLE_EQ(LinearWarmupLr(1.0, 0, 10, 0.2), 0.0);
  EXPECT_DOUBLE_EQ(LinearWarmupLr(1.0, 1, 10, 0.2), 0.5);
  EXPECT_DOUBLE_EQ(LinearWarmupLr(1.0, 2, 10, 0.2), 1.0);
  EXPECT_DOUBLE_EQ(LinearWarmupLr(1.0, 6, 10, 0.2), 0.5);
  EXPECT_DOUBLE_EQ(LinearWarmupLr(1.0, 10, 10, 0.2), 0.0);
}

}  // namespace
}  // namespace spar

#include "services/learner/learner_config.h"
#include "services/weights/nccl_broadcast.h"

namespace spar {
namespace {

TEST(LearnerConfigTest, SectionIsValidated) {
  auto parse = [](const std::string& yaml, LearnerConfig* c) -> Status {
    auto root = ConfigNode::LoadString(yaml, "l.yaml");
    if (!root.ok()) return root.status();
    return ReadLearnerConfig(root->Child("learner"), c);
  };
  LearnerConfig c;
  ASSERT_TRUE(parse("learner: {model: m, loss: gpo, eta: 500, optimizer: adamw}", &c).ok());
  EXPECT_EQ(c.loss.kind, LossKind::kGpo);
  EXPECT_DOUBLE_EQ(c.loss.eta, 500);
  EXPECT_EQ(c.address, c.listen);
  auto msg = [&](const std::string& yaml) {
    LearnerConfig fresh;
    return parse(yaml, &fresh).message();
  };
  EXPECT_NE(msg("learner: {loss: sppo}").find("learner.model"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, loss: ppo}").find("sppo, sppo_all_k, gpo, dpo"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, max_length: 10, max_prompt_length: 10}").find("max_prompt_length"),
            std::string::npos);
  EXPECT_NE(msg("learner: {model: m, world_size: 2, rank: 2}").find("learner.rank"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, device: tpu}").find("cuda:N"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, lr: 1}").find("unknown key"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, weight_sync: mpi}").find("grpc, nccl"), std::string::npos);
  EXPECT_NE(msg("learner: {model: m, nccl_rendezvous: nohost}").find("learner.nccl_rendezvous"), std::string::npos);
  LearnerConfig nccl;
  Status s = parse("learner: {model: m, weight_sync: nccl, nccl_world_size: 4}", &nccl);
  if (NcclBroadcastAvailable()) {
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(nccl.weight_sync, "nccl");
    EXPECT_EQ(nccl.nccl_world_size, 4);
  } else {
    EXPECT_NE(s.message().find("not in this build"), std::string::npos) << s.ToString();
  }
}

}  // namespace
}  // namespace spar
