// A tiny real model folder (built once per build and cached on disk) and generators
// served over real loopback gRPC, for the generator's test suites.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "services/common/server.h"
#include "services/generator/generator_config.h"
#include "services/generator/generator_service.h"
#include "services/weights/weight_stream.h"
#include "spar/v1/generator.grpc.pb.h"
#include "tests/support/test_support.h"

namespace spar::testing {

// Where shared test fixtures are cached: <build dir>/test-cache (the first
// folder above the test binary that holds CMakeCache.txt), else the temp dir.
inline std::filesystem::path TestCacheRoot() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (auto dir = exe.parent_path(); dir.has_relative_path(); dir = dir.parent_path())
      if (std::filesystem::exists(dir / "CMakeCache.txt", ec)) return dir / "test-cache";
  return std::filesystem::temp_directory_path() / "spar-test-cache";
}

// The folder of the tiny Llama (seed 7) with the real Llama-3 tokenizer, or
// "" when the tokenizer files are absent (tests skip then).
//
// gtest_discover_tests runs every TEST in its own process, so the 66 MB
// folder is built once per build of the test binary and shared on disk: its
// name carries the binary's size and mtime (a rebuilt binary, which may write
// models differently, gets a fresh one). Concurrent test processes each
// build into a private temp folder and rename it into place; rename is
// atomic, so a reader sees a complete folder or none, and a loser of the
// race drops its copy. Folders of older binaries are removed after an hour.
inline const std::string& TinyModelDir() {
  static std::string path = [] {
    namespace fs = std::filesystem;
    auto tok = TokenizerDir("llama3");
    if (tok.empty()) return std::string();
    std::error_code ec;
    const auto exe = fs::read_symlink("/proc/self/exe", ec);
    std::string stamp = "unknown";
    if (!ec) {
      const auto size = fs::file_size(exe, ec);
      const auto mtime = static_cast<uint64_t>(fs::last_write_time(exe, ec).time_since_epoch().count());
      stamp = exe.filename().string() + "-" + std::to_string(size) + "-" + std::to_string(mtime);
    }
    const fs::path root = TestCacheRoot();
    const std::string prefix = "tiny-llama-seed7-";
    const fs::path final_dir = root / (prefix + stamp);
    if (fs::exists(final_dir / "config.json", ec)) return final_dir.string();
    fs::create_directories(root, ec);
    const fs::path tmp = root / (".tmp-" + std::to_string(::getpid()) + "-" + stamp);
    fs::remove_all(tmp, ec);
    auto cfg = *ModelConfig::Preset("llama", "tiny");
    auto m = CreateCausalLM(cfg, 7);
    if (!m.ok()) return std::string();
    Status s = WriteHfFolder(tmp.string(), cfg, (*m)->NamedWeights(), tok.string());
    if (!s.ok()) {
      fs::remove_all(tmp, ec);
      return std::string();
    }
    fs::rename(tmp, final_dir, ec);
    if (ec) fs::remove_all(tmp, ec);  // another process got there first
    if (!fs::exists(final_dir / "config.json", ec)) return std::string();
    const auto now = fs::file_time_type::clock::now();
    for (const auto& entry : fs::directory_iterator(root, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.path() == final_dir) continue;
      if (name.rfind(prefix, 0) != 0 && name.rfind(".tmp-", 0) != 0) continue;
      std::error_code e;
      const auto age = now - fs::last_write_time(entry.path(), e);
      if (!e && age > std::chrono::hours(1)) fs::remove_all(entry.path(), e);
    }
    return final_dir.string();
  }();
  return path;
}

#define SPAR_REQUIRE_TINY_MODEL()                                        \
  if (::spar::testing::TinyModelDir().empty())                           \
  GTEST_SKIP() << "the llama3 tokenizer is not fetched (scripts/setup.sh)"

inline GeneratorConfig TinyGeneratorConfig(const std::string& id) {
  GeneratorConfig c;
  c.id = id;
  c.model = TinyModelDir();
  c.name = "tiny-llama";
  c.max_batch = 4;
  c.max_context = 256;
  c.max_queue = 64;
  c.limits.max_prompt_tokens = 128;
  c.limits.max_samples = 8;
  c.sampling.max_new_tokens = 16;
  return c;
}

// Core + service + server; torn down in the right order.
struct RunningGenerator {
  std::unique_ptr<GeneratorCore> core;
  std::unique_ptr<GeneratorService> service;
  RunningServer server;
  std::unique_ptr<v1::Generator::Stub> stub;

  ~RunningGenerator() {
    if (server.server) server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    service.reset();
    core.reset();
  }
};

inline std::unique_ptr<RunningGenerator> StartGenerator(const GeneratorConfig& config) {
  auto g = std::make_unique<RunningGenerator>();
  auto core = CreateGeneratorCore(config, nullptr);
  EXPECT_TRUE(core.ok()) << core.status().ToString();
  if (!core.ok()) return nullptr;
  g->core = std::move(*core);
  g->service = std::make_unique<GeneratorService>(g->core.get());
  GrpcServerOptions options;
  options.address = "127.0.0.1:0";
  auto server = StartGrpcServer(options, {g->service.get()});
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  g->server = std::move(*server);
  g->stub = v1::Generator::NewStub(MakeChannel(g->server.address));
  return g;
}

// Weights of a fresh tiny model (another seed), kept alive with their views.
struct WeightsToSend {
  std::vector<torch::Tensor> keep;
  std::vector<WeightTensorView> views;
};

inline WeightsToSend NewTinyWeights(uint64_t seed) {
  WeightsToSend w;
  auto cfg = *ModelConfig::Preset("llama", "tiny");
  auto m = *CreateCausalLM(cfg, seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : m->NamedWeights()) {
    torch::Tensor cpu = t.detach().to(torch::kFloat32).contiguous();
    w.keep.push_back(cpu);
    w.views.push_back({name, "F32", cpu.sizes().vec(), cpu.data_ptr(), static_cast<uint64_t>(cpu.nbytes())});
  }
  return w;
}

}  // namespace spar::testing
