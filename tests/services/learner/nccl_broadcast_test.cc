// The NCCL weight-broadcast group's CPU side: bucket plan, manifest codec,
// host pack/unpack, and the version handshake over an in-memory store and a
// real c10d TCPStore on loopback (several ranks as threads). The device
// path itself is covered by nccl_broadcast_gpu.cc (label gpu).
#include "services/weights/nccl_broadcast.h"

#include "common/net.h"

#include <unistd.h>

#include <cstring>
#include <future>
#include <random>
#include <thread>

#include <gtest/gtest.h>

namespace spar {
namespace {

using std::chrono::milliseconds;

TEST(NcclBucketPlanTest, PacksInOrderAlignedAndGivesBigTensorsTheirOwnBucket) {
  auto plan = PlanBuckets({100, 100, 300, 1000, 10}, 512);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->buckets.size(), 4u);
  ASSERT_EQ(plan->buckets[0].size(), 2u);
  EXPECT_EQ(plan->buckets[0][0].offset, 0u);
  EXPECT_EQ(plan->buckets[0][1].offset, 256u);  // aligned, not 100
  EXPECT_EQ(plan->bucket_bytes[0], 356u);
  EXPECT_EQ(plan->buckets[1][0].tensor, 2u);
  ASSERT_EQ(plan->buckets[2].size(), 1u);       // 1000 > 512: alone
  EXPECT_EQ(plan->bucket_bytes[2], 1000u);
  EXPECT_EQ(plan->largest_bucket(), 1000u);
  EXPECT_EQ(plan->buckets[3][0].tensor, 4u);
  EXPECT_FALSE(PlanBuckets({1}, 0).ok());
}

struct Weights {
  std::vector<std::vector<uint8_t>> data;
  std::vector<WeightTensorView> views;
};

Weights RandomWeights(uint32_t seed) {
  Weights w;
  std::mt19937 rng(seed);
  const std::vector<std::vector<int64_t>> shapes = {{3, 5}, {7}, {64, 9}, {2, 2, 2}, {300}};
  w.data.resize(shapes.size());
  for (size_t i = 0; i < shapes.size(); ++i) {
    int64_t n = 1;
    for (auto d : shapes[i]) n *= d;
    w.data[i].resize(static_cast<size_t>(n) * 4);
    for (auto& b : w.data[i]) b = static_cast<uint8_t>(rng());
    w.views.push_back({"t" + std::to_string(i), "F32", shapes[i], w.data[i].data(), w.data[i].size()});
  }
  return w;
}

TEST(NcclManifestTest, RoundTripsAndRejectsTampering) {
  auto w = RandomWeights(1);
  auto m = MakeManifest(7, w.views, 1024);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto back = DecodeManifest(EncodeManifest(*m));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->version, 7u);
  ASSERT_EQ(back->tensors.size(), 5u);
  EXPECT_EQ(back->tensors[2].shape, (std::vector<int64_t>{64, 9}));
  EXPECT_EQ(back->plan.buckets.size(), m->plan.buckets.size());
  EXPECT_EQ(back->plan.bucket_bytes, m->plan.bucket_bytes);

  auto tampered = [&](auto edit) {
    BroadcastManifest copy = *m;
    edit(copy);
    return DecodeManifest(EncodeManifest(copy)).status();
  };
  auto bad_index = tampered([](BroadcastManifest& c) { c.plan.buckets[0][0].tensor = 99; });
  EXPECT_EQ(bad_index.code(), StatusCode::kDataLoss);
  EXPECT_NE(bad_index.message().find("names tensor 99"), std::string::npos) << bad_index.message();
  auto twice = tampered([](BroadcastManifest& c) { c.plan.buckets.push_back(c.plan.buckets[0]); });
  EXPECT_NE(twice.message().find("buckets"), std::string::npos) << twice.message();
  auto dtype = tampered([](BroadcastManifest& c) { c.tensors[1].dtype = "F99"; });
  EXPECT_NE(dtype.message().find("unknown dtype F99"), std::string::npos) << dtype.message();
  auto size = tampered([](BroadcastManifest& c) { c.tensors[1].nbytes += 4; });
  EXPECT_EQ(size.code(), StatusCode::kDataLoss);
  auto misaligned = tampered([](BroadcastManifest& c) { c.plan.buckets[0].back().offset += 1; });
  EXPECT_NE(misaligned.message().find("misplaced"), std::string::npos) << misaligned.message();
  EXPECT_EQ(DecodeManifest("{not json").status().code(), StatusCode::kDataLoss);

