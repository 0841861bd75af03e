#include "services/weights/weight_stream.h"

#include <cstring>
#include <numeric>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>
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

// The serialized message, read back through a stream of `block`-byte
// buffers (as gRPC hands over its slices).
Result<v1::WeightStreamMessage::KindCase> ReadSerialized(WeightStreamAssembler& a,
                                                         const v1::WeightStreamMessage& msg, int block,
                                                         v1::WeightStreamMessage* small) {
  std::string bytes = msg.SerializeAsString();
  google::protobuf::io::ArrayInputStream in(bytes.data(), static_cast<int>(bytes.size()), block);
  return a.ReadMessage(&in, small);
}

TEST(WeightStreamTest, ReadMessageStagesBucketsStraightFromTheWireBytes) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(7, m.views, 100000);
  ASSERT_TRUE(writer.ok());
  auto buckets = AllBuckets(*writer);
  WeightStreamAssembler a;
  v1::WeightStreamMessage msg, small;
  *msg.mutable_header() = writer->Header();
  auto kind = ReadSerialized(a, msg, 1000, &small);
  ASSERT_TRUE(kind.ok()) << kind.status().ToString();
  ASSERT_EQ(*kind, v1::WeightStreamMessage::kHeader);
  ASSERT_TRUE(a.Begin(small.header()).ok());
  for (size_t i = 0; i < buckets.size(); ++i) {
    *msg.mutable_bucket() = buckets[i];
    // Odd block sizes put slice boundaries anywhere, also inside varints.
    kind = ReadSerialized(a, msg, i % 2 ? 4093 : 77, &small);
    ASSERT_TRUE(kind.ok()) << kind.status().ToString();
    EXPECT_EQ(*kind, v1::WeightStreamMessage::kBucket);
  }
  EXPECT_EQ(a.buckets_received(), buckets.size());
  *msg.mutable_commit() = *writer->Commit();
  kind = ReadSerialized(a, msg, 1 << 20, &small);
  ASSERT_TRUE(kind.ok());
  ASSERT_EQ(*kind, v1::WeightStreamMessage::kCommit);
  auto staged = a.Commit(small.commit());
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  for (const auto& v : m.views) {
    const auto& t = staged->tensors.at(v.name);
    ASSERT_EQ(t.bytes.size(), v.nbytes);
    EXPECT_EQ(std::memcmp(t.bytes.data(), v.data, v.nbytes), 0) << v.name;
  }

  // The next version lands in the same (recycled) buffers.
  const char* embed = staged->tensors.at("model.embed_tokens.weight").bytes.data();
  a.Recycle(std::move(*staged));
  auto next = WeightStreamWriter::Create(8, m.views, 100000);
  ASSERT_TRUE(a.Begin(next->Header()).ok());
  for (const auto& b : AllBuckets(*next)) ASSERT_TRUE(a.AddBucket(b).ok());
  auto again = a.Commit(*next->Commit());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tensors.at("model.embed_tokens.weight").bytes.data(), embed);
  EXPECT_EQ(std::memcmp(again->tensors.at("lm_head.weight").bytes.data(), m.views[3].data, m.views[3].nbytes), 0);
}

