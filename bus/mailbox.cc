#include "bus/mailbox.h"

#include <zmq.hpp>

namespace spar {

zmq::context_t& ActorContext() {
  static zmq::context_t* context = new zmq::context_t(1);  // lives for the process
  return *context;
}

namespace {
std::string Endpoint(const std::string& name) { return "inproc://spar-actor-" + name; }
}  // namespace

Result<std::unique_ptr<Mailbox>> Mailbox::Create(const std::string& name) {
  std::unique_ptr<Mailbox> m(new Mailbox());
  m->name_ = name;
  try {
    m->socket_ = std::make_unique<zmq::socket_t>(ActorContext(), zmq::socket_type::pull);
    m->socket_->set(zmq::sockopt::linger, 0);
    m->socket_->set(zmq::sockopt::rcvhwm, 1000000);
    m->socket_->bind(Endpoint(name));
  } catch (const zmq::error_t& e) {
    return AlreadyExists("mailbox '" + name + "' cannot be created: " + e.what());
  }
  return m;
}

Mailbox::~Mailbox() = default;

std::optional<v1::ActorMessage> Mailbox::Receive(std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{static_cast<void*>(*socket_), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, timeout);
  if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
  zmq::message_t msg;
  if (!socket_->recv(msg, zmq::recv_flags::dontwait)) return std::nullopt;
  v1::ActorMessage out;
  if (!out.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
    out.set_kind("invalid");
  }
  return out;
}

Result<std::unique_ptr<MailboxAddress>> MailboxAddress::Connect(const std::string& name) {
  std::unique_ptr<MailboxAddress> a(new MailboxAddress());
  a->name_ = name;
  try {
    a->socket_ = std::make_unique<zmq::socket_t>(ActorContext(), zmq::socket_type::push);
    a->socket_->set(zmq::sockopt::linger, 0);
    a->socket_->set(zmq::sockopt::sndhwm, 1000000);
    a->socket_->connect(Endpoint(name));
  } catch (const zmq::error_t& e) {
    return Unavailable("cannot reach mailbox '" + name + "': " + e.what());
  }
  return a;
}

MailboxAddress::~MailboxAddress() = default;

Status MailboxAddress::Post(const std::string& kind, const std::string& body) {
  v1::ActorMessage m;
  m.set_to(name_);
  m.set_kind(kind);
  m.set_body(body);
  std::string bytes = m.SerializeAsString();
  std::lock_guard<std::mutex> lock(mutex_);
  try {
    socket_->send(zmq::buffer(bytes), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return Unavailable("post to mailbox '" + name_ + "' failed: " + e.what());
  }
  return Status::Ok();
}

}  // namespace spar
