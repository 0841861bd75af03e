// spar/services/common/server.h — starting a gRPC server the same way in
// every service: message size limits, keepalive, a port chosen by the OS
// when the address ends in ":0".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace spar {

struct GrpcServerOptions {
  std::string address = "127.0.0.1:0";     // host:port; port 0 = any free port
  int64_t max_message_bytes = 512ll << 20;  // weight buckets are hundreds of MB
};

struct RunningServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::string address;  // host:port actually bound
};

// Builds and starts a server for `services` (not owned; they must outlive
// the server). Errors: InvalidArgument for a malformed address, Unavailable
// when the port cannot be bound.
Result<RunningServer> StartGrpcServer(const GrpcServerOptions& options,
                                      const std::vector<grpc::Service*>& services);

// Channel arguments every spar client uses (message size limits matching the
// servers').
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           int64_t max_message_bytes = 512ll << 20);

}  // namespace spar
