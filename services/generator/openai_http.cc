#include "services/generator/openai_http.h"

#include <httplib.h>

#include <atomic>
#include <ctime>
#include <random>
#include <set>

#include "common/logging.h"

namespace spar {

using nlohmann::json;

namespace {

// Core field names -> the OpenAI names a client sent.
std::string OpenAiParam(const std::string& message) {
  static const std::vector<std::pair<std::string, std::string>> kNames = {
      {"sampling.temperature", "temperature"}, {"sampling.top_p", "top_p"},
      {"sampling.top_k", "top_k"},             {"sampling.max_new_tokens", "max_tokens"},
      {"sampling.stop", "stop"},               {"num_samples", "n"},
      {"prompts", "messages"}};
  for (const auto& [core, open] : kNames)
    if (message.rfind(core, 0) == 0) return open;
  auto colon = message.find(':');
  return colon == std::string::npos ? "" : message.substr(0, colon);
}

std::string Rename(const std::string& message) {
  std::string param = OpenAiParam(message);
  static const std::vector<std::pair<std::string, std::string>> kPrefixes = {
      {"sampling.max_new_tokens", "max_tokens"}, {"sampling.", ""}, {"num_samples", "n"}};
  for (const auto& [from, to] : kPrefixes)
    if (message.rfind(from, 0) == 0) return to + message.substr(from.size());
  return message;
}

json ErrorBody(const std::string& message, const std::string& type, const std::string& param) {
  return {{"error",
           {{"message", message}, {"type", type}, {"param", param.empty() ? json() : json(param)}, {"code", json()}}}};
}

void SendError(httplib::Response& res, const Status& s) {
  int http = 500;
  std::string type = "server_error";
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      http = 400;
      type = "invalid_request_error";
      break;
    case StatusCode::kNotFound:
      http = 404;
      type = "invalid_request_error";
      break;
    case StatusCode::kResourceExhausted:
      http = 429;
      type = "rate_limit_error";
      break;
    case StatusCode::kUnavailable:
    case StatusCode::kCancelled:
      http = 503;
      break;
    case StatusCode::kDeadlineExceeded:
      http = 504;
      break;
    default:
      break;
  }
  const std::string param = http == 400 ? OpenAiParam(s.message()) : "";
  res.status = http;
  res.set_content(ErrorBody(http == 400 ? Rename(s.message()) : s.message(), type, param).dump(),
                  "application/json");
}

Status Bad(const std::string& field, const std::string& what) { return InvalidArgument(field + ": " + what); }

Result<std::string> ContentText(const json& content, const std::string& field) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) return std::string();
  if (!content.is_array()) return Bad(field, "must be a string or a list of text parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string f = field + "[" + std::to_string(i) + "]";
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      return Bad(f, "only {\"type\": \"text\", \"text\": ...} parts are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::string RandomSuffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(static_cast<uint64_t>(std::time(nullptr))) + "-" + std::to_string(counter.fetch_add(1));
}

// Everything one answer needs besides the job.
struct Answer {
  std::string id;
  std::string model;
  bool chat = true;
  bool include_usage = false;
  int64_t created = 0;
  uint32_t n = 1;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  uint64_t policy_version = 0;
  std::set<uint32_t> announced;  // choices whose role chunk went out (streaming chat)

  uint32_t ChoiceIndex(size_t prompt_index, uint32_t sample_index) const {
    return static_cast<uint32_t>(prompt_index) * n + sample_index;
  }
  json Usage() const {
    return {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  }
  json Chunk(json choices) const {
    return {{"id", id},
            {"object", chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created},
            {"model", model},
            {"system_fingerprint", "policy-v" + std::to_string(policy_version)},
            {"choices", std::move(choices)}};
  }
};

std::string Sse(const json& j) { return "data: " + j.dump() + "\n\n"; }

}  // namespace

Result<OpenAiRequest> ParseOpenAiRequest(const json& body, bool chat, const SamplingOptions& defaults) {
  if (!body.is_object()) return InvalidArgument("body: must be a JSON object");
  OpenAiRequest out;
  out.chat = chat;
  GenerateInput& in = out.input;
  in.sampling = defaults;
  std::random_device rd;
  in.sampling.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  in.sampling.stop = defaults.stop;

  auto number = [&](const char* key, float* dst) -> Status {
    if (!body.contains(key) || body[key].is_null()) return Status::Ok();
    if (!body[key].is_number()) return Bad(key, "must be a number");
    *dst = body[key].get<float>();
    return Status::Ok();
  };
  auto integer = [&](const char* key, int64_t* dst) -> Status {
    if (!body.contains(key) || body[key].is_null()) return Status::Ok();
    if (!body[key].is_number_integer()) return Bad(key, "must be an integer");
    *dst = body[key].get<int64_t>();
    return Status::Ok();
  };

  if (body.contains("model") && !body["model"].is_string() && !body["model"].is_null())
    return Bad("model", "must be a string");
  if (chat) {
    if (!body.contains("messages")) return Bad("messages", "required");
    const json& messages = body["messages"];
    if (!messages.is_array() || messages.empty()) return Bad("messages", "must be a non-empty list");
    PromptInput p;
    p.is_conversation = true;
    for (size_t i = 0; i < messages.size(); ++i) {
      const std::string f = "messages[" + std::to_string(i) + "]";
      const json& m = messages[i];
      if (!m.is_object()) return Bad(f, "must be an object");
      if (!m.contains("role") || !m["role"].is_string()) return Bad(f + ".role", "must be a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant")
        return Bad(f + ".role", "must be system, user or assistant, got '" + role + "'");
      SPAR_ASSIGN_OR_RETURN(std::string content, ContentText(m.contains("content") ? m["content"] : json(), f + ".content"));
      p.messages.push_back({role, content});
    }
    in.prompts.push_back(std::move(p));
  } else {
    if (!body.contains("prompt")) return Bad("prompt", "required");
    const json& prompt = body["prompt"];
    if (prompt.is_string()) {
      PromptInput p;
      p.text = prompt.get<std::string>();
      in.prompts.push_back(std::move(p));
    } else if (prompt.is_array() && !prompt.empty()) {
      for (size_t i = 0; i < prompt.size(); ++i) {
        if (!prompt[i].is_string())
          return Bad("prompt[" + std::to_string(i) + "]", "must be a string (token-id prompts are not supported)");
        PromptInput p;
        p.text = prompt[i].get<std::string>();
        in.prompts.push_back(std::move(p));
      }
    } else {
      return Bad("prompt", "must be a string or a non-empty list of strings");
    }
    for (size_t i = 0; i < in.prompts.size(); ++i)
      if (in.prompts[i].text.empty()) return Bad("prompt", "must not be empty");
  }

  SPAR_RETURN_IF_ERROR(number("temperature", &in.sampling.temperature));
  SPAR_RETURN_IF_ERROR(number("top_p", &in.sampling.top_p));
  int64_t v = in.sampling.top_k;
  SPAR_RETURN_IF_ERROR(integer("top_k", &v));
  if (v < 0 || v > INT32_MAX) return Bad("top_k", "must be >= 0");
  in.sampling.top_k = static_cast<int32_t>(v);
  v = in.sampling.max_new_tokens;
  SPAR_RETURN_IF_ERROR(integer("max_tokens", &v));
  SPAR_RETURN_IF_ERROR(integer("max_completion_tokens", &v));
  if (v <= 0 || v > INT32_MAX) return Bad("max_tokens", "must be a positive integer, got " + std::to_string(v));
  in.sampling.max_new_tokens = static_cast<int32_t>(v);
  v = 1;
  SPAR_RETURN_IF_ERROR(integer("n", &v));
  if (v <= 0 || v > 4096) return Bad("n", "must be a positive integer, got " + std::to_string(v));
  in.num_samples = static_cast<uint32_t>(v);
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!body["seed"].is_number_integer()) return Bad("seed", "must be an integer");
    in.sampling.seed = body["seed"].is_number_unsigned() ? body["seed"].get<uint64_t>()
                                                         : static_cast<uint64_t>(body["seed"].get<int64_t>());
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& stop = body["stop"];
    in.sampling.stop.clear();
    if (stop.is_string()) {
      in.sampling.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (size_t i = 0; i < stop.size(); ++i) {
        if (!stop[i].is_string()) return Bad("stop[" + std::to_string(i) + "]", "must be a string");
        in.sampling.stop.push_back(stop[i].get<std::string>());
      }
    } else {
      return Bad("stop", "must be a string or a list of strings");
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) return Bad("stream", "must be true or false");
    out.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && body["stream_options"].is_object()) {
    const json& so = body["stream_options"];
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean()) return Bad("stream_options.include_usage", "must be true or false");
      out.include_usage = so["include_usage"].get<bool>();
    }
  }
  in.want_deltas = out.stream;
  return out;
}

