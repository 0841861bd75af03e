// spar/bus/bus.h — the ZeroMQ message bus: lifecycle and metrics events
// published by every service and read by the orchestrator and monitors.
//
// Shape: one BusBroker (run by the orchestrator, or `spar run`) binds two
// endpoints and forwards between them (an XSUB/XPUB proxy):
//   publishers  --PUB connect-->  publish endpoint   (XSUB)
//   subscribers --SUB connect-->  subscribe endpoint (XPUB)
// so services and monitors only need the broker's two addresses, and come
// and go in any order. Messages are two frames: a topic
// ("<kind>.<service>.<source>", e.g. "metrics.generator.generator-0") for
// prefix filtering, then a serialized spar.v1.BusEnvelope.
//
// Delivery is PUB/SUB: best effort, no replay; a slow subscriber drops
// messages beyond its high-water mark rather than stalling publishers.
// Events that must not be lost go to the run store, not only the bus.
//
// Thread safety: BusPublisher may be used from any thread (it locks);
// BusSubscriber from one thread at a time; the broker runs its own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "spar/v1/bus.pb.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace spar {

struct BusAddresses {
  std::string publish;    // e.g. "tcp://127.0.0.1:5555" (publishers connect here)
  std::string subscribe;  // e.g. "tcp://127.0.0.1:5556" (subscribers connect here)
};

class BusBroker {
 public:
  // Binds both endpoints ("tcp://127.0.0.1:0" picks free ports; the bound
  // addresses are in addresses()). Unavailable if an endpoint cannot be
  // bound, InvalidArgument for a malformed endpoint.
  static Result<std::unique_ptr<BusBroker>> Start(const BusAddresses& bind);
  ~BusBroker();
  const BusAddresses& addresses() const { return addresses_; }

 private:
  BusBroker() = default;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> frontend_;
  std::unique_ptr<zmq::socket_t> backend_;
  std::unique_ptr<zmq::socket_t> control_;
  std::string control_address_;
  BusAddresses addresses_;
  std::shared_ptr<std::atomic<bool>> stopped_ = std::make_shared<std::atomic<bool>>(false);
  std::thread thread_;
};

class BusPublisher {
 public:
  // `source` names this process on the bus ("generator-0"); `service` its
  // kind ("generator"). Connecting never blocks: ZeroMQ reconnects.
  static Result<std::unique_ptr<BusPublisher>> Connect(const std::string& publish_address,
                                                       const std::string& source,
                                                       const std::string& service);
  ~BusPublisher();

  // Stamps source/service/time/sequence into the envelope and sends it
  // under "<kind>.<service>.<source>". Never blocks (drops when the
  // high-water mark is hit, and says so in the return value).
  Status Publish(v1::BusEnvelope envelope);
  Status PublishLifecycle(v1::LifecycleEvent::Kind kind, const std::string& address,
                          const std::string& detail = "");
  Status PublishMetrics(const v1::MetricsSnapshot& metrics);

  const std::string& source() const { return source_; }

 private:
  BusPublisher() = default;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::mutex mutex_;
  std::string source_;
  std::string service_;
  uint64_t sequence_ = 0;
};

struct BusMessage {
  std::string topic;
  v1::BusEnvelope envelope;
};

class BusSubscriber {
 public:
  // Subscribes to every topic starting with one of `prefixes` (empty list
  // or "" = everything).
  static Result<std::unique_ptr<BusSubscriber>> Connect(const std::string& subscribe_address,
                                                        const std::vector<std::string>& prefixes);
  ~BusSubscriber();

  // The next message, or nullopt after `timeout`. DataLoss for a message
  // that is not a valid envelope (it is consumed; the next call goes on).
  Result<std::optional<BusMessage>> Receive(std::chrono::milliseconds timeout);

 private:
  BusSubscriber() = default;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
};

// "<kind>.<service>.<source>" for an envelope.
std::string BusTopic(const v1::BusEnvelope& envelope);

}  // namespace spar
