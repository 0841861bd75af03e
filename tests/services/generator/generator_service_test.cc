// The Generator gRPC service over real loopback gRPC with a tiny real model.
#include <cmath>
#include <set>
#include <thread>

#include "services/common/grpc_status.h"
#include "services/weights/weight_publisher.h"
#include "tests/services/generator/generator_test_env.h"

namespace spar::testing {
namespace {

v1::GenerateRequest Request(const std::string& text, uint32_t k, uint64_t seed, int32_t max_new = 12) {
  v1::GenerateRequest req;
  req.set_request_id("r-" + text);
  auto* p = req.add_prompts();
  p->set_prompt_id("p-" + text);
  p->set_text(text);
  req.set_num_samples(k);
  auto* s = req.mutable_sampling();
  s->set_temperature(1.0f);
  s->set_top_p(0.95f);
  s->set_max_new_tokens(max_new);
  s->set_seed(seed);
  s->set_return_logprobs(true);
  return req;
}

struct Collected {
  grpc::Status status;
  std::vector<v1::Rollout> rollouts;  // ordered by (prompt, sample index)
  int messages = 0;
};

Collected Generate(v1::Generator::Stub* stub, const v1::GenerateRequest& req,
                   std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub->Generate(&ctx, req);
  Collected out;
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    ++out.messages;
    for (const auto& r : resp.rollouts()) out.rollouts.push_back(r);
  }
  out.status = reader->Finish();
  std::sort(out.rollouts.begin(), out.rollouts.end(), [](const v1::Rollout& a, const v1::Rollout& b) {
    return std::make_pair(a.prompt_id(), a.sample_index()) < std::make_pair(b.prompt_id(), b.sample_index());
  });
  return out;
}

v1::GeneratorInfo Info(v1::Generator::Stub* stub) {
  grpc::ClientContext ctx;
  v1::GeneratorInfo info;
  EXPECT_TRUE(stub->Info(&ctx, v1::InfoRequest(), &info).ok());
  return info;
}

// Waits until every slot and queue entry is free again.
bool WaitIdle(v1::Generator::Stub* stub, std::chrono::seconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    auto info = Info(stub);
    if (info.busy_slots() == 0 && info.queue_depth() == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

class GeneratorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SPAR_REQUIRE_TINY_MODEL();
    gen_ = StartGenerator(TinyGeneratorConfig("gen-a"));
    ASSERT_NE(gen_, nullptr);
  }
  std::unique_ptr<RunningGenerator> gen_;
};

TEST_F(GeneratorServiceTest, ReturnsKRolloutsWithLogprobsAndVersion) {
  auto req = Request("Hello world", 3, 11);
  auto* chat = req.add_prompts();
  chat->set_prompt_id("chat");
  auto* m = chat->mutable_conversation()->add_messages();
  m->set_role("user");
  m->set_content("Say something.");
  auto out = Generate(gen_->stub.get(), req);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_EQ(out.rollouts.size(), 6u);
  for (size_t i = 0; i < out.rollouts.size(); ++i) {
    const auto& r = out.rollouts[i];
    EXPECT_EQ(r.sample_index(), i % 3);
    EXPECT_EQ(r.policy_version(), 0u);
    EXPECT_EQ(r.generator_id(), "gen-a");
    EXPECT_GT(r.token_ids_size(), 0);
    EXPECT_LE(r.token_ids_size(), 12);
    ASSERT_EQ(r.logprobs_size(), r.token_ids_size());
    for (float lp : r.logprobs()) {
      EXPECT_TRUE(std::isfinite(lp));
      EXPECT_LE(lp, 0.0f);
    }
    ASSERT_GT(r.prompt_token_ids_size(), 0);
    EXPECT_EQ(r.prompt_token_ids(0), 128000) << "prompts start with <|begin_of_text|>";
    EXPECT_NE(r.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  }
  // The conversation was rendered with the chat template.
  EXPECT_GT(out.rollouts[0].prompt_token_ids_size(), out.rollouts[3].prompt_token_ids_size());
  auto info = Info(gen_->stub.get());
  EXPECT_EQ(info.generator_id(), "gen-a");
  EXPECT_EQ(info.model_name(), "tiny-llama");
  EXPECT_EQ(info.architecture(), "llama");
  EXPECT_EQ(info.max_batch(), 4);
  EXPECT_GT(info.num_parameters(), 0);
  EXPECT_GE(info.rollouts_completed(), 6u);
}

TEST_F(GeneratorServiceTest, SameSeedSameRollouts) {
  auto a = Generate(gen_->stub.get(), Request("Once upon a time", 2, 42));
  auto b = Generate(gen_->stub.get(), Request("Once upon a time", 2, 42));
  auto c = Generate(gen_->stub.get(), Request("Once upon a time", 2, 43));
  ASSERT_TRUE(a.status.ok() && b.status.ok() && c.status.ok());
  ASSERT_EQ(a.rollouts.size(), 2u);
  bool any_differs = false;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(std::vector<int32_t>(a.rollouts[i].token_ids().begin(), a.rollouts[i].token_ids().end()),
              std::vector<int32_t>(b.rollouts[i].token_ids().begin(), b.rollouts[i].token_ids().end()));
    EXPECT_EQ(a.rollouts[i].text(), b.rollouts[i].text());
    if (std::vector<int32_t>(a.rollouts[i].token_ids().begin(), a.rollouts[i].token_ids().end()) !=
        std::vector<int32_t>(c.rollouts[i].token_ids().begin(), c.rollouts[i].token_ids().end()))
      any_differs = true;
  }
  EXPECT_TRUE(any_differs) << "another seed should sample something else";
}

TEST_F(GeneratorServiceTest, ConcurrentClients) {
  std::vector<std::thread> threads;
  std::vector<Collected> results(6);
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      results[t] = Generate(gen_->stub.get(), Request("client " + std::to_string(t), 2, t, 8));
    });
  for (auto& th : threads) th.join();
  for (const auto& r : results) {
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.rollouts.size(), 2u);
  }
  EXPECT_TRUE(WaitIdle(gen_->stub.get()));
}

