#include "bus/bus.h"

#include <chrono>

#include <zmq.hpp>

#include "common/logging.h"

namespace spar {
namespace {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ZeroMQ wants "*" for "any port"; spar configs say port 0 like gRPC does.
std::string BindSpec(const std::string& endpoint) {
  if (endpoint.size() > 2 && endpoint.compare(endpoint.size() - 2, 2, ":0") == 0)
    return endpoint.substr(0, endpoint.size() - 1) + "*";
  return endpoint;
}

Status CheckEndpoint(const std::string& endpoint, const char* what) {
  if (endpoint.rfind("tcp://", 0) != 0 && endpoint.rfind("ipc://", 0) != 0 &&
      endpoint.rfind("inproc://", 0) != 0)
    return InvalidArgument(std::string(what) + " endpoint '" + endpoint +
                           "' must start with tcp://, ipc:// or inproc://");
  return Status::Ok();
}

}  // namespace

std::string BusTopic(const v1::BusEnvelope& e) {
  const char* kind = "event";
  switch (e.payload_case()) {
    case v1::BusEnvelope::kLifecycle: kind = "lifecycle"; break;
    case v1::BusEnvelope::kMetrics: kind = "metrics"; break;
    case v1::BusEnvelope::kActor: kind = "actor"; break;
    default: break;
  }
  return std::string(kind) + "." + e.service() + "." + e.source();
}

Result<std::unique_ptr<BusBroker>> BusBroker::Start(const BusAddresses& bind) {
  SPAR_RETURN_IF_ERROR(CheckEndpoint(bind.publish, "bus publish"));
  SPAR_RETURN_IF_ERROR(CheckEndpoint(bind.subscribe, "bus subscribe"));
  std::unique_ptr<BusBroker> broker(new BusBroker());
  try {
    broker->context_ = std::make_unique<zmq::context_t>(1);
    broker->frontend_ = std::make_unique<zmq::socket_t>(*broker->context_, zmq::socket_type::xsub);
    broker->backend_ = std::make_unique<zmq::socket_t>(*broker->context_, zmq::socket_type::xpub);
    broker->frontend_->set(zmq::sockopt::linger, 0);
    broker->backend_->set(zmq::sockopt::linger, 0);
    broker->backend_->set(zmq::sockopt::sndhwm, 100000);
    broker->frontend_->bind(BindSpec(bind.publish));
    broker->backend_->bind(BindSpec(bind.subscribe));
    broker->addresses_.publish = broker->frontend_->get(zmq::sockopt::last_endpoint);
    broker->addresses_.subscribe = broker->backend_->get(zmq::sockopt::last_endpoint);
    // A control socket lets the destructor stop the proxy cleanly.
    static std::atomic<int> counter{0};
    broker->control_address_ = "inproc://spar-bus-control-" + std::to_string(counter++);
    auto control_sub = std::make_shared<zmq::socket_t>(*broker->context_, zmq::socket_type::sub);
    control_sub->set(zmq::sockopt::subscribe, "");
    control_sub->bind(broker->control_address_);
    broker->control_ = std::make_unique<zmq::socket_t>(*broker->context_, zmq::socket_type::pub);
    broker->control_->connect(broker->control_address_);
    BusBroker* raw = broker.get();
    auto stopped = broker->stopped_;
    broker->thread_ = std::thread([raw, control_sub, stopped]() {
      try {
        zmq::proxy_steerable(*raw->frontend_, *raw->backend_, zmq::socket_ref(),
                             *control_sub);
      } catch (const zmq::error_t& e) {
        if (e.num() != ETERM) Logger("bus")->error("bus proxy stopped: {}", e.what());
      }
      control_sub->close();
      stopped->store(true);
    });
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot start the bus on " + bind.publish + " / " + bind.subscribe + ": " +
                       e.what());
  }
  Logger("bus")->info("bus broker: publish {} subscribe {}", broker->addresses_.publish,
                      broker->addresses_.subscribe);
  return broker;
}