TEST(WeightStreamTest, ReadMessageRefusesCorruptAndMalformedBytesAndCanRetry) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(2, m.views, 100000);
  auto buckets = AllBuckets(*writer);
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(writer->Header()).ok());
  v1::WeightStreamMessage msg, small;
  *msg.mutable_bucket() = buckets[0];
  ASSERT_TRUE(ReadSerialized(a, msg, 512, &small).ok());
  // A flipped data byte: DataLoss, and the bucket is not counted...
  *msg.mutable_bucket() = buckets[1];
  (*msg.mutable_bucket()->mutable_data())[1234] ^= 0x10;
  auto bad = ReadSerialized(a, msg, 512, &small);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(a.buckets_received(), 1u);
  // ...so the intact bucket can follow, and the stream completes.
  for (size_t i = 1; i < buckets.size(); ++i) {
    *msg.mutable_bucket() = buckets[i];
    auto k = ReadSerialized(a, msg, 512, &small);
    ASSERT_TRUE(k.ok()) << i << ": " << k.status().ToString();
  }
  auto staged = a.Commit(*writer->Commit());
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(std::memcmp(staged->tensors.at("model.embed_tokens.weight").bytes.data(), m.views[0].data,
                        m.views[0].nbytes),
            0);

  // Bytes that are no WeightStreamMessage; a cut message.
  WeightStreamAssembler b;
  ASSERT_TRUE(b.Begin(writer->Header()).ok());
  std::string junk = "\x12\xff\xff\xff\x7f garbage";
  google::protobuf::io::ArrayInputStream junk_in(junk.data(), static_cast<int>(junk.size()));
  auto r = b.ReadMessage(&junk_in, &small);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  *msg.mutable_bucket() = buckets[0];
  std::string cut = msg.SerializeAsString();
  cut.resize(cut.size() / 2);
  google::protobuf::io::ArrayInputStream cut_in(cut.data(), static_cast<int>(cut.size()), 100);
  r = b.ReadMessage(&cut_in, &small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(b.buckets_received(), 0u);
  std::string empty;
  google::protobuf::io::ArrayInputStream empty_in(empty.data(), 0);
  EXPECT_EQ(b.ReadMessage(&empty_in, &small).status().code(), StatusCode::kInvalidArgument);
}

TEST(WeightStreamTest, ReadMessageAcceptsDataBeforeItsSlices) {
  // Legal protobuf (fields in any order), never what the writer sends.
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(3, m.views, 1 << 20);
  auto buckets = AllBuckets(*writer);
  ASSERT_EQ(buckets.size(), 1u);
  const auto& b = buckets[0];
  std::string bucket_bytes;
  {
    google::protobuf::io::StringOutputStream out(&bucket_bytes);
    google::protobuf::io::CodedOutputStream cos(&out);
    using WFL = google::protobuf::internal::WireFormatLite;
    WFL::WriteBytes(4, b.data(), &cos);
    WFL::WriteUInt64(5, b.checksum(), &cos);
    WFL::WriteUInt64(1, b.version(), &cos);
    for (const auto& s : b.tensors()) WFL::WriteBytes(3, s.SerializeAsString(), &cos);
    WFL::WriteUInt32(99, 12345, &cos);  // an unknown field is skipped
  }
  std::string msg_bytes;
  {
    google::protobuf::io::StringOutputStream out(&msg_bytes);
    google::protobuf::io::CodedOutputStream cos(&out);
    google::protobuf::internal::WireFormatLite::WriteBytes(2, bucket_bytes, &cos);
  }
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(writer->Header()).ok());
  google::protobuf::io::ArrayInputStream in(msg_bytes.data(), static_cast<int>(msg_bytes.size()), 333);
  v1::WeightStreamMessage small;
  auto k = a.ReadMessage(&in, &small);
  ASSERT_TRUE(k.ok()) << k.status().ToString();
  auto staged = a.Commit(*writer->Commit());
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(std::memcmp(staged->tensors.at("lm_head.weight").bytes.data(), m.views[3].data, m.views[3].nbytes), 0);
}

