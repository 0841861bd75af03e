#include "metrics/metrics_http.h"

#include <httplib.h>

namespace spar {

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& address,
                                                                    const MetricsRegistry* registry) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("metrics address '" + address + "' must be host:port");
  std::string host = address.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    return InvalidArgument("metrics address '" + address + "' has a bad port");
  }
  if (port < 0 || port > 65535) return InvalidArgument("metrics address '" + address + "' has a bad port");
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->server_ = std::make_unique<httplib::Server>();
  s->server_->Get("/metrics", [registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry->PrometheusText(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  // Scrapers come every few seconds at most; an idle keep-alive connection
  // held longer only delays stop() (httplib waits it out), by 5 s by default.
  s->server_->set_keep_alive_timeout(1);
  s->host_ = host;
  if (port == 0) {
    s->port_ = s->server_->bind_to_any_port(host);
  } else {
    s->port_ = s->server_->bind_to_port(host, port) ? port : -1;
  }
  if (s->port_ <= 0) return Unavailable("cannot serve /metrics on " + address + " (port in use?)");
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return s;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace spar