namespace {

void HandleCompletion(GeneratorCore* core, bool chat, const httplib::Request& req, httplib::Response& res) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return SendError(res, InvalidArgument("body: not valid JSON"));
  auto parsed = ParseOpenAiRequest(body, chat, core->options().default_sampling);
  if (!parsed.ok()) return SendError(res, parsed.status());
  const bool stream = parsed->stream;
  auto answer = std::make_shared<Answer>();
  answer->id = (chat ? "chatcmpl-" : "cmpl-") + RandomSuffix();
  answer->model = core->description().model_name;
  answer->chat = chat;
  answer->include_usage = parsed->include_usage;
  answer->created = static_cast<int64_t>(std::time(nullptr));
  answer->n = parsed->input.num_samples;
  answer->policy_version = core->policy_version();
  auto started = core->Start(std::move(parsed->input));
  if (!started.ok()) return SendError(res, started.status());
  std::shared_ptr<GenerationJob> job(std::move(*started));
  for (size_t i = 0; i < job->num_prompts(); ++i)
    answer->prompt_tokens += static_cast<int64_t>(job->prompt_token_ids(i).size());

  if (!stream) {
    std::vector<GeneratedRollout> rollouts;
    // Bounded, since this httplib cannot tell that a waiting client left.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(30);
    JobUpdate u;
    do {
      u = job->Next(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
      for (auto& r : u.rollouts) rollouts.push_back(std::move(r));
      if (std::chrono::steady_clock::now() > deadline) {
        job->Cancel();
        return SendError(res, DeadlineExceeded("generation took longer than 30 minutes"));
      }
    } while (!u.finished);
    if (!u.status.ok()) return SendError(res, u.status);
    json choices = json::array();
    std::sort(rollouts.begin(), rollouts.end(), [&](const GeneratedRollout& a, const GeneratedRollout& b) {
      return answer->ChoiceIndex(a.prompt_index, a.sample_index) < answer->ChoiceIndex(b.prompt_index, b.sample_index);
    });
    for (const auto& r : rollouts) {
      answer->completion_tokens += static_cast<int64_t>(r.token_ids.size());
      answer->policy_version = r.policy_version;
      json choice = {{"index", answer->ChoiceIndex(r.prompt_index, r.sample_index)},
                     {"finish_reason", r.finish_reason},
                     {"logprobs", json()}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", r.text}};
      else
        choice["text"] = r.text;
      choices.push_back(std::move(choice));
    }
    json out = {{"id", answer->id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", answer->created},
                {"model", answer->model},
                {"system_fingerprint", "policy-v" + std::to_string(answer->policy_version)},
                {"choices", std::move(choices)},
                {"usage", answer->Usage()}};
    res.set_content(out.dump(), "application/json");
    return;
  }

  auto finished = std::make_shared<bool>(false);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [job, answer, finished](size_t, httplib::DataSink& sink) {
        if (*finished) return false;
        if (!sink.is_writable()) {
          job->Cancel();
          return false;
        }
        JobUpdate u = job->Next(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
        std::string out;
        for (const auto& d : u.deltas) {
          const uint32_t index = answer->ChoiceIndex(d.prompt_index, d.sample_index);
          json choice = {{"index", index}, {"finish_reason", json()}, {"logprobs", json()}};
          if (answer->chat && answer->announced.insert(index).second)
            choice["delta"] = {{"role", "assistant"}, {"content", d.text}};
          else if (answer->chat)
            choice["delta"] = {{"content", d.text}};
          else
            choice["text"] = d.text;
          out += Sse(answer->Chunk(json::array({std::move(choice)})));
        }
        for (const auto& r : u.rollouts) {
          answer->completion_tokens += static_cast<int64_t>(r.token_ids.size());
          answer->policy_version = r.policy_version;
          const uint32_t index = answer->ChoiceIndex(r.prompt_index, r.sample_index);
          json choice = {{"index", index}, {"finish_reason", r.finish_reason}, {"logprobs", json()}};
          if (answer->chat && answer->announced.insert(index).second)
            choice["delta"] = {{"role", "assistant"}, {"content", ""}};
          else if (answer->chat)
            choice["delta"] = json::object();
          else
            choice["text"] = "";
          out += Sse(answer->Chunk(json::array({std::move(choice)})));
        }
        if (u.finished) {
          if (!u.status.ok()) {
            out += Sse(ErrorBody(u.status.message(), "server_error", ""));
          } else if (answer->include_usage) {
            json usage = answer->Chunk(json::array());
            usage["usage"] = answer->Usage();
            out += Sse(usage);
          }
          out += "data: [DONE]\n\n";
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          job->Cancel();
          return false;
        }
        if (u.finished) {
          *finished = true;
          sink.done();
        }
        return true;
      });
}

}  // namespace

Result<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(const std::string& address, GeneratorCore* core) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("http_listen: '" + address + "' must be host:port");
  std::string host = address.substr(0, colon);
  int port = -1;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) return InvalidArgument("http_listen: '" + address + "' has a bad port");
  std::unique_ptr<OpenAiHttpServer> s(new OpenAiHttpServer());
  s->server_ = std::make_unique<httplib::Server>();
  s->server_->Get("/v1/models", [core](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", core->description().model_name},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "spar"},
                  {"policy_version", core->policy_version()},
                  {"max_context", core->description().max_context}};
    res.set_content(json({{"object", "list"}, {"data", json::array({model})}}).dump(), "application/json");
  });
  s->server_->Post("/v1/chat/completions", [core](const httplib::Request& req, httplib::Response& res) {
    HandleCompletion(core, /*chat=*/true, req, res);
  });
  s->server_->Post("/v1/completions", [core](const httplib::Request& req, httplib::Response& res) {
    HandleCompletion(core, /*chat=*/false, req, res);
  });
  s->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  s->host_ = host;
  s->port_ = port == 0 ? s->server_->bind_to_any_port(host) : (s->server_->bind_to_port(host, port) ? port : -1);
  if (s->port_ <= 0) return Unavailable("cannot serve the OpenAI endpoint on " + address + " (port in use?)");
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  Logger("generator")->info("OpenAI-compatible endpoint on http://{}/v1", s->address());
  return s;
}

OpenAiHttpServer::~OpenAiHttpServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace spar
