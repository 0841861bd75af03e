// A tiny real model folder (built once per test binary) and generators
// served over real loopback gRPC, for the generator's test suites.
#pragma once

#include <gtest/gtest.h>

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

// The folder of the tiny Llama (seed 7) with the real Llama-3 tokenizer, or
// "" when the tokenizer files are absent (tests skip then).
inline const std::string& TinyModelDir() {
  static TempDir* dir = new TempDir();  // lives until exit
  static std::string path = [] {
    auto tok = TokenizerDir("llama3");
    if (tok.empty()) return std::string();
    auto cfg = *ModelConfig::Preset("llama", "tiny");
    auto m = CreateCausalLM(cfg, 7);
    if (!m.ok()) return std::string();
    std::string out = dir->str() + "/tiny";
    Status s = WriteHfFolder(out, cfg, (*m)->NamedWeights(), tok.string());
    return s.ok() ? out : std::string();
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