TEST_F(GeneratorServiceTest, BadRequestsNameTheFieldAndServerKeepsServing) {
  struct Case {
    std::string field;
    std::function<void(v1::GenerateRequest*)> mutate;
  };
  std::vector<Case> cases = {
      {"prompts", [](v1::GenerateRequest* r) { r->clear_prompts(); }},
      {"num_samples", [](v1::GenerateRequest* r) { r->set_num_samples(0); }},
      {"num_samples", [](v1::GenerateRequest* r) { r->set_num_samples(1000); }},
      {"temperature", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-1); }},
      {"top_p", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); }},
      {"max_new_tokens", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_max_new_tokens(0); }},
      {"max_new_tokens", [](v1::GenerateRequest* r) { r->mutable_sampling()->set_max_new_tokens(100000); }},
      {"text", [](v1::GenerateRequest* r) { r->mutable_prompts(0)->set_text(""); }},
      {"role",
       [](v1::GenerateRequest* r) {
         auto* m = r->mutable_prompts(0)->mutable_conversation()->add_messages();
         m->set_role("wizard");
         m->set_content("hi");
       }},
      {"max_prompt_tokens",
       [](v1::GenerateRequest* r) {
         std::string long_text;
         for (int i = 0; i < 300; ++i) long_text += " word";
         r->mutable_prompts(0)->set_text(long_text);
       }},
  };
  for (const auto& c : cases) {
    auto req = Request("fine", 2, 1);
    c.mutate(&req);
    auto out = Generate(gen_->stub.get(), req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(out.status.error_message().find(c.field), std::string::npos)
        << c.field << " not in: " << out.status.error_message();
  }
  auto ok = Generate(gen_->stub.get(), Request("still here", 2, 1));
  EXPECT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.rollouts.size(), 2u);
}

// `message` with an extra varint field `number` that spar.v1 does not define.
template <typename M>
void AddUnknownField(M* message, int number) {
  std::string bytes = message->SerializeAsString();
  bytes.push_back(static_cast<char>((number << 3) & 0x7f) | static_cast<char>(0x80));
  bytes.push_back(static_cast<char>(number >> 4));
  bytes.push_back(0x01);
  ASSERT_TRUE(message->ParseFromString(bytes));
  ASSERT_FALSE(message->GetReflection()->GetUnknownFields(*message).empty());
}

