// `spar generator --config FILE`: serves the Generator gRPC service, and
// optionally the OpenAI-compatible HTTP endpoint and /metrics.
#include <atomic>
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "common/files.h"
#include "common/logging.h"
#include "metrics/metrics_http.h"
#include "metrics/telemetry.h"
#include "orchestrator/launcher.h"
#include "services/common/server.h"
#include "services/generator/generator_config.h"
#include "services/generator/generator_service.h"
#include "services/generator/openai_http.h"
#include "services/generator/weight_broadcast_receiver.h"

namespace spar::cli {
namespace {

struct GeneratorArgs {
  std::string config;
  std::string listen;
  std::string ready_file;
  std::string http_listen;
  std::string metrics_listen;
  std::string model;
  std::string id;
  int64_t policy_version = -1;
  std::string bus;
};

std::atomic<bool> g_stop{false};

int RunGenerator(const GeneratorArgs& args) {
  std::string log_level = "info";
  auto config = LoadGeneratorConfig(args.config, &log_level);
  if (!config.ok()) return Fail("generator", config.status());
  SetLogLevel(log_level).IgnoreError();  // validated by the config reader
  if (!args.listen.empty()) config->listen = args.listen;
  if (!args.http_listen.empty()) config->http_listen = args.http_listen;
  if (!args.metrics_listen.empty()) config->metrics_listen = args.metrics_listen;
  if (!args.model.empty()) config->model = args.model;
  if (!args.id.empty()) config->id = args.id;
  if (args.policy_version >= 0) config->policy_version = static_cast<uint64_t>(args.policy_version);
  SetLogProcessTag(config->id);
  auto log = Logger("generator");

  MetricsRegistry metrics;
  auto core = CreateGeneratorCore(*config, &metrics);
  if (!core.ok()) return Fail("generator", core.status());
  GeneratorService service(core->get(), config->max_message_bytes);
  GrpcServerOptions options;
  options.address = config->listen;
  options.max_message_bytes = config->max_message_bytes;
  auto server = StartGrpcServer(options, {&service});
  if (!server.ok()) return Fail("generator", server.status());
  const auto& d = (*core)->description();
  log->info("serving Generator {} on {} ({} {}, {:.1f}M parameters, version {}, {} slots, context {})",
            d.generator_id, server->address, d.architecture, d.model_name, d.num_parameters / 1e6,
            (*core)->policy_version(), config->max_batch, config->max_context);

  std::unique_ptr<OpenAiHttpServer> http;
  if (!config->http_listen.empty()) {
    auto started = OpenAiHttpServer::Start(config->http_listen, core->get());
    if (!started.ok()) return Fail("generator", started.status());
    http = std::move(*started);
  }
  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (!config->metrics_listen.empty()) {
    auto started = MetricsHttpServer::Start(config->metrics_listen, &metrics);
    if (!started.ok()) return Fail("generator", started.status());
    metrics_http = std::move(*started);
    log->info("metrics on http://{}/metrics", metrics_http->address());
  }
  // On the bus: metrics snapshots, heartbeats and lifecycle events (the
  // /metrics endpoint above stays the generator's own).
  // Figures derived here from the core's series (same names and labels give
  // the same series): rollouts/s, occupancy, and the last update's GB/s.
  const MetricLabels labels{{"generator", config->id}};
  metrics.GetGauge(metric_names::kGeneratorMaxSlots, "Decode slots", labels)
      ->Set(static_cast<double>(config->max_batch));
  RateGauge rollouts_per_second(
      metrics.GetCounter(metric_names::kGeneratorRolloutsTotal, "Rollouts completed", labels),
      metrics.GetGauge(metric_names::kGeneratorRolloutsPerSecond, "Rollouts per second over the last 5 s", labels));
  const Gauge* busy_slots = metrics.GetGauge(metric_names::kGeneratorBusySlots, "Decode slots in use", labels);
  Gauge* occupancy =
      metrics.GetGauge(metric_names::kGeneratorBatchOccupancy, "Decode slots in use / slots (0..1)", labels);
  const Counter* sync_bytes =
      metrics.GetCounter(metric_names::kWeightSyncBytesTotal, "Weight bytes received over UpdateWeights", labels);
  const Histogram* sync_seconds = metrics.GetHistogram(metric_names::kWeightSyncSeconds,
                                                       "Seconds per applied weight update", LatencyBuckets(), labels);
  Gauge* sync_gbps = metrics.GetGauge(metric_names::kWeightSyncGigabytesPerSecond,
                                      "GB/s of the last applied weight update", labels);
  std::unique_ptr<ServiceTelemetry> telemetry;
  if (!args.bus.empty()) {
    auto started = ServiceTelemetry::Start({"generator", config->id, args.bus, "", server->address}, &metrics);
    if (!started.ok()) return Fail("generator", started.status());
    telemetry = std::move(*started);
  }
  if (!args.ready_file.empty()) {
    Status s = WriteReadyFile(args.ready_file, server->address, metrics_http ? metrics_http->address() : "");
    if (!s.ok()) return Fail("generator", s);
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::unique_ptr<WeightBroadcastReceiver> broadcast_receiver;
  if (config->weight_broadcast.enabled) {
    auto started = WeightBroadcastReceiver::Start(config->weight_broadcast, core->get());
    if (!started.ok()) return Fail("generator", started.status());
    broadcast_receiver = std::move(*started);
    log->info("weight broadcast: rank {} of {} joining at {}", config->weight_broadcast.rank,
              config->weight_broadcast.world_size, config->weight_broadcast.rendezvous);
  }
  uint64_t syncs_seen = 0;
  double bytes_seen = 0, seconds_seen = 0;
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    rollouts_per_second.Update();
    if (config->max_batch > 0) occupancy->Set(busy_slots->value() / static_cast<double>(config->max_batch));
    if (sync_seconds->count() != syncs_seen) {
      const double bytes = sync_bytes->value() - bytes_seen, seconds = sync_seconds->sum() - seconds_seen;
      if (seconds > 0) sync_gbps->Set(bytes / seconds / 1e9);
      syncs_seen = sync_seconds->count();
      bytes_seen = sync_bytes->value();
      seconds_seen = sync_seconds->sum();
    }
  }
  log->info("shutting down");
  // Ends the receiver's wait or broadcast (aborting its communicator) and
  // joins it before the core goes away.
  broadcast_receiver.reset();
  http.reset();
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  metrics_http.reset();
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<GeneratorArgs>();
  sub.add_option("--config", args->config, "spar YAML config (its generator: section)")->required();
  sub.add_option("--listen", args->listen, "override generator.listen (host:port, port 0 = any)");
  sub.add_option("--ready-file", args->ready_file,
                 "write the bound host:port to this file once serving (for launchers)");
  sub.add_option("--http-listen", args->http_listen,
                 "override generator.http_listen: serve the OpenAI-compatible API here");
  sub.add_option("--metrics-listen", args->metrics_listen, "override generator.metrics_listen (/metrics)");
  sub.add_option("--model", args->model, "override generator.model (HF folder)");
  sub.add_option("--id", args->id, "override generator.id (its name in logs, metrics and rollouts)");
  sub.add_option("--policy-version", args->policy_version, "version of the weights it starts with");
  sub.add_option("--bus", args->bus, "publish metrics and lifecycle events to this bus broker (tcp://host:port)");
  sub.callback([args]() { Exit(RunGenerator(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("generator",
                      "Serve the Generator gRPC service (rollouts, weight updates, OpenAI-compatible HTTP)",
                      10, Setup);

}  // namespace spar::cli
