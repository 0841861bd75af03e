// A multi-process deployment on loopback, as on a cluster: the config is
// the one the cpu-small Kubernetes overlay ships (deploy/k8s/overlays/
// cpu-small/spar.yaml) with its addresses, paths and sizes changed the way
// an operator moves it to other machines; every service is its own process
// started the way the manifests start it (2 generators with --id, 1 scorer,
// 2 learner ranks joined over Gloo with --rank), the policy built as the
// init containers build it, then `spar run` with launch: remote completes an
// iteration through them.
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "common/net.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using ::spar::testing::ChildProcess;
using ::spar::testing::RunProcess;
using ::spar::testing::SourceDir;
using ::spar::testing::SparBinary;
using ::spar::testing::TempDir;
using ::spar::testing::TokenizerDir;
using ::spar::testing::WaitForFile;

// A port free on 127.0.0.1 right now (the kernel's pick for port 0).

std::string Loopback(int port) { return "127.0.0.1:" + std::to_string(port); }

// The value of an unlabelled-or-single series `name` in the /metrics text
// served at the address a service wrote to its ready file ("metrics
// HOST:PORT", second line); -1 when absent.
double MetricFromReadyFile(const std::string& ready_file, const std::string& name) {
  std::ifstream in(ready_file);
  std::string line, address;
  while (std::getline(in, line))
    if (line.rfind("metrics ", 0) == 0) address = line.substr(8);
  if (address.empty()) return -1;
  const auto colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return -1;
  std::istringstream text(res->body);
  while (std::getline(text, line))
    if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) return std::stod(line.substr(line.rfind(' ') + 1));
  return -1;
}

