// The NCCL weight broadcast on real GPUs (label gpu): rank 0 sends device
// tensors, ranks 1.. receive them byte for byte after the handshake; a
// receiver that refuses leaves everyone on the old version. Ranks are
// threads, one GPU each (NCCL allows one rank per GPU in a communicator),
// so it needs two GPUs and skips otherwise.
#include <cuda_runtime.h>

#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "common/net.h"
#include "services/weights/nccl_broadcast.h"

namespace spar {
namespace {

int GpuCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}


TEST(NcclBroadcastGpuTest, DeviceTensorsReachEveryRankAfterTheHandshake) {
  if (!NcclBroadcastAvailable()) GTEST_SKIP() << "built without NCCL";
  const int gpus = GpuCount();
  if (gpus < 2) GTEST_SKIP() << "needs 2 GPUs (one NCCL rank per GPU), found " << gpus;
  const int world = std::min(gpus, 4);
  const std::string address = "127.0.0.1:" + std::to_string(*FreeLoopbackPort());
  // Host copies of the weights, and the same on GPU 0 for the sender.
  std::mt19937 rng(5);
  std::vector<std::vector<float>> host;
  for (int64_t n : {1000, 70000, 3, 1 << 20}) {
    host.emplace_back(static_cast<size_t>(n));
    for (auto& x : host.back()) x = static_cast<float>(rng() % 1000) / 7.0f;
  }
  std::vector<StagedWeights> received(static_cast<size_t>(world));
  std::vector<Status> status(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      NcclGroupOptions o;
      o.rendezvous = address;
      o.rank = r;
      o.world_size = world;
      o.cuda_device = r;
      o.bucket_bytes = 1 << 20;  // several buckets, one oversized tensor
      o.timeout = std::chrono::seconds(60);
      auto group = NcclWeightGroup::Join(o);
      if (!group.ok()) {
        status[static_cast<size_t>(r)] = group.status();
        return;
      }
      if (r == 0) {
        cudaSetDevice(0);
        std::vector<void*> device;
        std::vector<WeightTensorView> views;
        for (size_t i = 0; i < host.size(); ++i) {
          void* p = nullptr;
          cudaMalloc(&p, host[i].size() * 4);
          cudaMemcpy(p, host[i].data(), host[i].size() * 4, cudaMemcpyHostToDevice);
          device.push_back(p);
          views.push_back({"w" + std::to_string(i), "F32", {static_cast<int64_t>(host[i].size())}, p, host[i].size() * 4});
        }
        auto sent = (*group)->Send(1, views);
        status[0] = sent.ok() ? Status::Ok() : sent.status();
        for (void* p : device) cudaFree(p);
      } else {
        auto next = (*group)->NextVersion(0, std::chrono::seconds(60));
        if (!next.ok()) {
          status[static_cast<size_t>(r)] = next.status();
          return;
        }
        auto got = (*group)->Receive(*next);
        status[static_cast<size_t>(r)] = got.ok() ? Status::Ok() : got.status();
        if (got.ok()) received[static_cast<size_t>(r)] = std::move(*got);
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) ASSERT_TRUE(status[static_cast<size_t>(r)].ok()) << r << ": " << status[static_cast<size_t>(r)].ToString();
  for (int r = 1; r < world; ++r) {
    EXPECT_EQ(received[static_cast<size_t>(r)].version, 1u);
    for (size_t i = 0; i < host.size(); ++i) {
      const auto& t = received[static_cast<size_t>(r)].tensors.at("w" + std::to_string(i));
      ASSERT_EQ(t.bytes.size(), host[i].size() * 4);
      EXPECT_EQ(std::memcmp(t.bytes.data(), host[i].data(), t.bytes.size()), 0) << "rank " << r << " w" << i;
    }
  }
}

}  // namespace
}  // namespace spar
