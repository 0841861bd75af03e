#include "metrics/telemetry.h"

#include "bus/bus.h"
#include "common/logging.h"
#include "metrics/metrics_http.h"

namespace spar {

Result<std::unique_ptr<ServiceTelemetry>> ServiceTelemetry::Start(const ServiceTelemetryOptions& options,
                                                                  const MetricsRegistry* registry) {
  if (options.service.empty()) return InvalidArgument("telemetry: service is empty");
  if (options.source.empty()) return InvalidArgument("telemetry: source is empty");
  if (options.interval.count() <= 0)
    return InvalidArgument("telemetry: interval must be > 0 ms, got " + std::to_string(options.interval.count()));
  if (registry == nullptr) return InvalidArgument("telemetry: registry is null");
  std::unique_ptr<ServiceTelemetry> t(new ServiceTelemetry());
  t->options_ = options;
  t->registry_ = registry;
  if (!options.metrics_listen.empty()) {
    auto http = MetricsHttpServer::Start(options.metrics_listen, registry);
    if (!http.ok()) return http.status().WithContext("telemetry /metrics");
    t->http_ = std::move(http).value();
  }
  if (!options.bus_publish.empty()) {
    auto pub = BusPublisher::Connect(options.bus_publish, options.source, options.service);
    if (!pub.ok()) return pub.status().WithContext("telemetry bus");
    t->publisher_ = std::move(pub).value();
    // A subscriber that joins later learns of us from the heartbeats; READY
    // is for the ones already listening.
    t->PublishLifecycle(v1::LifecycleEvent::READY, "started").IgnoreError();
  }
  if (t->publisher_) t->thread_ = std::thread([raw = t.get()] { raw->Loop(); });
  return t;
}

ServiceTelemetry::~ServiceTelemetry() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (publisher_) {
    // Best effort on the way out: a monitor that misses these still sees
    // the source go silent and marks it down.
    PublishSnapshot().IgnoreError();
    PublishLifecycle(v1::LifecycleEvent::STOPPED, "stopping").IgnoreError();
  }
  http_.reset();
}

void ServiceTelemetry::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    if (wake_.wait_for(lock, options_.interval, [this] { return stop_; })) break;
    lock.unlock();
    PublishSnapshot().IgnoreError();  // counted in dropped_; the next interval retries
    PublishLifecycle(v1::LifecycleEvent::HEARTBEAT).IgnoreError();
    lock.lock();
  }
}

Status ServiceTelemetry::PublishLifecycle(v1::LifecycleEvent::Kind kind, const std::string& detail) {
  if (!publisher_) return Status::Ok();
  return publisher_->PublishLifecycle(kind, options_.address, detail);
}

Status ServiceTelemetry::PublishSnapshot() {
  if (!publisher_) return Status::Ok();
  Status s = publisher_->PublishMetrics(registry_->Snapshot());
  if (s.ok()) {
    ++published_;
  } else {
    ++dropped_;
  }
  return s;
}

std::string ServiceTelemetry::metrics_address() const { return http_ ? http_->address() : std::string(); }

}  // namespace spar