TEST(DeployEndToEnd, EveryServiceItsOwnProcessFromTheManifestConfig) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  const fs::path root = dir.path();
  const int g0 = *FreeLoopbackPort(), g1 = *FreeLoopbackPort(), scorer_port = *FreeLoopbackPort(), learner_port = *FreeLoopbackPort(),
            rendezvous = *FreeLoopbackPort();
  ASSERT_TRUE(g0 > 0 && g1 > 0 && scorer_port > 0 && learner_port > 0 && rendezvous > 0);

  // The overlay's config, moved: addresses, paths and sizes only.
  YAML::Node config = YAML::LoadFile((SourceDir() / "deploy/k8s/overlays/cpu-small/spar.yaml").string());
  ASSERT_EQ(config["run"]["launch"].as<std::string>(), "remote");
  ASSERT_EQ(config["generators"].size(), 2u) << "the overlay runs two generators";
  config["run"]["dir"] = (root / "run").string();
  config["run"]["iterations"] = 1;
  config["run"]["held_out"] = 0;
  config["prompts"]["path"] = (root / "prompts.jsonl").string();
  const std::string policy = (root / "models/policy-init").string();
  config["policy"]["model"] = policy;
  config["policy"]["init"]["tokenizer"] = tokenizer.string();
  config["generation"]["samples_per_prompt"] = 3;
  config["generation"]["max_new_tokens"] = 8;
  config["generators"][0]["address"] = Loopback(g0);
  config["generators"][1]["address"] = Loopback(g1);
  config["generator"]["model"] = policy;
  config["generator"]["listen"] = Loopback(g0);
  config["generator"]["http_listen"] = "127.0.0.1:0";
  config["generator"]["metrics_listen"] = "127.0.0.1:0";
  config["generator"]["max_context"] = 512;
  config["scorer"]["listen"] = Loopback(scorer_port);
  config["scorer"]["address"] = Loopback(scorer_port);
  config["learner"]["listen"] = Loopback(learner_port);
  config["learner"]["address"] = Loopback(learner_port);
  config["learner"]["model"] = policy;
  config["learner"]["output_dir"] = (root / "learner").string();
  config["learner"]["world_size"] = 2;
  config["learner"]["rendezvous"] = Loopback(rendezvous);
  config["learner"]["max_length"] = 128;
  config["learner"]["max_prompt_length"] = 64;
  config["learner"]["batch_groups"] = 2;
  const std::string cfg = (root / "spar.yaml").string();
  {
    YAML::Emitter out;
    out << config;
    std::ofstream(cfg) << out.c_str() << "\n";
    std::ofstream prompts(root / "prompts.jsonl");
    for (int i = 0; i < 8; ++i)
      prompts << nlohmann::json{{"prompt", "Question " + std::to_string(i) + ": why?"}}.dump() << "\n";
  }

  // The init containers' step: the same seeded policy for every service.
  std::string output;
  ASSERT_EQ(RunProcess({SparBinary(), "init-model", "--arch", "llama", "--preset", "tiny", "--seed", "1",
                        "--tokenizer", tokenizer.string(), "--out", policy},
                       &output),
            0)
      << output;

  // The pods' commands, on loopback.
  const fs::path logs = root / "logs";
  fs::create_directories(logs);
  auto log_of = [&](const std::string& name) { return (logs / (name + ".log")).string(); };
  auto ready_of = [&](const std::string& name) { return (logs / (name + ".ready")).string(); };
  std::vector<std::unique_ptr<ChildProcess>> services;
  auto start = [&](const std::string& name, std::vector<std::string> args) {
    args.insert(args.begin(), SparBinary());
    services.push_back(std::make_unique<ChildProcess>(args, log_of(name)));
  };
  start("learner-1", {"learner", "--config", cfg, "--rank", "1"});
  start("learner-0", {"learner", "--config", cfg, "--rank", "0", "--ready-file", ready_of("learner-0")});
  start("scorer", {"scorer", "--config", cfg, "--ready-file", ready_of("scorer")});
  start("generator-0", {"generator", "--config", cfg, "--id", "generator-0", "--ready-file", ready_of("generator-0")});
  start("generator-1", {"generator", "--config", cfg, "--id", "generator-1", "--listen", Loopback(g1),
                        "--ready-file", ready_of("generator-1")});
  for (const char* name : {"learner-0", "scorer", "generator-0", "generator-1"}) {
    const std::string address = WaitForFile(ready_of(name), std::chrono::seconds(120));
    ASSERT_FALSE(address.empty()) << name << " did not serve; its log:\n" << ::spar::testing::ReadFile(log_of(name));
  }
  EXPECT_EQ(WaitForFile(ready_of("generator-1"), std::chrono::seconds(1)), Loopback(g1));
  EXPECT_EQ(WaitForFile(ready_of("learner-0"), std::chrono::seconds(1)), Loopback(learner_port));

  // The orchestrator, as the orchestrator StatefulSet runs it.
  const int rc = RunProcess({SparBinary(), "run", "--config", cfg}, &output);
  ASSERT_EQ(rc, 0) << output << "\nlearner-1 log:\n" << ::spar::testing::ReadFile(log_of("learner-1"));
  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(root / "run/summary.json"));
  EXPECT_EQ(summary["iterations_done"], 1);
  ASSERT_EQ(summary["iterations"].size(), 1u);
  const auto& it = summary["iterations"][0];
  EXPECT_EQ(it["prompts"], 8);
  EXPECT_EQ(it["rollouts"], 24);
  EXPECT_EQ(it["trained_examples"], 8);
  EXPECT_EQ(it["policy_version"], 1);  // and the pipeline checked both generators serve it
  EXPECT_TRUE(it["lost_generators"].empty()) << it.dump();
  EXPECT_GT(it["learner_step"].get<int64_t>(), 0);
  EXPECT_TRUE(fs::exists(fs::path(summary["final_model"].get<std::string>()) / "model.safetensors"));
  // Both generators did work and serve the new policy (read from the
  // /metrics address each wrote to its ready file), and both learner ranks
  // trained together.
  for (const char* name : {"generator-0", "generator-1"}) {
    EXPECT_GT(MetricFromReadyFile(ready_of(name), "spar_generator_rollouts_total"), 0) << name;
    EXPECT_EQ(MetricFromReadyFile(ready_of(name), "spar_generator_policy_version"), 1) << name;
  }
  const std::string rank1 = ::spar::testing::ReadFile(log_of("learner-1"));
  EXPECT_NE(rank1.find("rank 1 of 2 joined"), std::string::npos) << rank1;
  for (auto& s : services) EXPECT_TRUE(s->Running()) << "a service died during the run";
}

}  // namespace
}  // namespace spar
