// The generator's NCCL weight-broadcast receiver stops promptly and joins
// its thread wherever that thread waits: before the learner's rendezvous
// exists, and inside it while waiting for the learner's NCCL id. Both run
// without a GPU (the thread does not touch CUDA before it has the id),
// against a real c10d TCPStore, with the group's timeout far beyond what the
// test allows. Without a usable GPU, the id arriving ends the thread.
#include "services/generator/weight_broadcast_receiver.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/net.h"
#include "services/weights/nccl_broadcast.h"
#include "tests/services/generator/generator_test_env.h"

namespace spar::testing {
namespace {

double StopSeconds(std::unique_ptr<WeightBroadcastReceiver>& receiver) {
  const auto start = std::chrono::steady_clock::now();
  receiver.reset();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

GeneratorBroadcastConfig Config(int port) {
  GeneratorBroadcastConfig c;
  c.enabled = true;
  c.rendezvous = "127.0.0.1:" + std::to_string(port);
  c.rank = 1;
  c.world_size = 2;
  c.timeout_s = 600;  // the old receiver was detached and left to this
  return c;
}

TEST(WeightBroadcastReceiverTest, StopsPromptlyBeforeAndDuringTheRendezvous) {
  SPAR_REQUIRE_TINY_MODEL();
  auto gen = StartGenerator(TinyGeneratorConfig("gen-broadcast"));
  ASSERT_NE(gen, nullptr);
  GeneratorBroadcastConfig disabled;
  EXPECT_EQ(WeightBroadcastReceiver::Start(disabled, gen->core.get()).status().code(), StatusCode::kInvalidArgument);
  auto port = FreeLoopbackPort();
  ASSERT_TRUE(port.ok());
  if (!NcclBroadcastAvailable()) {
    EXPECT_EQ(WeightBroadcastReceiver::Start(Config(*port), gen->core.get()).status().code(),
              StatusCode::kUnimplemented);
    GTEST_SKIP() << "no NCCL in this build: the receiver cannot start";
  }

  // Nothing serves the rendezvous yet: the thread retries connecting.
  auto receiver = WeightBroadcastReceiver::Start(Config(*port), gen->core.get());
  ASSERT_TRUE(receiver.ok()) << receiver.status().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE((*receiver)->running());
  EXPECT_LT(StopSeconds(*receiver), 3.0);

  // The learner's store is up but it never puts its NCCL id: the thread
  // waits for that key.
  auto store = ConnectTcpStore("127.0.0.1:" + std::to_string(*port), 0, 2, std::chrono::seconds(30));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  receiver = WeightBroadcastReceiver::Start(Config(*port), gen->core.get());
  ASSERT_TRUE(receiver.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_TRUE((*receiver)->running());
  EXPECT_LT(StopSeconds(*receiver), 3.0);
  EXPECT_EQ(gen->core->policy_version(), 0u);

  if (!torch::cuda::is_available()) {
    // The id arrives, but there is no GPU to join with: the thread ends by
    // itself (no retry loop) and Stop() has nothing left to wait for.
    receiver = WeightBroadcastReceiver::Start(Config(*port), gen->core.get());
    ASSERT_TRUE(receiver.ok());
    ASSERT_TRUE((*store)->Set("spar/nccl_unique_id", std::string(128, '\x01')).ok());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((*receiver)->running() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE((*receiver)->running());
    EXPECT_LT(StopSeconds(*receiver), 0.5);
  }
}

TEST(WeightBroadcastReceiverTest, HandshakeWaitsEndWhenCancelled) {
  auto store = NewInMemoryStore();
  std::atomic<bool> cancel{false};
  HandshakeReceiver receiver(store.get(), 1, std::chrono::minutes(10), &cancel);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    cancel = true;
  });
  const auto start = std::chrono::steady_clock::now();
  auto manifest = receiver.AwaitManifest(3);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stopper.join();
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(manifest.status().code(), StatusCode::kCancelled) << manifest.status().ToString();
  EXPECT_LT(waited, 2.0);
  // Without a cancel flag a key that exists is read at once, one that does
  // not is DeadlineExceeded after the timeout.
  ASSERT_TRUE(store->Set("k", "v").ok());
  auto got = GetUnlessCancelled(store.get(), "k", std::chrono::seconds(1), nullptr);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "v");
  EXPECT_EQ(GetUnlessCancelled(store.get(), "none", std::chrono::milliseconds(600), &cancel).status().code(),
            StatusCode::kCancelled);
  cancel = false;
  EXPECT_EQ(GetUnlessCancelled(store.get(), "none", std::chrono::milliseconds(600), &cancel).status().code(),
            StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace spar::testing
