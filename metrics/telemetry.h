// spar/metrics/telemetry.h — what every service runs to be watched: its
// metrics published on the ZeroMQ bus every interval (with a heartbeat),
// served as Prometheus text on /metrics, and the metric names the scorer,
// learner and orchestrator register so `spar top`, `spar report` and the
// Grafana dashboard (deploy/grafana/spar-dashboard.json) can find them.
//
// Lifecycle on the bus: READY when started, then every interval one
// MetricsSnapshot followed by a HEARTBEAT, and STOPPED (detail "stopping")
// when the ServiceTelemetry is destroyed. Monitors mark a source down when
// they hear nothing from it for a few intervals, so a killed process shows
// as down even though it never said STOPPED.
//
// Thread safety: Start() and the destructor from one thread; the other
// methods from any thread. The registry is only read (Snapshot and
// PrometheusText are thread safe) and must outlive the ServiceTelemetry.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "metrics/metrics.h"
#include "spar/v1/bus.pb.h"

namespace spar {

class BusPublisher;
class MetricsHttpServer;

// Metric family names. The generator's families are registered in
// services/generator/generator_core.cc (label generator=<id>); the others
// are what the scorer, learner and orchestrator register, labelled
// scorer=<id> / learner=<id> where there can be several.
namespace metric_names {
// Generator (label generator=<id>).
inline constexpr char kGeneratorTokensTotal[] = "spar_generator_tokens_total";          // counter
inline constexpr char kGeneratorRolloutsTotal[] = "spar_generator_rollouts_total";      // counter
inline constexpr char kGeneratorTokensPerSecond[] = "spar_generator_tokens_per_second";  // gauge
// Rollouts/s over the last few seconds (the process derives it from the
// counter with a RateGauge, so a Prometheus user needs no rate()).
inline constexpr char kGeneratorRolloutsPerSecond[] = "spar_generator_rollouts_per_second";  // gauge
inline constexpr char kGeneratorBusySlots[] = "spar_generator_busy_slots";              // gauge
// Decode slots configured (max_batch), so occupancy = busy / max; and the
// occupancy itself, 0..1.
inline constexpr char kGeneratorMaxSlots[] = "spar_generator_max_slots";                // gauge
inline constexpr char kGeneratorBatchOccupancy[] = "spar_generator_batch_occupancy";    // gauge
inline constexpr char kGeneratorQueueDepth[] = "spar_generator_queue_depth";            // gauge
inline constexpr char kGeneratorPolicyVersion[] = "spar_generator_policy_version";      // gauge
inline constexpr char kGeneratorTimeToFirstToken[] = "spar_generator_time_to_first_token_seconds";  // histogram
// Weight sync (receiver side, label generator=<id>).
inline constexpr char kWeightSyncBytesTotal[] = "spar_weight_sync_bytes_total";      // counter
inline constexpr char kWeightSyncSeconds[] = "spar_weight_sync_seconds";             // histogram
inline constexpr char kWeightSyncAppliedTotal[] = "spar_weight_sync_applied_total";  // counter
// GB/s of the last applied update (bytes / seconds of that update).
inline constexpr char kWeightSyncGigabytesPerSecond[] = "spar_weight_sync_gigabytes_per_second";  // gauge
// Sender side, the orchestrator's view of the learner's publication down the
// generator chain at the end of each iteration (last iteration's figures).
inline constexpr char kWeightPublishSeconds[] = "spar_weight_publish_seconds";          // gauge
inline constexpr char kWeightPublishBytes[] = "spar_weight_publish_bytes";              // gauge
inline constexpr char kWeightPublishGigabytesPerSecond[] = "spar_weight_publish_gigabytes_per_second";  // gauge
// Scorer (label scorer=<id>).
inline constexpr char kScorerGroupsTotal[] = "spar_scorer_groups_total";        // counter: groups scored
inline constexpr char kScorerResponsesTotal[] = "spar_scorer_responses_total";  // counter: responses scored
// Seconds from a Score request's arrival to its answer (queue + model).
inline constexpr char kScorerLatencySeconds[] = "spar_scorer_latency_seconds";  // histogram: per request
inline constexpr char kScorerQueueDepth[] = "spar_scorer_queue_depth";          // gauge: groups waiting
inline constexpr char kScorerGroupsPerSecond[] = "spar_scorer_groups_per_second";        // gauge (RateGauge)
inline constexpr char kScorerResponsesPerSecond[] = "spar_scorer_responses_per_second";  // gauge (RateGauge)
// Learner (label learner=<id>).
inline constexpr char kLearnerStep[] = "spar_learner_step";                          // gauge: optimizer step
inline constexpr char kLearnerLoss[] = "spar_learner_loss";                          // gauge: last step's loss
inline constexpr char kLearnerLearningRate[] = "spar_learner_learning_rate";         // gauge
inline constexpr char kLearnerGradNorm[] = "spar_learner_grad_norm";                 // gauge: before clipping
inline constexpr char kLearnerTokensPerSecond[] = "spar_learner_tokens_per_second";  // gauge
inline constexpr char kLearnerTokensTotal[] = "spar_learner_tokens_total";           // counter
// The weights the learner last published: version, and the revision of the
// last intermediate publication within it (learner.publish_every_steps).
inline constexpr char kLearnerPolicyVersion[] = "spar_learner_policy_version";    // gauge
inline constexpr char kLearnerPolicyRevision[] = "spar_learner_policy_revision";  // gauge
// Seconds the learner sat idle waiting for a batch; its rate is the fraction
// of time the learner starves.
inline constexpr char kLearnerDataWaitSecondsTotal[] = "spar_learner_data_wait_seconds_total";  // counter
// Orchestrator.
inline constexpr char kOrchestratorIteration[] = "spar_orchestrator_iteration";    // gauge: current, 0-based
inline constexpr char kOrchestratorIterations[] = "spar_orchestrator_iterations";  // gauge: planned in this run
// Prompts of the current iteration per stage (label stage=<one of kStages>);
// their sum is the iteration's size.
inline constexpr char kOrchestratorPrompts[] = "spar_orchestrator_prompts";  // gauge{stage}
inline constexpr const char* kOrchestratorStages[] = {"pending", "generating", "scoring", "training", "done"};
// Prompts that finished every stage, over the whole run.
inline constexpr char kOrchestratorPromptsTotal[] = "spar_orchestrator_prompts_total";  // counter
// How long a prompt waited in front of a stage (label stage=generation |
// scoring | training): from becoming ready for it (pending / generated /
// scored) until the stage started on it. Long waits in front of a stage
// mean the stage before outruns it.
inline constexpr char kOrchestratorStageWaitSeconds[] = "spar_orchestrator_stage_wait_seconds";  // histogram{stage}
// Seconds a stage sat idle waiting on the stage before it (label stage=
// scoring | training); its rate is the fraction of time the stage starves.
inline constexpr char kOrchestratorStageIdleSecondsTotal[] =
    "spar_orchestrator_stage_idle_seconds_total";  // counter{stage}
// Seconds the pipeline spent in each stage's calls (label stage=generation
// | scoring | training), summed over concurrent calls.
inline constexpr char kOrchestratorStageBusySecondsTotal[] =
    "spar_orchestrator_stage_busy_seconds_total";  // counter{stage}
// Rollouts and response tokens the orchestrator received, over the run.
inline constexpr char kOrchestratorRolloutsTotal[] = "spar_orchestrator_rollouts_total";  // counter
inline constexpr char kOrchestratorRolloutTokensTotal[] = "spar_orchestrator_rollout_tokens_total";  // counter
}  // namespace metric_names

struct ServiceTelemetryOptions {
  std::string service;       // "generator" | "scorer" | "learner" | "orchestrator"
  std::string source;        // this process on the bus, e.g. "generator-0"
  std::string bus_publish;   // broker's publish address; "" = no bus
  std::string metrics_listen;  // "host:port" for /metrics (port 0 = any); "" = none
  std::string address;       // the service's own (gRPC) address, put in lifecycle events
  std::chrono::milliseconds interval{1000};
};

class ServiceTelemetry {
 public:
  // Connects to the bus (never blocks: ZeroMQ reconnects), starts the
  // /metrics server, publishes READY and starts the publishing thread.
  // InvalidArgument for an empty service/source or a non-positive interval,
  // Unavailable if /metrics cannot bind, the bus error if the publish
  // address is malformed. `registry` is not owned.
  static Result<std::unique_ptr<ServiceTelemetry>> Start(const ServiceTelemetryOptions& options,
                                                         const MetricsRegistry* registry);
  // Stops the thread, publishes a last snapshot and STOPPED ("stopping"),
  // and stops /metrics.
  ~ServiceTelemetry();
  ServiceTelemetry(const ServiceTelemetry&) = delete;
  ServiceTelemetry& operator=(const ServiceTelemetry&) = delete;

  // Publishes a lifecycle event now (DRAINING, FAILED, ...). OK without a
  // bus; the publisher's error when the message was dropped.
  Status PublishLifecycle(v1::LifecycleEvent::Kind kind, const std::string& detail = "");
  // Publishes a snapshot now (e.g. right after an iteration ends).
  Status PublishSnapshot();

  // "host:port" of /metrics, "" when not served.
  std::string metrics_address() const;
  // Snapshots published so far (and dropped at the high-water mark).
  uint64_t snapshots_published() const { return published_.load(); }
  uint64_t snapshots_dropped() const { return dropped_.load(); }

 private:
  ServiceTelemetry() = default;
  void Loop();

  ServiceTelemetryOptions options_;
  const MetricsRegistry* registry_ = nullptr;
  std::unique_ptr<BusPublisher> publisher_;
  std::unique_ptr<MetricsHttpServer> http_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::atomic<uint64_t> published_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace spar
