// The OpenAI-compatible endpoint, over real HTTP, with the tiny model.
#include <httplib.h>

#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "services/generator/openai_http.h"
#include "tests/services/generator/generator_test_env.h"

namespace spar::testing {
namespace {

using nlohmann::json;

class OpenAiHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SPAR_REQUIRE_TINY_MODEL();
    auto core = CreateGeneratorCore(TinyGeneratorConfig("gen-http"), nullptr);
    ASSERT_TRUE(core.ok()) << core.status().ToString();
    core_ = std::move(*core);
    auto http = OpenAiHttpServer::Start("127.0.0.1:0", core_.get());
    ASSERT_TRUE(http.ok()) << http.status().ToString();
    http_ = std::move(*http);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", http_->port());
    client_->set_read_timeout(60, 0);
  }
  void TearDown() override {
    client_.reset();
    http_.reset();
    core_.reset();
  }
  json Post(const std::string& path, const json& body, int* status) {
    auto res = client_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << "no response from " << path;
    if (!res) return json();
    *status = res->status;
    return json::parse(res->body, nullptr, false);
  }

  std::unique_ptr<GeneratorCore> core_;
  std::unique_ptr<OpenAiHttpServer> http_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(OpenAiHttpTest, ListsTheModel) {
  auto res = client_->Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "tiny-llama");
}

TEST_F(OpenAiHttpTest, ChatCompletion) {
  int status = 0;
  json body = {{"model", "tiny-llama"},
               {"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi!"}}}},
               {"max_tokens", 8},
               {"n", 2},
               {"seed", 5},
               {"temperature", 0.8}};
  json j = Post("/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "chat.completion");
  ASSERT_EQ(j["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["message"]["role"], "assistant");
    EXPECT_TRUE(j["choices"][i]["message"]["content"].is_string());
    std::string reason = j["choices"][i]["finish_reason"];
    EXPECT_TRUE(reason == "stop" || reason == "length") << reason;
  }
  EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 5);
  EXPECT_GT(j["usage"]["completion_tokens"].get<int>(), 0);
  EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 16);
  EXPECT_EQ(j["usage"]["total_tokens"].get<int>(),
            j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());

  // The same seed gives the same answer.
  json again = Post("/v1/chat/completions", body, &status);
  EXPECT_EQ(again["choices"], j["choices"]);
}

TEST_F(OpenAiHttpTest, ChatCompletionTextEqualsTheGrpcTextForTheSameSeed) {
  // Both endpoints on one core: the same conversation, seed and sampling.
  GeneratorService service(core_.get());
  GrpcServerOptions options;
  auto server = StartGrpcServer(options, {&service});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto stub = v1::Generator::NewStub(MakeChannel(server->address));

  int status = 0;
  json body = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Name a colour."}}}},
               {"max_tokens", 12},
               {"n", 3},
               {"seed", 77},
               {"temperature", 0.9},
               {"top_p", 0.95},
               {"top_k", 0}};
  json j = Post("/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200) << j.dump();
  ASSERT_EQ(j["choices"].size(), 3u);

  v1::GenerateRequest req;
  auto* conv = req.add_prompts()->mutable_conversation();
  auto* m = conv->add_messages();
  m->set_role("system");
  m->set_content("Be brief.");
  m = conv->add_messages();
  m->set_role("user");
  m->set_content("Name a colour.");
  req.set_num_samples(3);
  auto* s = req.mutable_sampling();
  s->set_max_new_tokens(12);
  s->set_seed(77);
  s->set_temperature(0.9f);
  s->set_top_p(0.95f);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&ctx, req);
  std::map<uint32_t, std::string> grpc_text;
  v1::GenerateResponse resp;
  while (reader->Read(&resp))
    for (const auto& r : resp.rollouts()) grpc_text[r.sample_index()] = r.text();
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(grpc_text.size(), 3u);
  std::set<std::string> distinct;
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(j["choices"][i]["message"]["content"].get<std::string>(), grpc_text[i]) << "sample " << i;
    distinct.insert(grpc_text[i]);
  }
  EXPECT_GT(distinct.size(), 1u) << "samples of one seed should differ from each other";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

TEST_F(OpenAiHttpTest, StreamingChatCompletionSendsEventsThenDone) {
  json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}},
               {"max_tokens", 12},
               {"seed", 3},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  std::string streamed;
  auto res = client_->Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::string text, finish;
  bool done = false, saw_role = false, saw_usage = false;
  size_t pos = 0;
  const std::string& sse = res->body;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    size_t end = sse.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    std::string payload = sse.substr(pos + 6, end - pos - 6);
    pos = end + 2;
    if (payload == "[DONE]") {
      done = true;
      continue;
    }
    EXPECT_FALSE(done) << "nothing after [DONE]";
    json chunk = json::parse(payload);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (chunk.contains("usage")) {
      saw_usage = true;
      continue;
    }
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const json& c = chunk["choices"][0];
    if (c["delta"].contains("role")) saw_role = true;
    if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  EXPECT_TRUE(done);
  EXPECT_TRUE(saw_role);
  EXPECT_TRUE(saw_usage);
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;

  // The streamed text equals the non-streamed answer for the same seed.
  body["stream"] = false;
  int status = 0;
  json whole = Post("/v1/chat/completions", body, &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"].get<std::string>());
}

TEST_F(OpenAiHttpTest, TextCompletion) {
  int status = 0;
  json j = Post("/v1/completions", {{"prompt", "The quick brown fox"}, {"max_tokens", 5}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_TRUE(j["choices"][0]["text"].is_string());
}

TEST_F(OpenAiHttpTest, BadBodiesGetOpenAiErrors) {
  struct Case {
    std::string body;
    std::string param;
  };
  std::vector<Case> cases = {
      {"{not json", ""},
      {R"({"messages": []})", "messages"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "temperature": -1})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_p": 2})", "top_p"},
      {R"({"messages": [{"role": "user", "content": "x"}], "n": 0})", "n"},
      {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3})", "max_tokens"},
      {R"({"messages": [{"role": "robot", "content": "x"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": "x"}], "stop": 7})", "stop"},
  };
  for (const auto& c : cases) {
    auto res = client_->Post("/v1/chat/completions", c.body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << c.body;
    json j = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << res->body;
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_TRUE(j["error"]["message"].is_string());
    if (!c.param.empty()) {
      EXPECT_EQ(j["error"]["param"], c.param) << res->body;
    }
  }
}

}  // namespace
}  // namespace spar::testing
