// spar/bus/mailbox.h — actor mailboxes on ZeroMQ (inproc PUSH/PULL).
//
// An actor owns a Mailbox (the PULL end, read by the actor's own thread);
// anyone may Post() to it by name through a MailboxAddress (a PUSH end,
// serialised by a mutex, so any thread may post). Messages are
// spar.v1.ActorMessage: a kind and a body; actors pass ids, not data — the
// run store holds the data. Delivery is in order per sender, lossless
// while the mailbox lives (PUSH/PULL blocks rather than drops; the high-
// water mark is large).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "spar/v1/bus.pb.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace spar {

// One ZeroMQ context for every mailbox of a process (inproc endpoints only
// connect within a context).
zmq::context_t& ActorContext();

class Mailbox {
 public:
  // Binds inproc://spar-actor-<name>. AlreadyExists if the name is taken.
  static Result<std::unique_ptr<Mailbox>> Create(const std::string& name);
  ~Mailbox();
  const std::string& name() const { return name_; }
  // The next message, or nullopt after `timeout`. Only the owning thread
  // may call it.
  std::optional<v1::ActorMessage> Receive(std::chrono::milliseconds timeout);

 private:
  Mailbox() = default;
  std::string name_;
  std::unique_ptr<zmq::socket_t> socket_;
};

class MailboxAddress {
 public:
  // Connects to the mailbox named `name` (which must exist).
  static Result<std::unique_ptr<MailboxAddress>> Connect(const std::string& name);
  ~MailboxAddress();
  // Thread-safe. Unavailable if the mailbox is gone.
  Status Post(const std::string& kind, const std::string& body = "");

 private:
  MailboxAddress() = default;
  std::string name_;
  std::mutex mutex_;
  std::unique_ptr<zmq::socket_t> socket_;
};

}  // namespace spar
