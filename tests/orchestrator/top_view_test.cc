// TopView on synthetic snapshots (no network), and once over a real broker.
#include "orchestrator/top_view.h"

#include <algorithm>
#include <chrono>
#include <sstream>

#include <gtest/gtest.h>

#include "metrics/telemetry.h"

namespace spar {
namespace {

namespace mn = metric_names;
constexpr int64_t kT0 = 1'700'000'000'000'000;  // unix micros
constexpr int64_t kSecond = 1'000'000;

struct M {
  std::string name;
  double value;
  MetricLabels labels = {};
  v1::Metric::Type type = v1::Metric::GAUGE;
};

v1::BusEnvelope Metrics(const std::string& source, const std::string& service, int64_t t, const std::vector<M>& ms) {
  v1::BusEnvelope e;
  e.set_source(source);
  e.set_service(service);
  e.set_unix_micros(t);
  for (const auto& m : ms) {
    auto* p = e.mutable_metrics()->add_metrics();
    p->set_name(m.name);
    p->set_type(m.type);
    p->set_value(m.value);
    for (const auto& [k, v] : m.labels) (*p->mutable_labels())[k] = v;
  }
  return e;
}

v1::BusEnvelope Lifecycle(const std::string& source, const std::string& service, int64_t t,
                          v1::LifecycleEvent::Kind kind) {
  v1::BusEnvelope e;
  e.set_source(source);
  e.set_service(service);
  e.set_unix_micros(t);
  e.mutable_lifecycle()->set_kind(kind);
  return e;
}

std::vector<M> Generator(double tokens, double rollouts, double busy, double queue, double version) {
  const MetricLabels g = {{"generator", "generator-0"}};
  return {{mn::kGeneratorTokensTotal, tokens, g, v1::Metric::COUNTER},
          {mn::kGeneratorRolloutsTotal, rollouts, g, v1::Metric::COUNTER},
          {mn::kGeneratorBusySlots, busy, g},
          {mn::kGeneratorMaxSlots, 16, g},
          {mn::kGeneratorQueueDepth, queue, g},
          {mn::kGeneratorPolicyVersion, version, g}};
}

std::vector<M> Orchestrator(double pending, double generating, double scoring, double training, double done) {
  return {{mn::kOrchestratorIteration, 2},
          {mn::kOrchestratorIterations, 10},
          {mn::kOrchestratorPrompts, pending, {{"stage", "pending"}}},
          {mn::kOrchestratorPrompts, generating, {{"stage", "generating"}}},
          {mn::kOrchestratorPrompts, scoring, {{"stage", "scoring"}}},
          {mn::kOrchestratorPrompts, training, {{"stage", "training"}}},
          {mn::kOrchestratorPrompts, done, {{"stage", "done"}}},
          {mn::kOrchestratorPromptsTotal, done, {}, v1::Metric::COUNTER}};
}

TEST(HistogramQuantileTest, InterpolatesInsideTheBucket) {
  EXPECT_FALSE(HistogramQuantile(0.5, {1, 2, 4}, {0, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(*HistogramQuantile(0.5, {1, 2, 4}, {0, 10, 10, 10}), 1.5);
  EXPECT_DOUBLE_EQ(*HistogramQuantile(0.25, {1, 2, 4}, {10, 10, 20, 20}), 0.5);
  // In +Inf: the largest finite bound.
  EXPECT_DOUBLE_EQ(*HistogramQuantile(0.99, {1, 2, 4}, {0, 0, 0, 5}), 4);
}

TEST(TopViewTest, GeneratorRowsHaveRatesOccupancyAndVersion) {
  TopView view;
  view.Observe(Metrics("generator-0", "generator", kT0, Generator(1000, 10, 8, 0, 3)), kT0);
  view.Observe(Metrics("generator-0", "generator", kT0 + 2 * kSecond, Generator(3000, 14, 12, 5, 3)),
               kT0 + 2 * kSecond);
  const int64_t now = kT0 + 2 * kSecond;
  auto rows = view.Generators(now);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].generator, "generator-0");
  EXPECT_EQ(rows[0].state, SourceState::kUp);
  EXPECT_DOUBLE_EQ(*rows[0].tokens_per_second, 1000);
  EXPECT_DOUBLE_EQ(*rows[0].rollouts_per_second, 2);
  EXPECT_DOUBLE_EQ(*rows[0].occupancy, 0.75);
  EXPECT_DOUBLE_EQ(*rows[0].queue_depth, 5);
  EXPECT_DOUBLE_EQ(*rows[0].policy_version, 3);

  const std::string frame = view.Render(now);
  EXPECT_NE(frame.find("GENERATOR"), std::string::npos) << frame;
  EXPECT_NE(frame.find("generator-0"), std::string::npos) << frame;
  EXPECT_NE(frame.find("1000"), std::string::npos) << frame;
  EXPECT_NE(frame.find("75%"), std::string::npos) << frame;
  EXPECT_EQ(frame.find('\x1b'), std::string::npos) << "no color unless asked";
}

TEST(TopViewTest, WeightSyncLineShowsVersionsSecondsAndBandwidth) {
  TopView view;
  auto g = Generator(0, 0, 0, 0, 2);
  g.push_back({mn::kWeightSyncBytesTotal, 3e9, {{"generator", "generator-0"}}, v1::Metric::COUNTER});
  g.push_back({mn::kWeightSyncAppliedTotal, 2, {{"generator", "generator-0"}}, v1::Metric::COUNTER});
  auto e = Metrics("generator-0", "generator", kT0, g);
  auto* h = e.mutable_metrics()->add_metrics();
  h->set_name(mn::kWeightSyncSeconds);
  h->set_type(v1::Metric::HISTOGRAM);
  h->set_value(2.4);
  h->set_count(2);
  (*h->mutable_labels())["generator"] = "generator-0";
  view.Observe(e, kT0);
  const std::string frame = view.Render(kT0);
  EXPECT_NE(frame.find("weight sync generator-0: 2 versions, mean 1.20 s, 3.00 GB at 1.25 GB/s"), std::string::npos)
      << frame;
}

TEST(TopViewTest, SilentOrStoppedSourcesAreDown) {
  TopViewOptions options;
  options.down_after = std::chrono::milliseconds(3000);
  TopView view(options);
  view.Observe(Lifecycle("scorer-0", "scorer", kT0, v1::LifecycleEvent::READY), kT0);
  view.Observe(Lifecycle("learner", "learner", kT0, v1::LifecycleEvent::HEARTBEAT), kT0);
  EXPECT_EQ(view.StateOf("scorer-0", kT0 + 2 * kSecond), SourceState::kUp);
  EXPECT_EQ(view.StateOf("scorer-0", kT0 + 4 * kSecond), SourceState::kDown);
  EXPECT_EQ(view.StateOf("nobody", kT0), SourceState::kDown);

  view.Observe(Lifecycle("learner", "learner", kT0 + kSecond, v1::LifecycleEvent::STOPPED), kT0 + kSecond);
  EXPECT_EQ(view.StateOf("learner", kT0 + kSecond), SourceState::kStopped);
  view.Observe(Lifecycle("learner", "learner", kT0 + 2 * kSecond, v1::LifecycleEvent::READY), kT0 + 2 * kSecond);
  EXPECT_EQ(view.StateOf("learner", kT0 + 2 * kSecond), SourceState::kUp);

  const std::string frame = view.Render(kT0 + 4 * kSecond);
  EXPECT_NE(frame.find("scorer-0"), std::string::npos);
  EXPECT_NE(frame.find("down"), std::string::npos) << frame;
  // The only scorer is down: that is what holds the run back.
  EXPECT_EQ(view.Bottleneck(kT0 + 4 * kSecond).stage, "scoring");
}

TEST(TopViewTest, ExpectedSourcesShowDownUntilTheySpeak) {
  TopView view;
  view.Expect("generator-1", "generator");
  view.Expect("generator-0", "generator");
  EXPECT_EQ(view.source_count(), 2u);
  EXPECT_EQ(view.heard_count(), 0u);
  view.Observe(Metrics("generator-0", "generator", kT0, Generator(0, 0, 1, 0, 0)), kT0);
  EXPECT_EQ(view.heard_count(), 1u);
  EXPECT_EQ(view.StateOf("generator-0", kT0 + kSecond), SourceState::kUp);
  EXPECT_EQ(view.StateOf("generator-1", kT0 + kSecond), SourceState::kDown);
  const std::string frame = view.Render(kT0 + kSecond);
  EXPECT_NE(frame.find("generator-1"), std::string::npos) << frame;
  // Expect() on a source already heard changes nothing.
  view.Expect("generator-0", "scorer");
  EXPECT_EQ(view.StateOf("generator-0", kT0 + kSecond), SourceState::kUp);
  EXPECT_EQ(view.Generators(kT0 + kSecond).size(), 2u);
}

TEST(TopViewTest, StageWaitsAndIdleShareInTheFrame) {
  auto orch = [](double idle_scoring, std::vector<uint64_t> wait_buckets) {
    auto ms = Orchestrator(10, 4, 2, 1, 3);
    ms.push_back({mn::kOrchestratorStageIdleSecondsTotal, idle_scoring, {{"stage", "scoring"}}, v1::Metric::COUNTER});
    auto e = Metrics("orchestrator", "orchestrator", 0, ms);
    auto* h = e.mutable_metrics()->add_metrics();
    h->set_name(mn::kOrchestratorStageWaitSeconds);
    h->set_type(v1::Metric::HISTOGRAM);
    (*h->mutable_labels())["stage"] = "scoring";
    for (double b : {0.5, 1.0, 2.0}) h->add_bucket_bounds(b);
    uint64_t total = 0;
    for (uint64_t c : wait_buckets) h->add_bucket_counts(total += c);
    h->set_count(total);
    return e;
  };
  TopView view;
  auto a = orch(0, {0, 0, 0, 0});
  a.set_unix_micros(kT0);
  view.Observe(a, kT0);
  auto b = orch(1.0, {0, 4, 0, 0});  // 4 waits in (0.5, 1], scoring idle half of 2 s
  b.set_unix_micros(kT0 + 2 * kSecond);
  view.Observe(b, kT0 + 2 * kSecond);
  const std::string frame = view.Render(kT0 + 2 * kSecond);
  EXPECT_NE(frame.find("waits    scoring p50 0.75 s idle 50%"), std::string::npos) << frame;
}

TEST(TopViewTest, ProgressLineHasBarRateAndEta) {
  const std::string line = ProgressLine("iteration 1/3", 10, 40, 2.0, "prompts", "  extra", 100);
  EXPECT_EQ(line.rfind("iteration 1/3 [", 0), 0u) << line;
  EXPECT_NE(line.find(" 10/40 prompts  2.00/s  ETA 15s  extra"), std::string::npos) << line;
  const auto hashes = std::count(line.begin(), line.end(), '#');
  const auto dashes = std::count(line.begin(), line.end(), '-');
  EXPECT_NEAR(static_cast<double>(hashes) / static_cast<double>(hashes + dashes), 0.25, 0.05) << line;
  EXPECT_LE(line.size(), 100u);
  EXPECT_NE(ProgressLine("x", 5, 10, std::nullopt, "prompts", "", 80).find("ETA -"), std::string::npos);
  EXPECT_NE(ProgressLine("x", 10, 10, std::nullopt, "prompts", "", 80).find("ETA 0s"), std::string::npos);
  EXPECT_EQ(ProgressLine("a long label", 1, 2, 1.0, "prompts", " and a long suffix", 30).size(), 30u);
  EXPECT_EQ(FormatDuration(187), "3m07s");
  EXPECT_EQ(FormatDuration(-1), "-");
}

TEST(TopViewTest, ProgressBarEtaAndBottleneckFromStageCounts) {
  TopView view;
  view.Observe(Metrics("orchestrator", "orchestrator", kT0, Orchestrator(50, 30, 10, 0, 10)), kT0);
  view.Observe(Metrics("orchestrator", "orchestrator", kT0 + 2 * kSecond, Orchestrator(40, 30, 10, 0, 20)),
               kT0 + 2 * kSecond);
  const int64_t now = kT0 + 2 * kSecond;
  const std::string frame = view.Render(now);
  EXPECT_NE(frame.find("iteration 3/10"), std::string::npos) << frame;
  EXPECT_NE(frame.find("20/100 prompts"), std::string::npos) << frame;
  EXPECT_NE(frame.find("ETA 16s"), std::string::npos) << frame;  // 80 left at 5/s
  EXPECT_NE(frame.find("[####"), std::string::npos) << frame;
  EXPECT_NE(frame.find("generating 30"), std::string::npos) << frame;
  const auto b = view.Bottleneck(now);
  EXPECT_EQ(b.stage, "generation");
  EXPECT_NE(b.reason.find("30 prompts"), std::string::npos) << b.reason;
  EXPECT_NE(frame.find("bottleneck  generation"), std::string::npos) << frame;

  // Work piling up in scoring moves the bottleneck.
  view.Observe(Metrics("orchestrator", "orchestrator", kT0 + 3 * kSecond, Orchestrator(0, 5, 60, 10, 25)),
               kT0 + 3 * kSecond);
  EXPECT_EQ(view.Bottleneck(kT0 + 3 * kSecond).stage, "scoring");
}

TEST(TopViewTest, BottleneckFromLearnerIdleAndGeneratorOccupancy) {
  auto learner = [](double wait, double step) {
    return std::vector<M>{{mn::kLearnerDataWaitSecondsTotal, wait, {}, v1::Metric::COUNTER},
                          {mn::kLearnerStep, step},
                          {mn::kLearnerLoss, 0.6931},
                          {mn::kLearnerLearningRate, 5e-7}};
  };
  TopView view;
  view.Observe(Metrics("learner", "learner", kT0, learner(0, 10)), kT0);
  view.Observe(Metrics("learner", "learner", kT0 + 2 * kSecond, learner(1.6, 11)), kT0 + 2 * kSecond);
  view.Observe(Metrics("generator-0", "generator", kT0, Generator(0, 0, 16, 3, 1)), kT0);
  view.Observe(Metrics("generator-0", "generator", kT0 + 2 * kSecond, Generator(100, 1, 15, 3, 1)),
               kT0 + 2 * kSecond);
  const int64_t now = kT0 + 2 * kSecond;
  auto b = view.Bottleneck(now);
  EXPECT_EQ(b.stage, "generation") << b.reason;
  EXPECT_NE(b.reason.find("learner idle 80%"), std::string::npos) << b.reason;
  const std::string frame = view.Render(now);
  EXPECT_NE(frame.find("LEARNER"), std::string::npos) << frame;
  EXPECT_NE(frame.find("0.69"), std::string::npos) << frame;
  EXPECT_NE(frame.find("80%"), std::string::npos) << frame;

  // Idle generators with a scorer present: scoring starves the learner.
  TopView idle_generators;
  idle_generators.Observe(Metrics("learner", "learner", kT0, learner(0, 10)), kT0);
  idle_generators.Observe(Metrics("learner", "learner", now, learner(1.6, 11)), now);
  idle_generators.Observe(Metrics("generator-0", "generator", now, Generator(0, 0, 2, 0, 1)), now);
  idle_generators.Observe(Lifecycle("scorer-0", "scorer", now, v1::LifecycleEvent::HEARTBEAT), now);
  EXPECT_EQ(idle_generators.Bottleneck(now).stage, "scoring");
}

TEST(TopViewTest, ScorerLatencyQuantilesOverTheWindow) {
  auto scorer = [](double groups, std::vector<uint64_t> buckets) {
    v1::BusEnvelope e;
    auto* h = e.mutable_metrics()->add_metrics();
    h->set_name(mn::kScorerLatencySeconds);
    h->set_type(v1::Metric::HISTOGRAM);
    for (double b : {0.1, 0.2, 0.4}) h->add_bucket_bounds(b);
    for (uint64_t c : buckets) h->add_bucket_counts(c);
    h->set_count(buckets.back());
    auto* g = e.mutable_metrics()->add_metrics();
    g->set_name(mn::kScorerGroupsTotal);
    g->set_type(v1::Metric::COUNTER);
    g->set_value(groups);
    return e;
  };
  TopView view;
  auto a = scorer(100, {100, 100, 100, 100});  // old observations, all under 0.1 s
  a.set_source("scorer-0"), a.set_service("scorer"), a.set_unix_micros(kT0);
  auto b = scorer(110, {100, 100, 110, 110});  // the window's 10: 0.2..0.4 s
  b.set_source("scorer-0"), b.set_service("scorer"), b.set_unix_micros(kT0 + 5 * kSecond);
  view.Observe(a, kT0);
  view.Observe(b, kT0 + 5 * kSecond);
  EXPECT_DOUBLE_EQ(*view.Rate("scorer-0", mn::kScorerGroupsTotal), 2);
  EXPECT_NEAR(*view.WindowQuantile("scorer-0", mn::kScorerLatencySeconds, 0.5), 0.3, 1e-9);
  const std::string frame = view.Render(kT0 + 5 * kSecond);
  EXPECT_NE(frame.find("SCORER"), std::string::npos) << frame;
  EXPECT_NE(frame.find("0.30"), std::string::npos) << frame;
}

TEST(TopViewTest, FramesFitTheWidthAndColorIsOptional) {
  for (int width : {40, 60, 100}) {
    TopViewOptions options;
    options.width = width;
    TopView view(options);
    view.Observe(Metrics("orchestrator", "orchestrator", kT0, Orchestrator(50, 30, 10, 0, 10)), kT0);
    view.Observe(Metrics("generator-with-a-very-long-name-0", "generator", kT0, Generator(0, 0, 4, 0, 1)), kT0);
    view.Observe(Lifecycle("scorer-0", "scorer", kT0, v1::LifecycleEvent::READY), kT0);
    std::istringstream lines(view.Render(kT0));
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
      EXPECT_LE(static_cast<int>(line.size()), width) << line;
      ++n;
    }
    EXPECT_GT(n, 5);
  }
  TopViewOptions colored;
  colored.color = true;
  TopView view(colored);
  view.Observe(Lifecycle("scorer-0", "scorer", kT0, v1::LifecycleEvent::READY), kT0);
  EXPECT_NE(view.Render(kT0).find("\x1b["), std::string::npos);
}

TEST(TopViewTest, FollowsAServiceOverARealBroker) {
  auto broker = BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"});
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();
  auto sub = BusSubscriber::Connect((*broker)->addresses().subscribe, {"metrics.", "lifecycle."});
  ASSERT_TRUE(sub.ok());

  MetricsRegistry registry;
  const MetricLabels g = {{"generator", "generator-0"}};
  Counter* tokens = registry.GetCounter(mn::kGeneratorTokensTotal, "tokens", g);
  registry.GetGauge(mn::kGeneratorPolicyVersion, "version", g)->Set(4);
  registry.GetGauge(mn::kGeneratorBusySlots, "busy", g)->Set(8);
  registry.GetGauge(mn::kGeneratorMaxSlots, "max", g)->Set(16);
  ServiceTelemetryOptions options;
  options.service = "generator";
  options.source = "generator-0";
  options.bus_publish = (*broker)->addresses().publish;
  options.interval = std::chrono::milliseconds(50);
  auto telemetry = ServiceTelemetry::Start(options, &registry);
  ASSERT_TRUE(telemetry.ok()) << telemetry.status().ToString();

  TopView view;
  auto now = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int snapshots = 0;
  while (snapshots < 4 && std::chrono::steady_clock::now() < deadline) {
    tokens->Increment(100);
    auto m = (*sub)->Receive(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok());
    if (!m->has_value()) continue;
    view.Observe(**m, now());
    if ((*m)->envelope.has_metrics()) ++snapshots;
  }
  ASSERT_GE(snapshots, 4);
  auto rows = view.Generators(now());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].state, SourceState::kUp);
  EXPECT_DOUBLE_EQ(*rows[0].policy_version, 4);
  EXPECT_DOUBLE_EQ(*rows[0].occupancy, 0.5);
  ASSERT_TRUE(rows[0].tokens_per_second.has_value());
  EXPECT_GT(*rows[0].tokens_per_second, 0);

  telemetry->reset();
  for (int i = 0; i < 50; ++i) {
    auto m = (*sub)->Receive(std::chrono::milliseconds(100));
    ASSERT_TRUE(m.ok());
    if (!m->has_value()) break;
    view.Observe(**m, now());
  }
  EXPECT_EQ(view.StateOf("generator-0", now()), SourceState::kStopped);
  EXPECT_NE(view.Render(now()).find("stopped"), std::string::npos);
}

}  // namespace
}  // namespace spar
