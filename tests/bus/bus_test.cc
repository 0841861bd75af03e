// The bus on real ZeroMQ over loopback TCP.
#include "bus/bus.h"

#include <thread>

#include <zmq.hpp>

#include <gtest/gtest.h>

namespace spar {
namespace {

// PUB/SUB joins asynchronously: publish until the subscriber sees a message
// (bounded), then test what follows.
void AwaitJoin(BusPublisher& pub, BusSubscriber& sub) {
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(pub.PublishMetrics(v1::MetricsSnapshot()).ok());
    auto m = sub.Receive(std::chrono::milliseconds(20));
    ASSERT_TRUE(m.ok());
    if (m->has_value()) {
      // Drain the rest of the join heartbeats.
      while (true) {
        auto more = sub.Receive(std::chrono::milliseconds(50));
        if (!more.ok() || !more->has_value()) return;
      }
    }
  }
  FAIL() << "subscriber never joined";
}

TEST(BusTest, MetricsAndLifecycleFlowThroughTheBroker) {
  auto broker = BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"});
  ASSERT_TRUE(broker.ok()) << broker.status().ToString();
  const auto& addr = (*broker)->addresses();
  EXPECT_NE(addr.publish.find("127.0.0.1:"), std::string::npos);

  auto pub = BusPublisher::Connect(addr.publish, "generator-0", "generator");
  auto all = BusSubscriber::Connect(addr.subscribe, {});
  auto metrics_only = BusSubscriber::Connect(addr.subscribe, {"metrics."});
  ASSERT_TRUE(pub.ok() && all.ok() && metrics_only.ok());
  AwaitJoin(**pub, **all);
  AwaitJoin(**pub, **metrics_only);
  for (auto* s : {all->get(), metrics_only->get()}) {
    while (true) {
      auto m = s->Receive(std::chrono::milliseconds(100));
      ASSERT_TRUE(m.ok());
      if (!m->has_value()) break;
    }
  }

  v1::MetricsSnapshot snapshot;
  auto* m = snapshot.add_metrics();
  m->set_name("spar_generator_tokens_total");
  m->set_type(v1::Metric::COUNTER);
  m->set_value(1234);
  ASSERT_TRUE((*pub)->PublishMetrics(snapshot).ok());
  ASSERT_TRUE((*pub)->PublishLifecycle(v1::LifecycleEvent::READY, "127.0.0.1:50051").ok());

  auto first = (*metrics_only)->Receive(std::chrono::seconds(5));
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->topic, "metrics.generator.generator-0");
  EXPECT_EQ((*first)->envelope.metrics().metrics(0).value(), 1234);
  EXPECT_EQ((*first)->envelope.source(), "generator-0");
  EXPECT_GT((*first)->envelope.unix_micros(), 0);
  // The lifecycle event is not for this subscriber.
  auto none = (*metrics_only)->Receive(std::chrono::milliseconds(200));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  auto a = (*all)->Receive(std::chrono::seconds(5));
  auto b = (*all)->Receive(std::chrono::seconds(5));
  ASSERT_TRUE(a.ok() && a->has_value() && b.ok() && b->has_value());
  EXPECT_EQ((*b)->topic, "lifecycle.generator.generator-0");
  EXPECT_EQ((*b)->envelope.lifecycle().kind(), v1::LifecycleEvent::READY);
  EXPECT_EQ((*b)->envelope.sequence(), (*a)->envelope.sequence() + 1);
}

TEST(BusTest, BadEndpointsAreClearErrors) {
  auto broker = BusBroker::Start({"127.0.0.1:5555", "tcp://127.0.0.1:0"});
  ASSERT_FALSE(broker.ok());
  EXPECT_NE(broker.status().message().find("tcp://"), std::string::npos);
  auto taken = BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"});
  ASSERT_TRUE(taken.ok());
  auto clash = BusBroker::Start({(*taken)->addresses().publish, "tcp://127.0.0.1:0"});
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), StatusCode::kUnavailable);
}

TEST(BusTest, GarbageOnTheBusIsDataLossNotACrash) {
  auto broker = BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"});
  ASSERT_TRUE(broker.ok());
  auto sub = BusSubscriber::Connect((*broker)->addresses().subscribe, {});
  ASSERT_TRUE(sub.ok());
  zmq::context_t ctx;
  zmq::socket_t raw(ctx, zmq::socket_type::pub);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect((*broker)->addresses().publish);
  bool saw_error = false;
  for (int i = 0; i < 200 && !saw_error; ++i) {
    raw.send(zmq::str_buffer("metrics.x.y"), zmq::send_flags::sndmore);
    raw.send(zmq::str_buffer("\xff\xff\xff not a protobuf"), zmq::send_flags::none);
    auto m = (*sub)->Receive(std::chrono::milliseconds(20));
    if (!m.ok()) {
      EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
      saw_error = true;
    }
  }
  EXPECT_TRUE(saw_error);
}

}  // namespace
}  // namespace spar
