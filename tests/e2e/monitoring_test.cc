// Monitoring a live `spar run` (tiny real Llama-3, every service a child
// process): each service's /metrics parses as Prometheus text and shows
// rollouts flowing, the bus carries the same series, `spar top --once`
// shows every service, a generator killed mid-run shows as down within a
// few seconds (the run goes on with the other one), and `spar report`
// writes its plots.
#include <signal.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "bus/bus.h"
#include "metrics/metrics.h"
#include "metrics/telemetry.h"
#include "orchestrator/top_view.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
namespace mn = metric_names;
using ::spar::testing::ChildProcess;
using ::spar::testing::RunProcess;
using ::spar::testing::SparBinary;
using ::spar::testing::TempDir;
using ::spar::testing::TokenizerDir;
using ::spar::testing::WriteFile;
using Clock = std::chrono::steady_clock;

std::string Config(const fs::path& root, const std::string& tokenizer) {
  return R"(log_level: info
run:
  dir: )" + (root / "run").string() + R"(
  iterations: 1
  seed: 5
  launch: local
  held_out: 0
  inflight_per_generator: 2
prompts:
  path: )" + (root / "prompts.jsonl").string() + R"(
policy:
  model: )" + (root / "run/models/init").string() + R"(
  init: {arch: llama, preset: tiny, tokenizer: )" + tokenizer + R"(, seed: 4}
generation:
  samples_per_prompt: 3
  temperature: 1.0
  top_p: 1.0
  max_new_tokens: 32
  batch: 6
generators:
  - {}
  - {}
generator:
  model: unused-spar-run-passes-the-policy
  max_batch: 6
  max_context: 512
scorer:
  kind: rule
  tau: 1.0
  rule: {target_words: 1, length_scale: 1}
learner:
  model: unused-spar-run-passes-the-policy
  loss: sppo
  eta: 10
  optimizer: adamw
  learning_rate: 1.0e-3
  batch_groups: 4
  # Extra epochs keep the run (and its bus) alive for the checks after the
  # generator kill: with OpenBLAS the one iteration otherwise ends first.
  epochs: 3
  max_length: 128
  max_prompt_length: 64
)";
}

struct Service {
  std::string name, service, source, metrics;
  pid_t pid = -1;
};

std::map<std::string, Service> ReadServices(const fs::path& path) {
  std::map<std::string, Service> out;
  auto j = nlohmann::json::parse(::spar::testing::ReadFile(path));
  for (const auto& s : j["services"]) {
    Service v;
    v.name = s.value("name", "");
    v.service = s.value("service", "");
    v.source = s.value("source", "");
    v.metrics = s.value("metrics", "");
    v.pid = static_cast<pid_t>(s.value("pid", int64_t{-1}));
    out[v.name] = v;
  }
  return out;
}

// GET http://<host:port>/metrics; "" when it does not answer.
std::string Scrape(const std::string& address) {
  const auto colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  auto res = client.Get("/metrics");
  return res && res->status == 200 ? res->body : std::string();
}

// The sum of a family's samples in Prometheus text whose labels contain
// `label` (e.g. `generator="generator-0"`); nullopt if there is none.
std::optional<double> Sample(const std::string& text, const std::string& name, const std::string& label = "") {
  std::istringstream in(text);
  std::string line;
  std::optional<double> total;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    if (!label.empty() && line.find(label) == std::string::npos) continue;
    total = total.value_or(0) + std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// The families announced by "# TYPE" lines.
std::set<std::string> Families(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("# TYPE ", 0) == 0) out.insert(line.substr(7, line.find(' ', 7) - 7));
  return out;
}

std::string TopOnce(const fs::path& run, const std::string& extra_down_after = "") {
  std::vector<std::string> argv = {SparBinary(), "top", "--run", run.string(), "--once", "--width", "200",
                                   "--no-color", "--wait", "3"};
  if (!extra_down_after.empty()) argv.insert(argv.end(), {"--down-after", extra_down_after});
  std::string out;
  RunProcess(argv, &out);
  return out;
}

