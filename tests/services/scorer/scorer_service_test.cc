// The PreferenceScorer over real loopback gRPC, with the rule scorer (the
// GPM and BT kinds run the same client code in their own tests).
#include <cmath>
#include <thread>

#include <gtest/gtest.h>

#include "services/common/grpc_status.h"
#include "services/common/server.h"
#include "services/scorer/scorer_config.h"
#include "services/scorer/scorer_service.h"

namespace spar {
namespace {

// A model that returns whatever table it is told to, to test the core's
// guards (NaN, wrong shapes, slowness).
class ScriptedModel : public PreferenceModel {
 public:
  double value = 0.0;
  std::chrono::milliseconds delay{0};
  std::atomic<int> calls{0};
  std::atomic<size_t> max_groups_in_call{0};
  ScorerDescription Describe() const override {
    ScorerDescription d;
    d.kind = "scripted";
    d.model_name = "scripted";
    return d;
  }
  Result<std::vector<GroupPreferences>> Score(const std::vector<ScoreGroupInput>& groups) override {
    ++calls;
    max_groups_in_call = std::max(max_groups_in_call.load(), groups.size());
    std::this_thread::sleep_for(delay);
    std::vector<GroupPreferences> out;
    for (const auto& g : groups) {
      std::vector<double> r(g.responses.size(), 0.0);
      r[0] = value;
      auto p = PreferencesFromRewards(r, 1.0, ProbabilityConvention::kSigmoidSOverTau);
      if (!p.ok()) {  // NaN requested: build the table by hand
        GroupPreferences bad;
        bad.k = static_cast<uint32_t>(g.responses.size());
        bad.probabilities.assign(bad.k * bad.k, value);
        bad.win_rates.assign(bad.k, value);
        out.push_back(bad);
        continue;
      }
      out.push_back(*p);
    }
    return out;
  }
};

class ScorerServiceTest : public ::testing::Test {
 protected:
  void StartWith(std::unique_ptr<PreferenceModel> model, ScorerLimits limits = {}) {
    auto core = ScorerCore::Create(std::move(model), limits);
    ASSERT_TRUE(core.ok());
    core_ = std::move(*core);
    service_ = std::make_unique<ScorerService>(core_.get());
    GrpcServerOptions options;
    options.max_message_bytes = 8 << 20;  // small, so the oversize test is cheap
    auto server = StartGrpcServer(options, {service_.get()});
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server->server);
    stub_ = v1::PreferenceScorer::NewStub(MakeChannel(server->address));
  }
  void StartRule() {
    ScorerConfig config;
    config.kind = "rule";
    config.tau = 1.0;
    config.rule.target_words = 3;
    config.rule.tau = 1.0;
    auto model = CreatePreferenceModel(config);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    StartWith(std::move(*model));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  static v1::ScoreGroup* AddGroup(v1::ScoreRequest* req, const std::string& id, int k) {
    auto* g = req->add_groups();
    g->set_group_id(id);
    g->mutable_prompt()->set_text("Say something");
    for (int i = 0; i < k; ++i) {
      std::string response;
      for (int w = 0; w <= i; ++w) response += "word ";
      g->add_responses(response);
    }
    return g;
  }

  grpc::Status Call(const v1::ScoreRequest& req, v1::ScoreResponse* resp, int timeout_ms = 10000) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    return stub_->Score(&ctx, req, resp);
  }

  std::unique_ptr<ScorerCore> core_;
  std::unique_ptr<ScorerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::PreferenceScorer::Stub> stub_;
};

TEST_F(ScorerServiceTest, ScoresBatchedGroupsOfEveryK) {
  StartRule();
  v1::ScoreRequest req;
  for (int k = 2; k <= 16; ++k) AddGroup(&req, "g" + std::to_string(k), k);
  auto* chat = req.add_groups();
  chat->set_group_id("chat");
  auto* m = chat->mutable_prompt()->mutable_conversation()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  chat->add_responses("a b c");
  chat->add_responses("a");
  v1::ScoreResponse resp;
  grpc::Status st = Call(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.groups_size(), 16);
  for (int i = 0; i < 15; ++i) {
    const auto& g = resp.groups(i);
    const int k = i + 2;
    EXPECT_EQ(g.group_id(), "g" + std::to_string(k));
    ASSERT_EQ(g.matrix().k(), static_cast<uint32_t>(k));
    ASSERT_EQ(g.matrix().probabilities_size(), k * k);
    ASSERT_EQ(g.matrix().win_rates_size(), k);
    // Target 3 words: response 2 (3 words) wins most.
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (g.matrix().win_rates(j) > g.matrix().win_rates(best)) best = j;
    EXPECT_EQ(best, std::min(2, k - 1));
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b)
        EXPECT_NEAR(g.matrix().probabilities(a * k + b) + g.matrix().probabilities(b * k + a), 1.0, 1e-12);
  }
  EXPECT_GT(resp.groups(15).matrix().win_rates(0), 0.5);
  EXPECT_NE(resp.model().find("rule"), std::string::npos);

  v1::ScorerInfo info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Info(&ctx, v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.kind(), "rule");
  EXPECT_EQ(info.groups_scored(), 16u);
  EXPECT_DOUBLE_EQ(info.tau(), 1.0);
}

