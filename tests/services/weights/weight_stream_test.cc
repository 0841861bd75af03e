#include "services/weights/weight_stream.h"

#include <numeric>

#include <gtest/gtest.h>

namespace spar {
namespace {

struct Model {
  std::vector<std::vector<float>> storage;
  std::vector<WeightTensorView> views;
  void Add(const std::string& name, std::vector<int64_t> shape, float seed) {
    int64_t n = std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = seed + static_cast<float>(i) * 0.001f;
    storage.push_back(std::move(v));
    views.push_back({name, "F32", shape, storage.back().data(), static_cast<uint64_t>(n) * 4});
  }
};

Model MakeModel() {
  Model m;
  m.storage.reserve(8);
  m.Add("model.embed_tokens.weight", {1000, 64}, 1);  // 256 kB: split across buckets
  m.Add("model.norm.weight", {64}, 2);
  m.Add("model.layers.0.mlp.up_proj.weight", {128, 64}, 3);
  m.Add("lm_head.weight", {1000, 64}, 4);
  return m;
}

std::vector<v1::WeightBucket> AllBuckets(WeightStreamWriter& w) {
  std::vector<v1::WeightBucket> out(w.bucket_count());
  for (uint32_t i = 0; i < w.bucket_count(); ++i) w.FillBucket(i, &out[i]);
  return out;
}

TEST(WeightStreamTest, RoundTripWithTensorsSplitAcrossBuckets) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(7, m.views, 100000);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  EXPECT_GE(writer->bucket_count(), 6u);
  auto buckets = AllBuckets(*writer);
  auto commit = writer->Commit();
  ASSERT_TRUE(commit.ok());

  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(writer->Header()).ok());
  for (const auto& b : buckets) ASSERT_TRUE(a.AddBucket(b).ok());
  auto staged = a.Commit(*commit);
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(staged->version, 7u);
  ASSERT_EQ(staged->tensors.size(), 4u);
  for (size_t i = 0; i < m.views.size(); ++i) {
    const auto& t = staged->tensors.at(m.views[i].name);
    ASSERT_EQ(t.bytes.size(), m.views[i].nbytes);
    EXPECT_EQ(std::memcmp(t.bytes.data(), m.views[i].data, t.bytes.size()), 0) << m.views[i].name;
    EXPECT_EQ(t.shape, m.views[i].shape);
  }
  EXPECT_FALSE(a.active());
}

TEST(WeightStreamTest, CorruptBucketIsRejected) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(1, m.views, 100000);
  auto buckets = AllBuckets(*writer);
  buckets[2].mutable_data()->at(17) ^= 0x40;
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(writer->Header()).ok());
  ASSERT_TRUE(a.AddBucket(buckets[0]).ok());
  ASSERT_TRUE(a.AddBucket(buckets[1]).ok());
  Status s = a.AddBucket(buckets[2]);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("checksum"), std::string::npos);
}

TEST(WeightStreamTest, CutStreamNeverCommitsAndCanResume) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(3, m.views, 100000);
  auto buckets = AllBuckets(*writer);
  auto commit = *writer->Commit();
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(writer->Header()).ok());
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(a.AddBucket(buckets[i]).ok());
  // The stream breaks here: a commit now must fail.
  WeightStreamAssembler b = a;
  auto early = b.Commit(commit);
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.status().message().find("3 of"), std::string::npos);
  // Resume from bucket 3 on a new stream.
  auto header = writer->Header();
  header.set_resume_from_bucket(7);
  EXPECT_EQ(a.Begin(header).code(), StatusCode::kFailedPrecondition);
  header.set_resume_from_bucket(3);
  ASSERT_TRUE(a.Begin(header).ok());
  for (size_t i = 3; i < buckets.size(); ++i) ASSERT_TRUE(a.AddBucket(buckets[i]).ok());
  EXPECT_TRUE(a.Commit(commit).ok());
}

TEST(WeightStreamTest, MalformedStreamsAreRejectedWithReasons) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(5, m.views, 100000);
  auto buckets = AllBuckets(*writer);
  auto commit = *writer->Commit();
  auto begin = [&](WeightStreamAssembler& a) { ASSERT_TRUE(a.Begin(writer->Header()).ok()); };
  {
    WeightStreamAssembler a;
    begin(a);
    Status s = a.AddBucket(buckets[1]);
    EXPECT_NE(s.message().find("out of order"), std::string::npos) << s.ToString();
  }
  {
    WeightStreamAssembler a;
    begin(a);
    auto b = buckets[0];
    b.set_version(4);
    EXPECT_NE(a.AddBucket(b).message().find("version 4"), std::string::npos);
  }
  {
    WeightStreamAssembler a;
    begin(a);
    auto b = buckets[0];
    b.mutable_tensors(0)->set_nbytes(1u << 30);
    EXPECT_NE(a.AddBucket(b).message().find("outside the bucket"), std::string::npos);
  }
  {
    WeightStreamAssembler a;
    begin(a);
    for (const auto& b : buckets) ASSERT_TRUE(a.AddBucket(b).ok());
    auto bad = commit;
    bad.set_manifest_checksum(bad.manifest_checksum() + 1);
    auto r = a.Commit(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  }
  {
    WeightStreamAssembler a(1000);
    EXPECT_EQ(a.Begin(writer->Header()).code(), StatusCode::kResourceExhausted);
    WeightStreamAssembler never;
    EXPECT_EQ(never.AddBucket(buckets[0]).code(), StatusCode::kFailedPrecondition);
  }
  EXPECT_FALSE(WeightStreamWriter::Create(1, {}, 10).ok());
  auto dup = m.views;
  dup.push_back(dup[0]);
  EXPECT_FALSE(WeightStreamWriter::Create(1, dup, 10).ok());
  auto bad_shape = m.views;
  bad_shape[1].shape = {65};
  EXPECT_NE(WeightStreamWriter::Create(1, bad_shape, 10).status().message().find("model.norm.weight"),
            std::string::npos);
}

}  // namespace
}  // namespace spar