TEST(WeightStreamTest, SerializedBucketIsTheMessageBytesWithTheDataLeftInTheTensors) {
  Model m = MakeModel();
  // An empty tensor too: it has a slice but no data piece.
  m.storage.emplace_back();
  m.views.push_back({"model.empty", "F32", {0, 64}, m.storage.back().data(), 0});
  auto filled = WeightStreamWriter::Create(9, m.views, 100000, 4);
  auto framed = WeightStreamWriter::Create(9, m.views, 100000, 4);
  ASSERT_TRUE(filled.ok() && framed.ok());
  ASSERT_GE(framed->bucket_count(), 6u);
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(framed->Header()).ok());
  SerializedBucket bucket;  // reused across buckets
  for (uint32_t i = 0; i < framed->bucket_count(); ++i) {
    v1::WeightStreamMessage msg;
    filled->FillBucket(i, msg.mutable_bucket());
    framed->SerializeBucket(i, &bucket);
    std::string bytes = bucket.head;
    uint64_t data_bytes = 0;
    for (const auto& [data, size] : bucket.data) {
      ASSERT_GT(size, 0u);
      // Views into the tensors, not copies.
      bool inside = false;
      for (const auto& v : m.views)
        inside |= data >= static_cast<const char*>(v.data) &&
                  data + size <= static_cast<const char*>(v.data) + v.nbytes;
      EXPECT_TRUE(inside) << "bucket " << i;
      bytes.append(data, size);
      data_bytes += size;
    }
    bytes += bucket.tail;
    EXPECT_EQ(data_bytes, bucket.data_bytes);
    ASSERT_EQ(bytes, msg.SerializeAsString()) << "bucket " << i;
    google::protobuf::io::ArrayInputStream in(bytes.data(), static_cast<int>(bytes.size()), 1000);
    v1::WeightStreamMessage small;
    auto kind = a.ReadMessage(&in, &small);
    ASSERT_TRUE(kind.ok()) << kind.status().ToString();
    EXPECT_EQ(*kind, v1::WeightStreamMessage::kBucket);
  }
  auto commit = framed->Commit();
  ASSERT_TRUE(commit.ok());
  EXPECT_EQ(commit->manifest_checksum(), filled->Commit()->manifest_checksum());
  EXPECT_EQ(commit->revision(), 4u);
  auto staged = a.Commit(*commit);
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(staged->version, 9u);
  EXPECT_EQ(staged->revision, 4u);
  EXPECT_EQ(staged->tensors.at("model.empty").bytes.size(), 0u);
  EXPECT_EQ(std::memcmp(staged->tensors.at("lm_head.weight").bytes.data(), m.views[3].data, m.views[3].nbytes), 0);
}

TEST(WeightStreamTest, SerializeBucketCountsForTheCommitLikeFillBucket) {
  Model m = MakeModel();
  auto writer = WeightStreamWriter::Create(1, m.views, 100000);
  SerializedBucket bucket;
  for (uint32_t i = 0; i + 1 < writer->bucket_count(); ++i) writer->SerializeBucket(i, &bucket);
  EXPECT_EQ(writer->Commit().status().code(), StatusCode::kFailedPrecondition);
  writer->SerializeBucket(writer->bucket_count() - 1, &bucket);
  EXPECT_TRUE(writer->Commit().ok());
}

TEST(WeightStreamTest, RevisionMustMatchToResumeAndToCommit) {
  Model m = MakeModel();
  auto r1 = WeightStreamWriter::Create(3, m.views, 100000, 1);
  auto r2 = WeightStreamWriter::Create(3, m.views, 100000, 2);
  EXPECT_EQ(r1->Header().revision(), 1u);
  auto b1 = AllBuckets(*r1);
  auto b2 = AllBuckets(*r2);
  WeightStreamAssembler a;
  ASSERT_TRUE(a.Begin(r1->Header()).ok());
  ASSERT_TRUE(a.AddBucket(b1[0]).ok());
  // Resuming revision 1's stream with revision 2's header is refused...
  auto resume = r2->Header();
  resume.set_resume_from_bucket(1);
  Status s = a.Begin(resume);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("revision"), std::string::npos) << s.ToString();
  // ...the same revision resumes.
  resume = r1->Header();
  resume.set_resume_from_bucket(1);
  ASSERT_TRUE(a.Begin(resume).ok());
  for (size_t i = 1; i < b1.size(); ++i) ASSERT_TRUE(a.AddBucket(b1[i]).ok());
  // A commit naming another revision is refused, the right one goes through.
  auto wrong = *r1->Commit();
  wrong.set_revision(2);
  EXPECT_EQ(a.Commit(wrong).status().code(), StatusCode::kInvalidArgument);
  auto staged = a.Commit(*r1->Commit());
  ASSERT_TRUE(staged.ok()) << staged.status().ToString();
  EXPECT_EQ(staged->revision, 1u);
}

}  // namespace
}  // namespace spar