TEST_F(GeneratorServiceTest, UnknownFieldsAndOversizedRequestsAreRefused) {
  {  // At the top level and nested: refused, naming where.
    auto req = Request("fine", 1, 1);
    AddUnknownField(&req, 99);
    EXPECT_FALSE(RejectUnknownFields(req, "request").ok());
    auto out = Generate(gen_->stub.get(), req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(out.status.error_message().find("unknown field number(s) 99"), std::string::npos)
        << out.status.error_message();
    req = Request("fine", 1, 1);
    AddUnknownField(req.mutable_sampling(), 77);
    out = Generate(gen_->stub.get(), req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(out.status.error_message().find("request.sampling"), std::string::npos) << out.status.error_message();
  }
  {  // A prompt over the byte limit (before any tokenising).
    auto req = Request("x", 1, 1);
    req.mutable_prompts(0)->set_text(std::string(2 << 20, 'a'));
    auto out = Generate(gen_->stub.get(), req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(out.status.error_message().find("text"), std::string::npos) << out.status.error_message();
    EXPECT_NE(out.status.error_message().find("bytes"), std::string::npos) << out.status.error_message();
  }
  {  // A message over the transport's limit: RESOURCE_EXHAUSTED from gRPC.
    GeneratorConfig config = TinyGeneratorConfig("gen-small-limit");
    auto small = std::make_unique<RunningGenerator>();
    auto core = CreateGeneratorCore(config, nullptr);
    ASSERT_TRUE(core.ok());
    small->core = std::move(*core);
    small->service = std::make_unique<GeneratorService>(small->core.get());
    GrpcServerOptions options;
    options.max_message_bytes = 1 << 20;
    auto server = StartGrpcServer(options, {small->service.get()});
    ASSERT_TRUE(server.ok());
    small->server = std::move(*server);
    small->stub = v1::Generator::NewStub(MakeChannel(small->server.address));
    auto req = Request("x", 1, 1);
    req.mutable_prompts(0)->set_text(std::string(3 << 20, 'a'));
    auto out = Generate(small->stub.get(), req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << out.status.error_message();
    EXPECT_TRUE(Generate(small->stub.get(), Request("still serving", 1, 1)).status.ok());
  }
  auto ok = Generate(gen_->stub.get(), Request("still here", 2, 1));
  EXPECT_TRUE(ok.status.ok());
}

TEST_F(GeneratorServiceTest, ClientCancellationFreesSlots) {
  auto req = Request("a long story", 6, 3, 230);
  grpc::ClientContext ctx;
  auto reader = gen_->stub->Generate(&ctx, req);
  // Wait until the engine has the samples, then walk away.
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (Info(gen_->stub.get()).busy_slots() == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ctx.TryCancel();
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle(gen_->stub.get(), std::chrono::seconds(5)));
}

TEST_F(GeneratorServiceTest, DeadlineExceeded) {
  auto out = Generate(gen_->stub.get(), Request("a long story", 6, 3, 230), std::chrono::milliseconds(100));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitIdle(gen_->stub.get(), std::chrono::seconds(5)));
  auto ok = Generate(gen_->stub.get(), Request("after the deadline", 1, 1));
  EXPECT_TRUE(ok.status.ok());
}

std::vector<int32_t> Greedy(v1::Generator::Stub* stub, uint64_t* version) {
  auto req = Request("The weights decide", 1, 0, 10);
  req.mutable_sampling()->set_temperature(0);
  auto out = Generate(stub, req);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  if (out.rollouts.empty()) return {};
  *version = out.rollouts[0].policy_version();
  return {out.rollouts[0].token_ids().begin(), out.rollouts[0].token_ids().end()};
}

TEST_F(GeneratorServiceTest, WeightUpdateBumpsVersionAndChangesOutputs) {
  uint64_t v = 99;
  auto before = Greedy(gen_->stub.get(), &v);
  EXPECT_EQ(v, 0u);
  auto weights = NewTinyWeights(8);
  auto writer = WeightStreamWriter::Create(1, weights.views, 8 << 20);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  auto published = PublishWeights(*writer, {gen_->server.address}, std::chrono::seconds(60));
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_TRUE(published->result.applied());
  EXPECT_EQ(published->result.version(), 1u);
  EXPECT_EQ(published->result.node(), "gen-a");
  EXPECT_EQ(published->result.bytes_received(), writer->total_bytes());
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 1u);
  auto after = Greedy(gen_->stub.get(), &v);
  EXPECT_EQ(v, 1u);
  EXPECT_NE(before, after);

  // The same version with the same weights again (a publication retried
  // after a failure further down a chain) is a no-op; with other weights it
  // is refused, and version 1 keeps serving.
  auto again = WeightStreamWriter::Create(1, weights.views, 8 << 20);
  ASSERT_TRUE(again.ok());
  auto repeated = PublishWeights(*again, {gen_->server.address}, std::chrono::seconds(60));
  EXPECT_TRUE(repeated.ok()) << repeated.status().ToString();
  auto others = NewTinyWeights(9);
  auto conflicting = WeightStreamWriter::Create(1, others.views, 8 << 20);
  ASSERT_TRUE(conflicting.ok());
  auto refused = PublishWeights(*conflicting, {gen_->server.address}, std::chrono::seconds(60));
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 1u);
  uint64_t v2 = 99;
  EXPECT_EQ(Greedy(gen_->stub.get(), &v2), after);
}

TEST_F(GeneratorServiceTest, RolloutsDuringAnUpdateCarryTheVersionThatMadeThemWhole) {
  // Greedy rollouts of one prompt are a function of the weights alone: each
  // rollout made during the update must equal the version-0 or the version-1
  // answer, matching its tag; a rollout that mixed versions would match
  // neither.
  auto greedy = [&](int32_t max_new) {
    auto req = Request("Tell me about versions", 1, 0, max_new);
    req.mutable_sampling()->set_temperature(0);
    return req;
  };
  auto tokens = [](const v1::Rollout& r) { return std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end()); };
  auto v0 = Generate(gen_->stub.get(), greedy(40));
  ASSERT_TRUE(v0.status.ok());
  ASSERT_EQ(v0.rollouts.size(), 1u);
  auto weights = NewTinyWeights(21);
  auto writer = WeightStreamWriter::Create(1, weights.views, 8 << 20);
  ASSERT_TRUE(writer.ok());

  std::vector<Collected> during(6);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < during.size(); ++i)
    clients.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(40 * i));
      during[i] = Generate(gen_->stub.get(), greedy(40));
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto published = PublishWeights(*writer, {gen_->server.address}, std::chrono::seconds(60));
  for (auto& t : clients) t.join();
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  auto v1_answer = Generate(gen_->stub.get(), greedy(40));
  ASSERT_TRUE(v1_answer.status.ok());
  ASSERT_EQ(v1_answer.rollouts[0].policy_version(), 1u);
  ASSERT_NE(tokens(v0.rollouts[0]), tokens(v1_answer.rollouts[0]));
  std::set<uint64_t> versions;
  for (const auto& d : during) {
    ASSERT_TRUE(d.status.ok()) << d.status.error_message();
    ASSERT_EQ(d.rollouts.size(), 1u);
    const auto& r = d.rollouts[0];
    versions.insert(r.policy_version());
    const auto& expected = r.policy_version() == 0 ? v0.rollouts[0] : v1_answer.rollouts[0];
    ASSERT_LE(r.policy_version(), 1u);
    EXPECT_EQ(tokens(r), tokens(expected)) << "a rollout tagged " << r.policy_version() << " is not that version's";
    ASSERT_EQ(r.logprobs_size(), expected.logprobs_size());
    for (int k = 0; k < r.logprobs_size(); ++k) EXPECT_NEAR(r.logprobs(k), expected.logprobs(k), 1e-4);
  }
  EXPECT_EQ(versions.count(0u) + versions.count(1u), versions.size());
}

