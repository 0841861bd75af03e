// `spar scorer --config FILE`: serves the PreferenceScorer gRPC service.
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "common/files.h"
#include "common/logging.h"
#include "metrics/telemetry.h"
#include "orchestrator/launcher.h"
#include "services/common/server.h"
#include "services/scorer/scorer_config.h"
#include "services/scorer/scorer_service.h"

namespace spar::cli {
namespace {

struct ScorerArgs {
  std::string config;
  std::string listen;
  std::string ready_file;
  std::string bus;
  std::string metrics_listen;
};

std::atomic<bool> g_stop{false};

int RunScorer(const ScorerArgs& args) {
  std::string log_level = "info";
  auto config = LoadScorerConfig(args.config, &log_level);
  if (!config.ok()) return Fail("scorer", config.status());
  SetLogLevel(log_level).IgnoreError();  // validated by the config reader
  if (!args.listen.empty()) config->listen = args.listen;
  SetLogProcessTag("scorer");
  auto log = Logger("scorer");
  auto model = CreatePreferenceModel(*config);
  if (!model.ok()) return Fail("scorer", model.status());
  auto core = ScorerCore::Create(std::move(*model), config->limits);
  if (!core.ok()) return Fail("scorer", core.status());
  // Counters mirror the core's totals; the telemetry thread publishes them
  // on the bus and serves /metrics.
  MetricsRegistry metrics;
  const MetricLabels labels{{"scorer", "scorer"}};
  auto* groups = metrics.GetCounter(metric_names::kScorerGroupsTotal, "Prompt groups scored", labels);
  auto* responses = metrics.GetCounter(metric_names::kScorerResponsesTotal, "Responses scored", labels);
  auto* queued = metrics.GetGauge(metric_names::kScorerQueueDepth, "Groups waiting for the model", labels);
  auto* latency = metrics.GetHistogram(metric_names::kScorerLatencySeconds,
                                       "Seconds from a Score request to its answer", LatencyBuckets(), labels);
  RateGauge groups_per_second(groups, metrics.GetGauge(metric_names::kScorerGroupsPerSecond,
                                                       "Groups scored per second over the last 5 s", labels));
  RateGauge responses_per_second(responses, metrics.GetGauge(metric_names::kScorerResponsesPerSecond,
                                                             "Responses scored per second over the last 5 s", labels));
  (*core)->SetLatencyObserver([latency](double seconds, size_t) { latency->Observe(seconds); });
  ScorerService service(core->get());
  GrpcServerOptions options;
  options.address = config->listen;
  auto server = StartGrpcServer(options, {&service});
  if (!server.ok()) return Fail("scorer", server.status());
  const auto& d = (*core)->description();
  log->info("serving PreferenceScorer on {} (kind {}, model {}, tau {}, {})", server->address,
            d.kind, d.model_name, d.tau, ConventionName(d.convention));
  std::unique_ptr<ServiceTelemetry> telemetry;
  if (!args.bus.empty() || !args.metrics_listen.empty()) {
    auto started = ServiceTelemetry::Start({"scorer", "scorer", args.bus, args.metrics_listen, server->address},
                                           &metrics);
    if (!started.ok()) return Fail("scorer", started.status());
    telemetry = std::move(*started);
  }
  if (!args.ready_file.empty()) {
    Status s = WriteReadyFile(args.ready_file, server->address, telemetry ? telemetry->metrics_address() : "");
    if (!s.ok()) return Fail("scorer", s);
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  ScorerStats last;
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const ScorerStats now = (*core)->Stats();
    groups->Increment(static_cast<double>(now.groups_scored - last.groups_scored));
    responses->Increment(static_cast<double>(now.responses_scored - last.responses_scored));
    queued->Set(static_cast<double>(now.queued_groups));
    groups_per_second.Update();
    responses_per_second.Update();
    last = now;
  }
  log->info("shutting down");
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ScorerArgs>();
  sub.add_option("--config", args->config, "spar YAML config (its scorer: section)")->required();
  sub.add_option("--listen", args->listen, "override scorer.listen (host:port, port 0 = any)");
  sub.add_option("--ready-file", args->ready_file,
                 "write the bound host:port to this file once serving (for launchers)");
  sub.add_option("--bus", args->bus, "publish metrics and lifecycle events to this bus broker (tcp://host:port)");
  sub.add_option("--metrics-listen", args->metrics_listen, "serve Prometheus /metrics on host:port");
  sub.callback([args]() { Exit(RunScorer(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("scorer", "Serve the PreferenceScorer gRPC service (GPM, Bradley-Terry, rule)",
                      20, Setup);

}  // namespace spar::cli
