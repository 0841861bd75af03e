// spar/services/generator/openai_http.h — an OpenAI-compatible HTTP endpoint
// over the same GeneratorCore (and so the same engine and weights) as the
// gRPC service, for evaluation harnesses and manual poking.
//
//   GET  /v1/models             the one model served
//   POST /v1/chat/completions   messages -> chat format -> K = n samples
//   POST /v1/completions        prompt (a string or a list of strings)
//
// Accepted body fields: model (any value), messages / prompt, temperature,
// top_p, top_k (extension), max_tokens (or max_completion_tokens), n, seed,
// stop (a string or a list), stream, stream_options.include_usage. Other
// OpenAI fields are ignored. Omitted sampling fields take the generator's
// configured defaults; no seed means a fresh random one. "stream": true
// answers with server-sent events ("data: {chunk}\n\n" ... "data: [DONE]\n\n");
// a client that disconnects cancels its samples.
//
// Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}:
// 400 for a malformed body or bad value (param names the field), 429 when
// the queue is full, 503 while shutting down, 500 otherwise.
//
// Thread safety: requests are served on the HTTP server's own threads, which
// only wait on the core's jobs; the model runs on the engine's thread.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "services/generator/generator_core.h"

namespace httplib {
class Server;
}

namespace spar {

class OpenAiHttpServer {
 public:
  // Serves `core` (not owned; must outlive the server) on host:port (port 0
  // = any free port). InvalidArgument for a malformed address, Unavailable
  // if it cannot bind.
  static Result<std::unique_ptr<OpenAiHttpServer>> Start(const std::string& address, GeneratorCore* core);
  // Stops listening and joins; streams in flight are cut off.
  ~OpenAiHttpServer();
  int port() const { return port_; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }

 private:
  OpenAiHttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string host_;
  int port_ = 0;
};

// A parsed request body (public for tests).
struct OpenAiRequest {
  GenerateInput input;
  bool chat = true;
  bool stream = false;
  bool include_usage = false;
};

// Parses a /v1/chat/completions (chat = true) or /v1/completions body.
// InvalidArgument whose message starts with the OpenAI field name
// ("temperature: must be a number").
Result<OpenAiRequest> ParseOpenAiRequest(const nlohmann::json& body, bool chat, const SamplingOptions& defaults);

}  // namespace spar