TEST_F(GeneratorServiceTest, CorruptBucketIsRefusedAndOldWeightsServe) {
  uint64_t v = 99;
  auto before = Greedy(gen_->stub.get(), &v);
  auto weights = NewTinyWeights(9);
  auto writer = WeightStreamWriter::Create(1, weights.views, 4 << 20);
  ASSERT_TRUE(writer.ok());
  ASSERT_GT(writer->bucket_count(), 2u);
  {
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen_->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer->Header();
    bool ok = stream->Write(msg);
    for (uint32_t i = 0; ok && i < writer->bucket_count(); ++i) {
      msg.Clear();
      writer->FillBucket(i, msg.mutable_bucket());
      if (i == 1) (*msg.mutable_bucket()->mutable_data())[100] ^= 0x5a;  // flipped after the checksum
      ok = stream->Write(msg);
    }
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS) << st.error_message();
    EXPECT_NE(st.error_message().find("gen-a"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 0u);
  auto still = Greedy(gen_->stub.get(), &v);
  EXPECT_EQ(v, 0u);
  EXPECT_EQ(before, still);

  // A stream that stops before its commit changes nothing either.
  {
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen_->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer->Header();
    ASSERT_TRUE(stream->Write(msg));
    msg.Clear();
    writer->FillBucket(0, msg.mutable_bucket());
    ASSERT_TRUE(stream->Write(msg));
    stream->WritesDone();
    EXPECT_FALSE(stream->Finish().ok());
  }
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 0u);

  // A complete stream afterwards applies.
  auto good = WeightStreamWriter::Create(1, weights.views, 4 << 20);
  ASSERT_TRUE(good.ok());
  auto published = PublishWeights(*good, {gen_->server.address}, std::chrono::seconds(60));
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 1u);
}

