// ServiceTelemetry over a real ZeroMQ broker and a real /metrics server.
#include "metrics/telemetry.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "bus/bus.h"

namespace spar {
namespace {

using std::chrono::milliseconds;

TEST(ServiceTelemetryTest, RejectsBadOptions) {
  MetricsRegistry registry;
  ServiceTelemetryOptions options;
  options.service = "scorer";
  auto no_source = ServiceTelemetry::Start(options, &registry);
  ASSERT_FALSE(no_source.ok());
  EXPECT_EQ(no_source.status().code(), StatusCode::kInvalidArgument);
  options.source = "scorer-0";
  options.interval = milliseconds(0);
  auto zero = ServiceTelemetry::Start(options, &registry);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("interval"), std::string::npos);
  options.interval = milliseconds(100);
  EXPECT_FALSE(ServiceTelemetry::Start(options, nullptr).ok());
}

TEST(ServiceTelemetryTest, WithoutBusOrHttpIsANoOp) {
  MetricsRegistry registry;
  auto t = ServiceTelemetry::Start({"learner", "learner-0", "", "", "", milliseconds(10)}, &registry);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_TRUE((*t)->PublishSnapshot().ok());
  EXPECT_EQ((*t)->metrics_address(), "");
}

TEST(ServiceTelemetryTest, PublishesSnapshotsHeartbeatsAndStopping) {
  auto broker = BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"});
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();
  auto sub = BusSubscriber::Connect((*broker)->addresses().subscribe, {});
  ASSERT_TRUE(sub.ok());

  MetricsRegistry registry;
  registry.GetCounter(metric_names::kScorerGroupsTotal, "Groups scored", {{"scorer", "scorer-0"}})->Increment(7);
  ServiceTelemetryOptions options;
  options.service = "scorer";
  options.source = "scorer-0";
  options.bus_publish = (*broker)->addresses().publish;
  options.metrics_listen = "127.0.0.1:0";
  options.address = "127.0.0.1:50071";
  options.interval = milliseconds(50);
  auto telemetry = ServiceTelemetry::Start(options, &registry);
  ASSERT_TRUE(telemetry.ok()) << telemetry.status().ToString();

  // /metrics serves the same registry.
  const std::string address = (*telemetry)->metrics_address();
  ASSERT_FALSE(address.empty());
  httplib::Client client("127.0.0.1", std::stoi(address.substr(address.rfind(':') + 1)));
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("spar_scorer_groups_total{scorer=\"scorer-0\"} 7"), std::string::npos) << res->body;

  bool saw_metrics = false, saw_heartbeat = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((!saw_metrics || !saw_heartbeat) && std::chrono::steady_clock::now() < deadline) {
    auto m = (*sub)->Receive(milliseconds(200));
    ASSERT_TRUE(m.ok());
    if (!m->has_value()) continue;
    const auto& e = (*m)->envelope;
    EXPECT_EQ(e.source(), "scorer-0");
    EXPECT_EQ(e.service(), "scorer");
    if (e.has_metrics()) {
      ASSERT_GE(e.metrics().metrics_size(), 1);
      EXPECT_EQ(e.metrics().metrics(0).name(), "spar_scorer_groups_total");
      EXPECT_EQ(e.metrics().metrics(0).value(), 7);
      saw_metrics = true;
    }
    if (e.has_lifecycle() && e.lifecycle().kind() == v1::LifecycleEvent::HEARTBEAT) {
      EXPECT_EQ(e.lifecycle().address(), "127.0.0.1:50071");
      saw_heartbeat = true;
    }
  }
  EXPECT_TRUE(saw_metrics);
  EXPECT_TRUE(saw_heartbeat);
  EXPECT_GT((*telemetry)->snapshots_published(), 0u);

  telemetry->reset();  // the destructor says STOPPED
  bool saw_stopped = false;
  for (int i = 0; i < 100 && !saw_stopped; ++i) {
    auto m = (*sub)->Receive(milliseconds(100));
    ASSERT_TRUE(m.ok());
    if (!m->has_value()) break;
    const auto& e = (*m)->envelope;
    if (e.has_lifecycle() && e.lifecycle().kind() == v1::LifecycleEvent::STOPPED) {
      EXPECT_EQ(e.lifecycle().detail(), "stopping");
      saw_stopped = true;
    }
  }
  EXPECT_TRUE(saw_stopped);
}

TEST(ServiceTelemetryTest, MalformedBusAddressIsAnError) {
  MetricsRegistry registry;
  auto t = ServiceTelemetry::Start({"learner", "learner-0", "127.0.0.1:5555", "", "", milliseconds(100)}, &registry);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("telemetry bus"), std::string::npos) << t.status().ToString();
}

}  // namespace
}  // namespace spar
