#include "metrics/metrics.h"

#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "metrics/metrics_http.h"

namespace spar {
namespace {

TEST(MetricsTest, PrometheusTextIsValidAndComplete) {
  MetricsRegistry r;
  r.GetCounter("spar_generator_tokens_total", "Tokens generated", {{"generator", "g0"}})->Increment(42);
  r.GetCounter("spar_generator_tokens_total", "Tokens generated", {{"generator", "g\"1"}})->Increment();
  r.GetGauge("spar_generator_queue_depth", "Sequences waiting")->Set(3);
  auto* h = r.GetHistogram("spar_scorer_latency_seconds", "Score latency", {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(5);
  std::string text = r.PrometheusText();
  ASSERT_TRUE(ValidatePrometheusText(text).ok()) << ValidatePrometheusText(text).ToString() << "\n" << text;
  EXPECT_NE(text.find("spar_generator_tokens_total{generator=\"g0\"} 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find("generator=\"g\\\"1\""), std::string::npos);
  EXPECT_NE(text.find("spar_scorer_latency_seconds_bucket{le=\"0.10000000000000001\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("spar_scorer_latency_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos);
  EXPECT_NE(text.find("spar_scorer_latency_seconds_count 3"), std::string::npos);

  auto snap = r.Snapshot();
  EXPECT_EQ(snap.metrics_size(), 4);
}

TEST(MetricsTest, ValidatorRejectsBrokenText) {
  EXPECT_FALSE(ValidatePrometheusText("spar_x 1\n").ok());  // no TYPE
  EXPECT_FALSE(ValidatePrometheusText("# TYPE spar_x gauge\nspar_x one\n").ok());
  EXPECT_FALSE(ValidatePrometheusText("# TYPE spar_x gauge\nspar_x{a=b} 1\n").ok());
  EXPECT_TRUE(ValidatePrometheusText("# TYPE spar_x gauge\nspar_x{a=\"b\"} 1.5e3\n").ok());
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  auto* c = r.GetCounter("spar_test_total", "t");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) c->Increment();
    });
  for (auto& t : threads) t.join();
  EXPECT_DOUBLE_EQ(c->value(), 40000);
}

TEST(MetricsTest, HttpEndpointServesMetrics) {
  MetricsRegistry r;
  r.GetGauge("spar_generator_policy_version", "Version served")->Set(2);
  auto server = MetricsHttpServer::Start("127.0.0.1:0", &r);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_TRUE(ValidatePrometheusText(res->body).ok());
  EXPECT_NE(res->body.find("spar_generator_policy_version 2"), std::string::npos);
  auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
}

}  // namespace
}  // namespace spar

namespace spar {
namespace {

TEST(MetricsTest, RateGaugeFollowsTheCounterOverItsWindow) {
  MetricsRegistry r;
  Counter* c = r.GetCounter("spar_test_things_total", "things");
  Gauge* g = r.GetGauge("spar_test_things_per_second", "things/s");
  RateGauge rate(c, g, std::chrono::seconds(4));
  const auto t0 = std::chrono::steady_clock::now();
  rate.Update(t0);
  EXPECT_EQ(g->value(), 0);  // one sample: no rate yet
  c->Increment(10);
  rate.Update(t0 + std::chrono::seconds(2));
  EXPECT_DOUBLE_EQ(g->value(), 5);
  c->Increment(30);
  rate.Update(t0 + std::chrono::seconds(4));
  EXPECT_DOUBLE_EQ(g->value(), 10);  // 40 over 4 s
  // The window slides: what happened before t0+2 s drops out.
  rate.Update(t0 + std::chrono::seconds(6));
  EXPECT_DOUBLE_EQ(g->value(), 30.0 / 4);  // 30 between t0+2 s and t0+6 s
  rate.Update(t0 + std::chrono::seconds(12));
  EXPECT_DOUBLE_EQ(g->value(), 0);  // idle for a whole window
}

}  // namespace
}  // namespace spar