TEST_F(GeneratorServiceTest, RelayChainOfTwoEndsAtTheNewVersion) {
  auto second = StartGenerator(TinyGeneratorConfig("gen-b"));
  ASSERT_NE(second, nullptr);
  auto weights = NewTinyWeights(10);
  auto writer = WeightStreamWriter::Create(1, weights.views, 8 << 20);
  ASSERT_TRUE(writer.ok());
  auto published = PublishWeights(*writer, {gen_->server.address, second->server.address},
                                  std::chrono::seconds(60));
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ(published->result.node(), "gen-a");
  ASSERT_EQ(published->result.downstream_size(), 1);
  EXPECT_EQ(published->result.downstream(0).node(), "gen-b");
  EXPECT_TRUE(published->result.downstream(0).applied());
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 1u);
  EXPECT_EQ(Info(second->stub.get()).policy_version(), 1u);
  uint64_t va = 0, vb = 0;
  EXPECT_EQ(Greedy(gen_->stub.get(), &va), Greedy(second->stub.get(), &vb));
  EXPECT_EQ(va, 1u);
  EXPECT_EQ(vb, 1u);

  // A dead second node shows in the chain's result; the first still applies.
  std::string dead = second->server.address;
  second.reset();
  auto next = WeightStreamWriter::Create(2, weights.views, 8 << 20);
  ASSERT_TRUE(next.ok());
  auto partial = PublishWeights(*next, {gen_->server.address, dead}, std::chrono::seconds(30));
  EXPECT_FALSE(partial.ok());
  EXPECT_EQ(partial.status().code(), StatusCode::kAborted) << partial.status().ToString();
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 2u);
}

// Greedy rollouts (tokens and log-probs) of a few prompts: equal on two
// generators only if their weights are equal (to float precision).
std::vector<v1::Rollout> Fingerprint(v1::Generator::Stub* stub) {
  std::vector<v1::Rollout> out;
  for (const char* text : {"The weights decide", "Count to five:", "A haiku about rivers"}) {
    auto req = Request(text, 1, 0, 8);
    req.mutable_sampling()->set_temperature(0);
    auto r = Generate(stub, req);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    for (auto& x : r.rollouts) out.push_back(x);
  }
  return out;
}

void ExpectSameRollouts(const std::vector<v1::Rollout>& a, const std::vector<v1::Rollout>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(std::vector<int32_t>(a[i].token_ids().begin(), a[i].token_ids().end()),
              std::vector<int32_t>(b[i].token_ids().begin(), b[i].token_ids().end()));
    ASSERT_EQ(a[i].logprobs_size(), b[i].logprobs_size());
    for (int j = 0; j < a[i].logprobs_size(); ++j) EXPECT_FLOAT_EQ(a[i].logprobs(j), b[i].logprobs(j));
    EXPECT_EQ(a[i].policy_version(), b[i].policy_version());
  }
}

