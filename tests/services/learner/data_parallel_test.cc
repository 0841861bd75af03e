// Two Gloo ranks as two processes: this binary re-runs itself as the
// workers (SPAR_DP_RANK set), each joining the group over loopback.
#include "services/learner/data_parallel.h"

#include "common/net.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {


// The worker: runs only when launched by the test below.
TEST(DataParallelWorker, Rank) {
  const char* rank_env = std::getenv("SPAR_DP_RANK");
  if (!rank_env) GTEST_SKIP() << "only runs as a worker process";
  DataParallelOptions o;
  o.rank = std::atoi(rank_env);
  o.world_size = 2;
  o.store_address = std::getenv("SPAR_DP_STORE");
  o.timeout = std::chrono::seconds(60);
  o.bucket_bytes = 64;  // force several buckets
  auto group = DataParallelGroup::Create(o);
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  // Gradients 1..n on rank 0 and 3..n+2 on rank 1 average to 2..n+1.
  std::vector<torch::Tensor> params;
  for (int i = 0; i < 5; ++i) {
    auto p = torch::zeros({7 + i}, torch::kFloat32).requires_grad_(true);
    p.mutable_grad() = torch::arange(7 + i, torch::kFloat32) + (o.rank == 0 ? 1.0 : 3.0);
    params.push_back(p);
  }
  ASSERT_TRUE((*group)->AllReduceGradients(params).ok());
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(torch::allclose(params[i].grad(), torch::arange(7 + i, torch::kFloat32) + 2.0));
  std::vector<torch::Tensor> values{torch::full({3}, static_cast<float>(o.rank == 0 ? 42 : -1))};
  ASSERT_TRUE((*group)->BroadcastFromRankZero(values).ok());
  EXPECT_TRUE(torch::allclose(values[0], torch::full({3}, 42.0f)));
  EXPECT_TRUE((*group)->Barrier().ok());
}

TEST(DataParallelTest, TwoGlooRanksAverageGradients) {
  testing::TempDir dir;
  const std::string store = "127.0.0.1:" + std::to_string(*FreeLoopbackPort());
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::unique_ptr<testing::ChildProcess>> ranks;
  for (int r = 0; r < 2; ++r) {
    setenv("SPAR_DP_RANK", std::to_string(r).c_str(), 1);
    setenv("SPAR_DP_STORE", store.c_str(), 1);
    ranks.push_back(std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{self, "--gtest_filter=DataParallelWorker.Rank"},
        (dir.path() / ("rank" + std::to_string(r) + ".log")).string()));
  }
  unsetenv("SPAR_DP_RANK");
  unsetenv("SPAR_DP_STORE");
  for (int r = 0; r < 2; ++r) {
    int status = -1;
    for (int i = 0; i < 1200 && status == -1; ++i) {
      status = ranks[r]->Stop(0, std::chrono::milliseconds(100));  // signal 0: just wait
    }
    ASSERT_NE(status, -1) << "rank " << r << " hung";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "rank " << r << ":\n" << testing::ReadFile(dir.path() / ("rank" + std::to_string(r) + ".log"));
  }
}

TEST(DataParallelTest, SingleRankNeedsNoNetworkAndBadOptionsAreErrors) {
  auto solo = DataParallelGroup::Create({});
  ASSERT_TRUE(solo.ok());
  std::vector<torch::Tensor> t{torch::ones({2})};
  EXPECT_TRUE((*solo)->AllReduceMean(t).ok());
  DataParallelOptions bad;
  bad.world_size = 2;
  bad.rank = 2;
  EXPECT_NE(DataParallelGroup::Create(bad).status().message().find("outside [0, 2)"), std::string::npos);
  bad.rank = 0;
  bad.store_address = "nocolon";
  EXPECT_EQ(DataParallelGroup::Create(bad).status().code(), StatusCode::kInvalidArgument);
  bad.store_address = "127.0.0.1:1";
  bad.backend = "mpi";
  EXPECT_NE(DataParallelGroup::Create(bad).status().message().find("gloo, nccl"), std::string::npos);
  if (!torch::cuda::is_available()) {
    // NCCL needs a CUDA LibTorch and a GPU: refused before any rendezvous.
    bad.backend = "nccl";
    auto nccl = DataParallelGroup::Create(bad);
    ASSERT_FALSE(nccl.ok());
    EXPECT_TRUE(nccl.status().code() == StatusCode::kUnimplemented ||
                nccl.status().code() == StatusCode::kFailedPrecondition)
        << nccl.status().ToString();
  }
}

}  // namespace
}  // namespace spar