  // The sender refuses nonsense before anything goes out.
  auto dup = w.views;
  dup[1].name = "t0";
  EXPECT_NE(MakeManifest(1, dup, 1024).status().message().find("given twice"), std::string::npos);
  auto wrong = w.views;
  wrong[0].nbytes = 3;
  EXPECT_FALSE(MakeManifest(1, wrong, 1024).ok());
}

TEST(NcclManifestTest, PackThenUnpackRestoresEveryByteAndMissingBucketsAreCaught) {
  auto w = RandomWeights(2);
  auto m = MakeManifest(3, w.views, 1024);
  ASSERT_TRUE(m.ok());
  ASSERT_GE(m->plan.buckets.size(), 2u);
  StagedWeights staged = NewStaging(*m);
  std::vector<uint8_t> bucket;
  for (uint32_t b = 0; b < m->plan.buckets.size(); ++b) {
    ASSERT_TRUE(PackBucket(*m, w.views, b, &bucket).ok());
    ASSERT_TRUE(UnpackBucket(*m, b, bucket.data(), bucket.size(), &staged).ok());
  }
  ASSERT_TRUE(CheckComplete(staged).ok());
  EXPECT_EQ(staged.version, 3u);
  for (size_t i = 0; i < w.views.size(); ++i) {
    const auto& st = staged.tensors.at(w.views[i].name);
    EXPECT_EQ(st.shape, w.views[i].shape);
    EXPECT_EQ(std::memcmp(st.bytes.data(), w.data[i].data(), w.data[i].size()), 0) << w.views[i].name;
  }
  // A short bucket, a bucket twice, and a missing bucket are errors.
  StagedWeights partial = NewStaging(*m);
  ASSERT_TRUE(PackBucket(*m, w.views, 0, &bucket).ok());
  EXPECT_EQ(UnpackBucket(*m, 0, bucket.data(), bucket.size() - 1, &partial).code(), StatusCode::kDataLoss);
  ASSERT_TRUE(UnpackBucket(*m, 0, bucket.data(), bucket.size(), &partial).ok());
  EXPECT_NE(UnpackBucket(*m, 0, bucket.data(), bucket.size(), &partial).message().find("received twice"),
            std::string::npos);
  Status incomplete = CheckComplete(partial);
  EXPECT_EQ(incomplete.code(), StatusCode::kDataLoss);
  EXPECT_NE(incomplete.message().find("bytes"), std::string::npos);
}

// Rank 0 and `receivers` ranks run one version's handshake; `refuse` (if
// > 0) is the rank whose data was bad, `absent` (if > 0) never answers.
struct HandshakeOutcome {
  Status sender;
  std::vector<Status> receivers;
};

HandshakeOutcome RunHandshake(std::vector<RendezvousStore*> stores, int refuse, int absent, milliseconds timeout) {
  const int world = static_cast<int>(stores.size());
  auto w = RandomWeights(3);
  auto m = *MakeManifest(5, w.views, 4096);
  HandshakeOutcome out;
  out.receivers.resize(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 1; r < world; ++r) {
    if (r == absent) continue;
    threads.emplace_back([&, r] {
      HandshakeReceiver receiver(stores[static_cast<size_t>(r)], r, timeout);
      auto manifest = receiver.AwaitManifest(5);
      if (!manifest.ok()) {
        out.receivers[static_cast<size_t>(r)] = manifest.status();
        return;
      }
      Status got = r == refuse ? DataLoss("bucket 1 checksum") : Status::Ok();
      out.receivers[static_cast<size_t>(r)] = receiver.AckAndAwaitDecision(5, got);
    });
  }
  HandshakeSender sender(stores[0], world, timeout);
  out.sender = sender.Announce(m);
  if (out.sender.ok()) out.sender = sender.Decide(5);
  for (auto& t : threads) t.join();
  return out;
}