TEST_F(GeneratorServiceTest, RelayChainOfThreeEndsWithIdenticalWeights) {
  auto second = StartGenerator(TinyGeneratorConfig("gen-b"));
  auto third = StartGenerator(TinyGeneratorConfig("gen-c"));
  ASSERT_NE(second, nullptr);
  ASSERT_NE(third, nullptr);
  const auto before = Fingerprint(gen_->stub.get());
  auto weights = NewTinyWeights(11);
  // Many small buckets: the chain relays each as soon as it arrives.
  auto writer = WeightStreamWriter::Create(1, weights.views, 4 << 20);
  ASSERT_TRUE(writer.ok());
  ASSERT_GT(writer->bucket_count(), 10u);
  auto published = PublishWeights(*writer, {gen_->server.address, second->server.address, third->server.address},
                                  std::chrono::seconds(60));
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  const v1::WeightUpdateResult* node = &published->result;
  for (const char* id : {"gen-a", "gen-b", "gen-c"}) {
    EXPECT_EQ(node->node(), id);
    EXPECT_TRUE(node->applied()) << node->error();
    EXPECT_EQ(node->version(), 1u);
    EXPECT_EQ(node->bytes_received(), writer->total_bytes());
    EXPECT_EQ(node->buckets_received(), writer->bucket_count());
    if (std::string(id) == "gen-c") {
      EXPECT_EQ(node->downstream_size(), 0);
    } else {
      ASSERT_EQ(node->downstream_size(), 1);
      node = &node->downstream(0);
    }
  }
  const auto a = Fingerprint(gen_->stub.get());
  const auto b = Fingerprint(second->stub.get());
  const auto c = Fingerprint(third->stub.get());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a[0].policy_version(), 1u);
  ExpectSameRollouts(a, b);
  ExpectSameRollouts(a, c);
  bool changed = false;
  for (size_t i = 0; i < a.size() && i < before.size(); ++i)
    changed = changed || a[i].logprobs(0) != before[i].logprobs(0);
  EXPECT_TRUE(changed) << "the new weights should change the model's log-probs";

  // A corrupt bucket in the middle of the chain's stream: every node refuses
  // it (the head first, which cancels the rest) and all keep version 1.
  {
    auto other = NewTinyWeights(12);
    auto bad = WeightStreamWriter::Create(2, other.views, 4 << 20);
    ASSERT_TRUE(bad.ok());
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen_->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = bad->Header({second->server.address, third->server.address});
    bool ok = stream->Write(msg);
    for (uint32_t i = 0; ok && i < bad->bucket_count(); ++i) {
      msg.Clear();
      bad->FillBucket(i, msg.mutable_bucket());
      if (i == 3) (*msg.mutable_bucket()->mutable_data())[7] ^= 0x01;
      ok = stream->Write(msg);
    }
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
  }
  for (auto* stub : {gen_->stub.get(), second->stub.get(), third->stub.get()})
    EXPECT_EQ(Info(stub).policy_version(), 1u);
  ExpectSameRollouts(a, Fingerprint(third->stub.get()));
}

TEST_F(GeneratorServiceTest, StreamCutBetweenBucketsCanBeResumed) {
  auto weights = NewTinyWeights(13);
  auto writer = WeightStreamWriter::Create(1, weights.views, 4 << 20);
  ASSERT_TRUE(writer.ok());
  ASSERT_GT(writer->bucket_count(), 4u);
  std::vector<v1::WeightBucket> buckets(writer->bucket_count());
  for (uint32_t i = 0; i < writer->bucket_count(); ++i) writer->FillBucket(i, &buckets[i]);
  {  // The first three buckets, then the sender goes away.
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen_->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer->Header();
    ASSERT_TRUE(stream->Write(msg));
    for (uint32_t i = 0; i < 3; ++i) {
      *msg.mutable_bucket() = buckets[i];
      ASSERT_TRUE(stream->Write(msg));
    }
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED) << st.error_message();
    EXPECT_NE(st.error_message().find("after 3 buckets"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 0u);
  {  // The rest, on a new stream that resumes at bucket 3.
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen_->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer->Header();
    msg.mutable_header()->set_resume_from_bucket(3);
    ASSERT_TRUE(stream->Write(msg));
    for (uint32_t i = 3; i < buckets.size(); ++i) {
      *msg.mutable_bucket() = buckets[i];
      ASSERT_TRUE(stream->Write(msg));
    }
    *msg.mutable_commit() = *writer->Commit();
    ASSERT_TRUE(stream->Write(msg));
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_TRUE(result.applied()) << result.error();
    EXPECT_EQ(result.version(), 1u);
  }
  EXPECT_EQ(Info(gen_->stub.get()).policy_version(), 1u);
}

TEST_F(GeneratorServiceTest, HealthSaysServing) {
  grpc::ClientContext ctx;
  v1::HealthResponse h;
  ASSERT_TRUE(gen_->stub->Health(&ctx, v1::HealthRequest(), &h).ok());
  EXPECT_EQ(h.status(), v1::HealthResponse::SERVING);
  EXPECT_NE(h.message().find("version 0"), std::string::npos);
}

}  // namespace
}  // namespace spar::testing
