// `spar learner --config FILE`: serves the Learner gRPC service (rank 0) or
// follows rank 0 as a data-parallel rank (rank > 0).
#include <atomic>
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "common/files.h"
#include "common/logging.h"
#include "metrics/telemetry.h"
#include "orchestrator/launcher.h"
#include "services/common/server.h"
#include "services/learner/causal_lm_policy.h"
#include "services/learner/learner_config.h"
#include "services/learner/learner_core.h"
#include "services/learner/learner_service.h"

namespace spar::cli {
namespace {

struct LearnerArgs {
  std::string config;
  std::string listen;
  std::string ready_file;
  int rank = -1;
  int world_size = -1;
  std::string rendezvous;
  std::string model;
  uint64_t policy_version = 0;
  std::string bus;
  std::string metrics_listen;
};

std::atomic<bool> g_stop{false};

int RunLearner(const LearnerArgs& args) {
  std::string log_level = "info";
  auto config = LoadLearnerConfig(args.config, &log_level);
  if (!config.ok()) return Fail("learner", config.status());
  SetLogLevel(log_level).IgnoreError();  // validated by the config reader
  if (!args.listen.empty()) config->listen = args.listen;
  if (args.rank >= 0) config->rank = args.rank;
  if (args.world_size > 0) config->world_size = args.world_size;
  if (!args.rendezvous.empty()) config->rendezvous = args.rendezvous;
  if (!args.model.empty()) config->model = args.model;
  if (config->rank >= config->world_size)
    return Fail("learner", InvalidArgument("learner.rank " + std::to_string(config->rank) +
                                           " must be below learner.world_size " +
                                           std::to_string(config->world_size)));
  SetLogProcessTag("learner" + std::to_string(config->rank));
  auto log = Logger("learner");
  if (config->model.empty()) return Fail("learner", InvalidArgument(args.config + ": learner.model: missing"));
  // Parameters (and optimiser state) stay float32 on every device: with
  // learner.dtype bfloat16 the forward is autocast, the master weights not.
  auto policy = CausalLMPolicy::Load(config->model, config->device, "float32");
  if (!policy.ok()) return Fail("learner", policy.status());
  log->info("policy {} loaded: {} parameters on {}", config->model,
            (*policy)->model()->config().NumParameters(), config->device);

  std::unique_ptr<DataParallelGroup> group;
  if (config->world_size > 1) {
    DataParallelOptions dp;
    dp.rank = config->rank;
    dp.world_size = config->world_size;
    dp.store_address = config->rendezvous;
    dp.backend = config->backend;
    dp.device = config->device;
    auto joined = DataParallelGroup::Create(dp);
    if (!joined.ok()) return Fail("learner", joined.status());
    group = std::move(*joined);
    log->info("rank {} of {} joined at {}", config->rank, config->world_size, config->rendezvous);
  }
  if (config->rank > 0) {
    Status s = LearnerCore::RunFollower(*config, std::move(*policy), std::move(group));
    if (!s.ok()) return Fail("learner", s);
    return 0;
  }
  auto core = LearnerCore::Create(*config, std::move(*policy), std::move(group), args.policy_version);
  if (!core.ok()) return Fail("learner", core.status());
  LearnerService service(core->get());
  GrpcServerOptions options;
  options.address = config->listen;
  auto server = StartGrpcServer(options, {&service});
  if (!server.ok()) return Fail("learner", server.status());
  log->info("serving Learner on {} (loss {}, optimizer {}, lr {})", server->address,
            LossKindName(config->loss.kind), config->optimizer, config->learning_rate);
  MetricsRegistry metrics;
  const MetricLabels labels{{"learner", "learner-0"}};
  auto* step = metrics.GetGauge(metric_names::kLearnerStep, "Optimizer step in this iteration", labels);
  auto* loss = metrics.GetGauge(metric_names::kLearnerLoss, "Loss of the last step", labels);
  auto* lr = metrics.GetGauge(metric_names::kLearnerLearningRate, "Learning rate of the last step", labels);
  auto* grad_norm = metrics.GetGauge(metric_names::kLearnerGradNorm, "Gradient norm before clipping", labels);
  auto* tokens_per_second = metrics.GetGauge(metric_names::kLearnerTokensPerSecond, "Training tokens/s", labels);
  auto* waiting = metrics.GetCounter(metric_names::kLearnerDataWaitSecondsTotal, "Seconds waiting for data", labels);
  auto* version = metrics.GetGauge(metric_names::kLearnerPolicyVersion, "Policy version of the learner's weights", labels);
  auto* revision = metrics.GetGauge(metric_names::kLearnerPolicyRevision,
                                    "Last intermediate publication within that version (publish_every_steps)", labels);
  std::unique_ptr<ServiceTelemetry> telemetry;
  if (!args.bus.empty() || !args.metrics_listen.empty()) {
    auto started = ServiceTelemetry::Start({"learner", "learner-0", args.bus, args.metrics_listen, server->address},
                                           &metrics);
    if (!started.ok()) return Fail("learner", started.status());
    telemetry = std::move(*started);
  }
  if (!args.ready_file.empty()) {
    Status s = WriteReadyFile(args.ready_file, server->address, telemetry ? telemetry->metrics_address() : "");
    if (!s.ok()) return Fail("learner", s);
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  double waited = 0;
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto p = (*core)->Progress();
    step->Set(static_cast<double>(p.step));
    loss->Set(p.loss);
    lr->Set(p.learning_rate);
    grad_norm->Set(p.grad_norm);
    tokens_per_second->Set(p.tokens_per_second);
    version->Set(static_cast<double>(p.policy_version));
    revision->Set(static_cast<double>(p.policy_revision));
    if (p.seconds_waiting_for_data > waited) waiting->Increment(p.seconds_waiting_for_data - waited);
    waited = p.seconds_waiting_for_data;
  }
  log->info("shutting down");
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<LearnerArgs>();
  sub.add_option("--config", args->config, "spar YAML config (its learner: section)")->required();
  sub.add_option("--listen", args->listen, "override learner.listen (host:port, port 0 = any)");
  sub.add_option("--ready-file", args->ready_file,
                 "write the bound host:port to this file once serving (for launchers)");
  sub.add_option("--rank", args->rank, "override learner.rank (data-parallel rank)");
  sub.add_option("--world-size", args->world_size, "override learner.world_size");
  sub.add_option("--rendezvous", args->rendezvous, "override learner.rendezvous (host:port of the TCPStore)");
  sub.add_option("--model", args->model, "override learner.model (HF folder to start from)");
  sub.add_option("--policy-version", args->policy_version,
                 "version of the starting weights (a resumed run starts at its iteration)");
  sub.add_option("--bus", args->bus, "publish metrics and lifecycle events to this bus broker (tcp://host:port)");
  sub.add_option("--metrics-listen", args->metrics_listen, "serve Prometheus /metrics on host:port");
  sub.callback([args]() { Exit(RunLearner(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("learner", "Serve the Learner gRPC service (SPPO / GPO / DPO training)", 30, Setup);

}  // namespace spar::cli