TEST_F(ScorerServiceTest, BadRequestsGetClearErrorsAndTheServerKeepsServing) {
  StartRule();
  struct Case {
    std::function<void(v1::ScoreRequest*)> build;
    std::string fragment;
  };
  std::vector<Case> cases = {
      {[](v1::ScoreRequest*) {}, "no groups"},
      {[](v1::ScoreRequest* r) { AddGroup(r, "one", 1); }, "groups[0] (id 'one').responses: needs at least 2"},
      {[](v1::ScoreRequest* r) { AddGroup(r, "ok", 3); AddGroup(r, "big", 70); }, "groups[1] (id 'big').responses: 70 responses"},
      {[](v1::ScoreRequest* r) { AddGroup(r, "e", 3)->set_responses(1, ""); }, "responses[1]: empty response"},
      {[](v1::ScoreRequest* r) { AddGroup(r, "np", 2)->mutable_prompt()->clear_body(); }, "prompt: set text or conversation"},
      {[](v1::ScoreRequest* r) {
         auto* g = AddGroup(r, "role", 2);
         auto* m = g->mutable_prompt()->mutable_conversation()->add_messages();
         m->set_role("wizard");
         m->set_content("x");
       }, "'wizard'"},
  };
  for (const auto& c : cases) {
    v1::ScoreRequest req;
    c.build(&req);
    v1::ScoreResponse resp;
    grpc::Status st = Call(req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.fragment;
    EXPECT_NE(st.error_message().find(c.fragment), std::string::npos)
        << "'" << c.fragment << "' not in: " << st.error_message();
  }
  // Oversized: beyond the server's message limit -> RESOURCE_EXHAUSTED.
  v1::ScoreRequest huge;
  auto* g = AddGroup(&huge, "huge", 2);
  g->set_responses(0, std::string(9u << 20, 'x'));
  v1::ScoreResponse resp;
  grpc::Status st = Call(huge, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  // Still serving.
  v1::ScoreRequest fine;
  AddGroup(&fine, "fine", 4);
  ASSERT_TRUE(Call(fine, &resp).ok());
  EXPECT_EQ(resp.groups_size(), 1);
}

TEST_F(ScorerServiceTest, ConcurrentClientsAreBatchedTogether) {
  auto model = std::make_unique<ScriptedModel>();
  model->value = 1.0;
  model->delay = std::chrono::milliseconds(20);
  ScriptedModel* raw = model.get();
  ScorerLimits limits;
  limits.max_batch_responses = 1000;
  StartWith(std::move(model), limits);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      for (int r = 0; r < 5; ++r) {
        v1::ScoreRequest req;
        AddGroup(&req, "c" + std::to_string(c), 5);
        v1::ScoreResponse resp;
        if (Call(req, &resp).ok() && resp.groups(0).matrix().win_rates(0) > 0.5) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 40);
  // While one call runs, the others queue and are taken together.
  EXPECT_LT(raw->calls.load(), 40);
  EXPECT_GT(raw->max_groups_in_call.load(), 1u);
}

TEST_F(ScorerServiceTest, NonFiniteTablesNeverLeaveTheService) {
  auto model = std::make_unique<ScriptedModel>();
  model->value = std::nan("");
  StartWith(std::move(model));
  v1::ScoreRequest req;
  AddGroup(&req, "nan", 3);
  v1::ScoreResponse resp;
  grpc::Status st = Call(req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(st.error_message().find("non-finite"), std::string::npos) << st.error_message();
}

TEST_F(ScorerServiceTest, DeadlinesAreHonoured) {
  auto model = std::make_unique<ScriptedModel>();
  model->delay = std::chrono::milliseconds(800);
  StartWith(std::move(model));
  v1::ScoreRequest req;
  AddGroup(&req, "slow", 2);
  v1::ScoreResponse resp;
  auto t0 = std::chrono::steady_clock::now();
  grpc::Status st = Call(req, &resp, 200);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(700));
}

TEST(ScorerConfigTest, SectionIsValidated) {
  auto parse = [](const std::string& yaml) -> Status {
    auto root = ConfigNode::LoadString(yaml, "s.yaml");
    if (!root.ok()) return root.status();
    ScorerConfig c;
    return ReadScorerConfig(root->Child("scorer"), &c);
  };
  EXPECT_TRUE(parse("scorer: {kind: rule, rule: {target_words: 5}}").ok());
  EXPECT_NE(parse("scorer: {kind: pairrm}").message().find("gpm, bt, rule"), std::string::npos);
  EXPECT_NE(parse("scorer: {kind: gpm}").message().find("scorer.model"), std::string::npos);
  EXPECT_NE(parse("scorer: {kind: rule}").message().find("prefers nothing"), std::string::npos);
  EXPECT_NE(parse("scorer: {kind: gpm, model: m, convention: x}").message().find("sigmoid_2s_over_tau"),
            std::string::npos);
  EXPECT_NE(parse("scorer: {kind: gpm, model: m, tau: 0}").message().find("scorer.tau"), std::string::npos);
  EXPECT_NE(parse("scorer: {kind: rule, rule: {target: 5}}").message().find("scorer.rule.target"),
            std::string::npos);
}

}  // namespace
}  // namespace spar