// The frame line that starts with `name` (a service row), or "".
std::string RowOf(const std::string& frame, const std::string& name) {
  std::istringstream in(frame);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return line;
  return "";
}

TEST(MonitoringEndToEnd, MetricsBusTopDeadServiceAndReport) {
  const auto tokenizer = TokenizerDir("llama3");
  if (tokenizer.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
  TempDir dir;
  {
    std::ofstream prompts(dir.path() / "prompts.jsonl");
    for (int i = 0; i < 24; ++i)
      prompts << nlohmann::json{{"prompt", "Describe thing number " + std::to_string(i) + "."}}.dump() << "\n";
  }
  WriteFile(dir.path() / "spar.yaml", Config(dir.path(), tokenizer.string()));
  const fs::path run = dir.path() / "run";
  const std::string run_log = (dir.path() / "spar-run.log").string();
  ChildProcess spar_run({SparBinary(), "run", "--config", (dir.path() / "spar.yaml").string(),
                         "--progress-interval", "1"},
                        run_log);
  auto log_tail = [&] { return "spar run log:\n" + ::spar::testing::ReadFile(run_log); };

  // services.json appears once every child serves.
  for (const auto until = Clock::now() + std::chrono::seconds(120);
       !fs::exists(run / "services.json") && spar_run.Running() && Clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(fs::exists(run / "services.json")) << log_tail();
  const auto services = ReadServices(run / "services.json");
  for (const char* name : {"orchestrator", "scorer", "learner", "generator-0", "generator-1"}) {
    ASSERT_TRUE(services.count(name)) << name;
    EXPECT_FALSE(services.at(name).metrics.empty()) << name << " has no /metrics address";
  }

  // The bus, as spar top finds it.
  auto bus_json = nlohmann::json::parse(::spar::testing::ReadFile(run / "bus.json"));
  auto subscriber = BusSubscriber::Connect(bus_json["subscribe"].get<std::string>(), {"metrics.", "lifecycle."});
  ASSERT_TRUE(subscriber.ok()) << subscriber.status().ToString();
  std::map<std::string, v1::MetricsSnapshot> on_bus;  // source -> newest snapshot
  // A monitor that has watched from the start, as a `spar top` left running.
  TopViewOptions watch_options;
  watch_options.down_after = std::chrono::seconds(3);
  TopView watcher(watch_options);
  auto now_micros = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  auto pump = [&](std::chrono::milliseconds for_how_long) {
    const auto until = Clock::now() + for_how_long;
    while (Clock::now() < until) {
      auto m = (*subscriber)->Receive(std::chrono::milliseconds(50));
      if (!m.ok() || !*m) continue;
      watcher.Observe(**m, now_micros());
      if ((*m)->envelope.has_metrics()) on_bus[(*m)->envelope.source()] = (*m)->envelope.metrics();
    }
  };
  auto bus_value = [&](const std::string& source, const std::string& name) -> std::optional<double> {
    auto it = on_bus.find(source);
    if (it == on_bus.end()) return std::nullopt;
    std::optional<double> total;
    for (const auto& m : it->second.metrics())
      if (m.name() == name) total = total.value_or(0) + m.value();
    return total;
  };

  // Once every service has spoken on the bus, spar top shows each one up.
  for (const auto until = Clock::now() + std::chrono::seconds(30);
       watcher.heard_count() < services.size() && Clock::now() < until;)
    pump(std::chrono::milliseconds(200));
  const std::string frame = TopOnce(run);
  for (const char* source : {"generator-0", "generator-1", "scorer", "learner-0", "orchestrator"}) {
    const std::string row = RowOf(frame, source);
    EXPECT_NE(row.find(" up"), std::string::npos) << source << " not up in:\n" << frame;
  }
  EXPECT_NE(frame.find("bottleneck"), std::string::npos) << frame;
  EXPECT_NE(frame.find("prompts  pending"), std::string::npos) << frame;

  // Scrape every service until rollouts flow: the generators' counters and
  // per-second gauges, and the orchestrator's stage counts.
  std::map<std::string, std::string> scraped;
  double best_rollouts_per_second = 0;
  bool flowing = false;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && spar_run.Running()) {
    pump(std::chrono::milliseconds(300));
    for (const auto& [name, s] : services) {
      std::string text = Scrape(s.metrics);
      if (text.empty()) continue;
      Status valid = ValidatePrometheusText(text);
      ASSERT_TRUE(valid.ok()) << name << ": " << valid.ToString() << "\n" << text;
      scraped[name] = std::move(text);
    }
    for (const char* g : {"generator-0", "generator-1"})
      best_rollouts_per_second =
          std::max(best_rollouts_per_second, Sample(scraped[g], mn::kGeneratorRolloutsPerSecond).value_or(0));
    flowing = best_rollouts_per_second > 0 && Sample(scraped["generator-0"], mn::kGeneratorRolloutsTotal).value_or(0) > 0 &&
              bus_value("generator-0", mn::kGeneratorRolloutsTotal).value_or(0) > 0;
    if (flowing) break;
  }
  ASSERT_TRUE(flowing) << "no rollout throughput seen on /metrics and the bus\n" << log_tail();
  EXPECT_GT(Sample(scraped["generator-0"], mn::kGeneratorTokensTotal).value_or(0), 0);
  EXPECT_GT(Sample(scraped["generator-0"], mn::kGeneratorMaxSlots).value_or(0), 0);

  for (const char* family : {mn::kGeneratorTokensPerSecond, mn::kGeneratorBatchOccupancy, mn::kGeneratorQueueDepth,
                             mn::kGeneratorPolicyVersion, mn::kGeneratorTimeToFirstToken, mn::kWeightSyncBytesTotal,
                             mn::kWeightSyncSeconds, mn::kWeightSyncGigabytesPerSecond})
    EXPECT_TRUE(Families(scraped["generator-0"]).count(family)) << family;
  for (const char* family : {mn::kScorerGroupsTotal, mn::kScorerResponsesTotal, mn::kScorerLatencySeconds,
                             mn::kScorerGroupsPerSecond, mn::kScorerResponsesPerSecond, mn::kScorerQueueDepth})
    EXPECT_TRUE(Families(scraped["scorer"]).count(family)) << family;
  for (const char* family : {mn::kLearnerStep, mn::kLearnerLoss, mn::kLearnerLearningRate, mn::kLearnerGradNorm,
                             mn::kLearnerTokensPerSecond, mn::kLearnerDataWaitSecondsTotal})
    EXPECT_TRUE(Families(scraped["learner"]).count(family)) << family;
  for (const char* family : {mn::kOrchestratorIteration, mn::kOrchestratorPrompts, mn::kOrchestratorPromptsTotal,
                             mn::kOrchestratorStageWaitSeconds, mn::kOrchestratorStageIdleSecondsTotal,
                             mn::kOrchestratorRolloutsTotal})
    EXPECT_TRUE(Families(scraped["orchestrator"]).count(family)) << family;
  // The orchestrator's stages add up to the iteration's 24 prompts.
  double staged = 0;
  for (const char* stage : mn::kOrchestratorStages)
    staged += Sample(scraped["orchestrator"], mn::kOrchestratorPrompts, std::string("stage=\"") + stage + "\"").value_or(0);
  EXPECT_EQ(staged, 24) << scraped["orchestrator"];

  // Kill a generator while rollouts flow: within a few seconds spar top
  // shows it down, and the run finishes on the other one.
  const pid_t victim = services.at("generator-1").pid;
  ASSERT_GT(victim, 0);
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto killed_at = Clock::now();
  // The watcher heard generator-1 before (what queued up while spar top ran
  // is read first): it goes down after 3 s of silence.
  pump(std::chrono::milliseconds(300));
  ASSERT_EQ(watcher.StateOf("generator-1", now_micros()), SourceState::kUp) << watcher.Render(now_micros());
  double silent_to_down = -1;
  while (Clock::now() - killed_at < std::chrono::seconds(10)) {
    pump(std::chrono::milliseconds(100));
    if (watcher.StateOf("generator-1", now_micros()) == SourceState::kDown) {
      silent_to_down = std::chrono::duration<double>(Clock::now() - killed_at).count();
      break;
    }
  }
  ASSERT_GE(silent_to_down, 0) << watcher.Render(now_micros());
  EXPECT_LE(silent_to_down, 5.0);
  EXPECT_EQ(watcher.StateOf("generator-0", now_micros()), SourceState::kUp);
  std::printf("a running monitor marked generator-1 down %.1f s after SIGKILL\n", silent_to_down);
  // A spar top started now lists it (from services.json) as down.
  std::string down_frame;
  double seconds_to_down = -1;
  const auto top_started = Clock::now();
  while (Clock::now() - top_started < std::chrono::seconds(15)) {
    down_frame = TopOnce(run, "2");
    if (RowOf(down_frame, "generator-1").find(" down") != std::string::npos) {
      seconds_to_down = std::chrono::duration<double>(Clock::now() - top_started).count();
      break;
    }
  }
  ASSERT_GE(seconds_to_down, 0) << "generator-1 never showed as down:\n" << down_frame;
  EXPECT_LE(seconds_to_down, 12.0);
  EXPECT_NE(RowOf(down_frame, "generator-0").find(" up"), std::string::npos) << down_frame;
  std::printf("spar top --once (started after the kill) showed generator-1 down in %.1f s\n", seconds_to_down);

  // The bus carries the same series as /metrics: the same families for
  // every source, and a counter value that /metrics had reached by the
  // time the bus delivered it.
  pump(std::chrono::milliseconds(1200));
  for (const auto& [name, s] : services) {
    if (s.source.empty() || !on_bus.count(s.source)) {
      ADD_FAILURE() << name << " (" << s.source << ") sent no metrics on the bus";
      continue;
    }
    std::set<std::string> bus_families;
    for (const auto& m : on_bus[s.source].metrics()) bus_families.insert(m.name());
    const std::string now = Scrape(s.metrics);
    if (now.empty()) continue;  // finished and gone
    EXPECT_EQ(bus_families, Families(now)) << name;
  }
  const double bus_rollouts = bus_value("generator-0", mn::kGeneratorRolloutsTotal).value_or(-1);
  EXPECT_GT(bus_rollouts, 0);
  if (const std::string text = Scrape(services.at("generator-0").metrics); !text.empty()) {
    EXPECT_LE(bus_rollouts, Sample(text, mn::kGeneratorRolloutsTotal).value_or(-2));
  }

  const auto run_deadline = Clock::now() + std::chrono::seconds(150);
  while (spar_run.Running() && Clock::now() < run_deadline) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const int status = spar_run.Stop(SIGTERM, std::chrono::seconds(10));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log_tail();
  auto summary = nlohmann::json::parse(::spar::testing::ReadFile(run / "summary.json"));
  EXPECT_EQ(summary["iterations"][0]["trained_examples"], 24);
  EXPECT_EQ(summary["iterations"][0]["lost_generators"], nlohmann::json::array({"generator-1"}));
  // Not a terminal: plain progress lines in the log.
  EXPECT_NE(::spar::testing::ReadFile(run_log).find("progress: iteration 1/1 ["), std::string::npos) << log_tail();

  // The report: a self-contained HTML file with its plots.
  std::string out;
  ASSERT_EQ(RunProcess({SparBinary(), "report", run.string()}, &out), 0) << out;
  const std::string html = ::spar::testing::ReadFile(run / "report.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("<path d=\"M"), std::string::npos) << "no plotted series";
  EXPECT_EQ(html.find("<script src"), std::string::npos) << "report must be self-contained";
}

}  // namespace
}  // namespace spar
