#include "storage/records.h"

#include <gtest/gtest.h>

namespace spar {
namespace {

TEST(RecordsTest, RolloutRoundTrip) {
  RolloutRecord r;
  r.sample_index = 3;
  r.text = "héllo \xF0\x9F\x98\x80";
  r.token_ids = {1, -2, 128255};
  r.logprobs = {-0.5f, -1e-6f, -30.0f};
  r.finish_reason = FinishReasonCode::kLength;
  r.policy_version = 1ull << 40;
  r.generator_id = "g7";
  RolloutRecord back;
  ASSERT_TRUE(DecodeRollout(EncodeRollout(r), &back).ok());
  EXPECT_EQ(back.sample_index, 3u);
  EXPECT_EQ(back.text, r.text);
  EXPECT_EQ(back.token_ids, r.token_ids);
  EXPECT_EQ(back.logprobs, r.logprobs);
  EXPECT_EQ(back.finish_reason, FinishReasonCode::kLength);
  EXPECT_EQ(back.policy_version, r.policy_version);
  EXPECT_EQ(back.generator_id, "g7");
}

TEST(RecordsTest, RevisionRoundTripsAndRevisionZeroKeepsTheOriginalLayout) {
  RolloutRecord r;
  r.text = "t";
  r.token_ids = {5};
  r.logprobs = {-1.0f};
  r.policy_version = 2;
  r.generator_id = "g";
  const std::string original = EncodeRollout(r);  // revision 0
  RolloutRecord back;
  ASSERT_TRUE(DecodeRollout(original, &back).ok());
  EXPECT_EQ(back.policy_revision, 0u);
  r.policy_revision = 300;  // a two-byte varint
  const std::string revised = EncodeRollout(r);
  EXPECT_EQ(revised.substr(0, original.size()), original);
  ASSERT_TRUE(DecodeRollout(revised, &back).ok());
  EXPECT_EQ(back.policy_version, 2u);
  EXPECT_EQ(back.policy_revision, 300u);
  // Half a varint at the end is corrupt, not revision 0.
  EXPECT_EQ(DecodeRollout(revised.substr(0, revised.size() - 1), &back).code(), StatusCode::kDataLoss);
}

TEST(RecordsTest, EveryTruncationIsDataLossNeverACrash) {
  RolloutRecord r;
  r.text = "abc";
  r.token_ids = {1, 2, 3, 4};
  r.logprobs = {0, 0, 0, 0};
  std::string bytes = EncodeRollout(r);
  for (size_t n = 0; n < bytes.size(); ++n) {
    RolloutRecord out;
    Status s = DecodeRollout(std::string_view(bytes.data(), n), &out);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "length " << n;
  }
  std::string extra = bytes + "x";
  RolloutRecord out;
  EXPECT_EQ(DecodeRollout(extra, &out).code(), StatusCode::kDataLoss);
  // A huge array length must not allocate or read past the end.
  std::string huge = bytes.substr(0, 4) + std::string("\xff\xff\xff\xff\x0f", 5);
  EXPECT_EQ(DecodeRollout(huge, &out).code(), StatusCode::kDataLoss);
}

TEST(RecordsTest, WrongTypeOrVersionIsRejected) {
  PromptRecord p;
  p.prompt_id = "x";
  std::string bytes = EncodePrompt(p);
  RolloutRecord r;
  Status s = DecodeRollout(bytes, &r);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("record type"), std::string::npos);
  bytes[0] = 9;
  PromptRecord back;
  s = DecodePrompt(bytes, &back);
  EXPECT_NE(s.message().find("format version"), std::string::npos);
}

TEST(RecordsTest, ScoreAndMetricsRoundTrip) {
  ScoreRecord s;
  s.k = 2;
  s.probabilities = {0.5, 0.9, 0.1, 0.5};
  s.scores = {0, 0.2, -0.2, 0};
  s.win_rates = {0.7, 0.3};
  s.model = "gpm";
  ScoreRecord back;
  ASSERT_TRUE(DecodeScore(EncodeScore(s), &back).ok());
  EXPECT_EQ(back.probabilities, s.probabilities);
  EXPECT_EQ(back.win_rates, s.win_rates);
  EXPECT_TRUE(back.mean_scores.empty());

  MetricsPoint m;
  m.unix_micros = 123;
  m.source = "learner-0";
  m.values = {{"a", 1.5}, {"b", -2}};
  MetricsPoint mb;
  ASSERT_TRUE(DecodeMetrics(EncodeMetrics(m), &mb).ok());
  EXPECT_EQ(mb.values, m.values);
  EXPECT_EQ(mb.source, "learner-0");
}

}  // namespace
}  // namespace spar

namespace spar {
namespace {

TEST(RecordsTest, ScatterGatherPartsEqualTheEncodedRecord) {
  RolloutRecord r;
  r.sample_index = 300;
  r.text = std::string(200, 'x');
  r.token_ids = {5, 6, 7};
  r.logprobs = {-1, -2, -3};
  r.policy_version = 99999;
  r.generator_id = "a-rather-long-generator-identifier";
  r.policy_revision = 4;
  std::string scratch;
  std::string_view parts[kRolloutParts];
  EncodeRolloutParts(r, &scratch, parts);
  std::string joined;
  for (auto p : parts) joined.append(p.data(), p.size());
  EXPECT_EQ(joined, EncodeRollout(r));
}

}  // namespace
}  // namespace spar