BusBroker::~BusBroker() {
  if (thread_.joinable()) {
    // A PUB/SUB pair may drop the very first message while the subscription
    // settles, so repeat TERMINATE until the proxy has returned.
    for (int i = 0; i < 400 && !stopped_->load(); ++i) {
      try {
        control_->send(zmq::str_buffer("TERMINATE"), zmq::send_flags::dontwait);
      } catch (const zmq::error_t&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!stopped_->load()) context_->shutdown();  // last resort: ETERM ends the proxy
    thread_.join();
  }
  control_.reset();
  frontend_.reset();
  backend_.reset();
  context_.reset();
}

Result<std::unique_ptr<BusPublisher>> BusPublisher::Connect(const std::string& publish_address,
                                                            const std::string& source,
                                                            const std::string& service) {
  SPAR_RETURN_IF_ERROR(CheckEndpoint(publish_address, "bus publish"));
  std::unique_ptr<BusPublisher> p(new BusPublisher());
  p->source_ = source;
  p->service_ = service;
  try {
    p->context_ = std::make_unique<zmq::context_t>(1);
    p->socket_ = std::make_unique<zmq::socket_t>(*p->context_, zmq::socket_type::pub);
    p->socket_->set(zmq::sockopt::linger, 200);
    p->socket_->set(zmq::sockopt::sndhwm, 10000);
    p->socket_->connect(publish_address);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot connect to the bus at " + publish_address + ": " + e.what());
  }
  return p;
}

BusPublisher::~BusPublisher() {
  socket_.reset();
  context_.reset();
}

Status BusPublisher::Publish(v1::BusEnvelope envelope) {
  std::lock_guard<std::mutex> lock(mutex_);
  envelope.set_source(source_);
  envelope.set_service(service_);
  envelope.set_unix_micros(NowMicros());
  envelope.set_sequence(++sequence_);
  const std::string topic = BusTopic(envelope);
  std::string body;
  if (!envelope.SerializeToString(&body)) return Internal("bus: cannot serialize an envelope");
  try {
    auto sent = socket_->send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!sent) return Unavailable("bus: publisher queue full, message dropped");
    socket_->send(zmq::buffer(body), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("bus: publish failed: ") + e.what());
  }
  return Status::Ok();
}

Status BusPublisher::PublishLifecycle(v1::LifecycleEvent::Kind kind, const std::string& address,
                                      const std::string& detail) {
  v1::BusEnvelope e;
  e.mutable_lifecycle()->set_kind(kind);
  e.mutable_lifecycle()->set_address(address);
  e.mutable_lifecycle()->set_detail(detail);
  return Publish(std::move(e));
}

Status BusPublisher::PublishMetrics(const v1::MetricsSnapshot& metrics) {
  v1::BusEnvelope e;
  *e.mutable_metrics() = metrics;
  return Publish(std::move(e));
}

Result<std::unique_ptr<BusSubscriber>> BusSubscriber::Connect(
    const std::string& subscribe_address, const std::vector<std::string>& prefixes) {
  SPAR_RETURN_IF_ERROR(CheckEndpoint(subscribe_address, "bus subscribe"));
  std::unique_ptr<BusSubscriber> s(new BusSubscriber());
  try {
    s->context_ = std::make_unique<zmq::context_t>(1);
    s->socket_ = std::make_unique<zmq::socket_t>(*s->context_, zmq::socket_type::sub);
    s->socket_->set(zmq::sockopt::linger, 0);
    s->socket_->set(zmq::sockopt::rcvhwm, 100000);
    if (prefixes.empty()) s->socket_->set(zmq::sockopt::subscribe, "");
    for (const auto& p : prefixes) s->socket_->set(zmq::sockopt::subscribe, p);
    s->socket_->connect(subscribe_address);
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot subscribe to the bus at " + subscribe_address + ": " + e.what());
  }
  return s;
}

BusSubscriber::~BusSubscriber() {
  socket_.reset();
  context_.reset();
}

Result<std::optional<BusMessage>> BusSubscriber::Receive(std::chrono::milliseconds timeout) {
  try {
    zmq::pollitem_t item{static_cast<void*>(*socket_), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if (!(item.revents & ZMQ_POLLIN)) return std::optional<BusMessage>();
    zmq::message_t topic, body;
    if (!socket_->recv(topic, zmq::recv_flags::none)) return std::optional<BusMessage>();
    BusMessage m;
    m.topic = topic.to_string();
    if (!topic.more()) return DataLoss("bus: message '" + m.topic + "' has no body frame");
    if (!socket_->recv(body, zmq::recv_flags::none)) return DataLoss("bus: body frame lost");
    // Drain any unexpected extra frames so the next Receive starts clean.
    while (body.more()) {
      zmq::message_t extra;
      if (!socket_->recv(extra, zmq::recv_flags::none) || !extra.more()) break;
    }
    if (!m.envelope.ParseFromArray(body.data(), static_cast<int>(body.size())))
      return DataLoss("bus: message '" + m.topic + "' is not a valid BusEnvelope");
    return std::optional<BusMessage>(std::move(m));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("bus: receive failed: ") + e.what());
  }
}

}  // namespace spar