TEST(NcclHandshakeTest, CommitOnlyWhenEveryReceiverConfirms) {
  auto store = NewInMemoryStore();
  std::vector<RendezvousStore*> stores(4, store.get());
  auto all = RunHandshake(stores, 0, 0, milliseconds(5000));
  EXPECT_TRUE(all.sender.ok()) << all.sender.ToString();
  for (int r = 1; r < 4; ++r) EXPECT_TRUE(all.receivers[static_cast<size_t>(r)].ok()) << r;

  auto fresh = NewInMemoryStore();
  std::vector<RendezvousStore*> again(4, fresh.get());
  auto refused = RunHandshake(again, 2, 0, milliseconds(5000));
  EXPECT_EQ(refused.sender.code(), StatusCode::kAborted);
  EXPECT_NE(refused.sender.message().find("rank 2 refused version 5: bucket 1 checksum"), std::string::npos)
      << refused.sender.ToString();
  // Everyone keeps the old version, the ranks whose data was fine included.
  for (int r = 1; r < 4; ++r) {
    EXPECT_EQ(refused.receivers[static_cast<size_t>(r)].code(), r == 2 ? StatusCode::kDataLoss : StatusCode::kAborted) << r;
  }

  auto third = NewInMemoryStore();
  std::vector<RendezvousStore*> missing(3, third.get());
  auto timed_out = RunHandshake(missing, 0, 2, milliseconds(300));
  EXPECT_EQ(timed_out.sender.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(timed_out.sender.message().find("rank 2 did not confirm"), std::string::npos);
  EXPECT_EQ(timed_out.receivers[1].code(), StatusCode::kAborted);
}


TEST(NcclHandshakeTest, OverARealTcpStore) {
  const std::string address = "127.0.0.1:" + std::to_string(*FreeLoopbackPort());
  auto server = ConnectTcpStore(address, 0, 3, milliseconds(10000));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto c1 = ConnectTcpStore(address, 1, 3, milliseconds(10000));
  auto c2 = ConnectTcpStore(address, 2, 3, milliseconds(10000));
  ASSERT_TRUE(c1.ok() && c2.ok());
  auto ok = RunHandshake({server->get(), c1->get(), c2->get()}, 0, 0, milliseconds(10000));
  EXPECT_TRUE(ok.sender.ok()) << ok.sender.ToString();
  EXPECT_TRUE(ok.receivers[1].ok() && ok.receivers[2].ok());
  auto decision = (*c1)->Get("spar/v5/decision", milliseconds(1000));
  ASSERT_TRUE(decision.ok());
  EXPECT_EQ(*decision, "commit");
  EXPECT_EQ((*c2)->Get("spar/v6/decision", milliseconds(50)).status().code(), StatusCode::kDeadlineExceeded);

  EXPECT_EQ(ConnectTcpStore("nocolon", 0, 2, milliseconds(100)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ConnectTcpStore("127.0.0.1:0x", 0, 2, milliseconds(100)).status().code(), StatusCode::kInvalidArgument);
}

TEST(NcclGroupTest, BadOptionsAreRefusedBeforeAnyRendezvous) {
  NcclGroupOptions o;
  o.world_size = 1;
  auto one = NcclWeightGroup::Join(o);
  EXPECT_FALSE(one.ok());
  if (!NcclBroadcastAvailable()) {
    EXPECT_EQ(one.status().code(), StatusCode::kUnimplemented);
    return;
  }
  EXPECT_EQ(one.status().code(), StatusCode::kInvalidArgument);
  o.world_size = 2;
  o.rank = 2;
  EXPECT_NE(NcclWeightGroup::Join(o).status().message().find("outside [0, 2)"), std::string::npos);
}

}  // namespace
}  // namespace spar
