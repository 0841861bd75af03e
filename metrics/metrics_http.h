// spar/metrics/metrics_http.h — a small HTTP server per process that
// serves GET /metrics (Prometheus text) and GET /healthz.
//
// Thread safety: Start/Stop from one thread; requests are served on the
// server's own threads and only read the registry.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "metrics/metrics.h"

namespace httplib {
class Server;
}

namespace spar {

class MetricsHttpServer {
 public:
  // Serves `registry` (not owned; must outlive the server) on host:port
  // (port 0 = any free port). Unavailable if it cannot bind.
  static Result<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                          const MetricsRegistry* registry);
  ~MetricsHttpServer();
  int port() const { return port_; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

}  // namespace spar
