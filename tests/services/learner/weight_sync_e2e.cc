// Learner -> generator weight stream end to end over loopback gRPC: the
// learner trains an iteration on the tiny Llama, publishes version 1 to a
// real generator service (in-process, real gRPC), and the generator then
// serves version 1 with the learner's exact log-probabilities. A stream cut
// halfway leaves the generator on its old version. With
// learner.publish_every_steps the generator serves the iteration's version
// with a new revision after each step, and the next version (revision 0) at
// the end; older (version, revision) pairs are refused.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <utility>

#include "services/learner/causal_lm_policy.h"
#include "services/learner/learner_core.h"
#include "services/weights/weight_publisher.h"
#include "tests/services/generator/generator_test_env.h"

namespace spar::testing {
namespace {

struct Greedy {
  std::vector<int32_t> prompt, tokens;
  std::vector<float> logprobs;
  uint64_t version = 0;
  uint64_t revision = 0;
};

Greedy GenerateGreedy(v1::Generator::Stub* stub) {
  v1::GenerateRequest req;
  req.set_request_id("greedy");
  auto* p = req.add_prompts();
  p->set_prompt_id("p");
  p->set_text("The learner sends");
  req.set_num_samples(1);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_new_tokens(8);
  req.mutable_sampling()->set_return_logprobs(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse resp;
  Greedy out;
  while (reader->Read(&resp)) {
    for (const auto& r : resp.rollouts()) {
      out.prompt.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      out.tokens.assign(r.token_ids().begin(), r.token_ids().end());
      out.logprobs.assign(r.logprobs().begin(), r.logprobs().end());
      out.version = r.policy_version();
      out.revision = r.policy_revision();
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  return out;
}

// The learner model's argmax and log-prob for every generated token.
void ExpectSameModel(TrainablePolicy& policy, const Greedy& g) {
  ASSERT_FALSE(g.tokens.empty());
  std::vector<int64_t> ids(g.prompt.begin(), g.prompt.end());
  ids.insert(ids.end(), g.tokens.begin(), g.tokens.end());
  auto input = torch::tensor(ids, torch::kLong).unsqueeze(0);
  torch::NoGradGuard no_grad;
  auto logp = torch::log_softmax(policy.Forward(input, torch::ones_like(input)).to(torch::kFloat32), -1)[0];
  for (size_t i = 0; i < g.tokens.size(); ++i) {
    const int64_t pos = static_cast<int64_t>(g.prompt.size() + i) - 1;
    EXPECT_EQ(logp[pos].argmax().item<int64_t>(), g.tokens[i]) << "token " << i;
    EXPECT_NEAR(logp[pos][g.tokens[i]].item<float>(), g.logprobs[i], 2e-4) << "token " << i;
  }
}

// Both tests train the tiny model a few small SPPO steps on short sequences.
LearnerConfig SmallStepsConfig() {
  LearnerConfig config;
  config.model = TinyModelDir();
  config.batch_groups = 2;
  config.learning_rate = 3e-3;
  config.warmup_ratio = 0;
  config.loss.eta = 4;
  config.max_length = 24;
  config.max_prompt_length = 12;
  return config;
}

TEST(WeightSyncE2E, GeneratorServesTheLearnersNewVersionAndACutStreamChangesNothing) {
  SPAR_REQUIRE_TINY_MODEL();
  auto gen = StartGenerator(TinyGeneratorConfig("gen-e2e"));
  ASSERT_NE(gen, nullptr);
  auto before = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(before.version, 0u);

  auto loaded = CausalLMPolicy::Load(TinyModelDir(), "cpu", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  CausalLMPolicy* policy = loaded->get();
  LearnerConfig config = SmallStepsConfig();
  config.bucket_mb = 1;  // many buckets, so the cut below lands mid-stream
  auto core = LearnerCore::Create(config, std::move(*loaded), nullptr);
  ASSERT_TRUE(core.ok());
  ASSERT_TRUE((*core)->StartIteration(0, 4).ok());
  std::vector<LearnerExample> examples;
  for (int i = 0; i < 4; ++i) {
    LearnerExample e;
    e.prompt_id = "p" + std::to_string(i);
    e.prompt_ids = before.prompt;
    e.responses = {before.tokens, {static_cast<int32_t>(1000 + i), 1001, 1002}};
    e.win_rates = {0.1, 0.9};  // push the greedy answer down
    examples.push_back(e);
  }
  ASSERT_EQ((*core)->Submit(examples).accepted, 4u);
  auto finished = (*core)->FinishIteration(0, {gen->server.address}, "");
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_TRUE(finished->published);
  EXPECT_EQ(finished->policy_version, 1u);
  EXPECT_GT(finished->publish.bytes, 0u);

  auto after = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(after.version, 1u);
  ExpectSameModel(*policy, after);

  // Version 2 is cut after half its buckets: the generator keeps version 1.
  std::vector<torch::Tensor> keep;
  std::vector<WeightTensorView> views;
  for (auto& [name, t] : policy->NamedWeights()) {
    keep.push_back((t.detach() * 0.5).contiguous());
    views.push_back({name, "F32", keep.back().sizes().vec(), keep.back().data_ptr(),
                     static_cast<uint64_t>(keep.back().nbytes())});
  }
  auto writer = WeightStreamWriter::Create(2, views, 1 << 20);
  ASSERT_TRUE(writer.ok());
  ASSERT_GE(writer->bucket_count(), 4u);
  {
    grpc::ClientContext ctx;
    v1::WeightUpdateResult result;
    auto stream = gen->stub->UpdateWeights(&ctx, &result);
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer->Header();
    ASSERT_TRUE(stream->Write(msg));
    for (uint32_t i = 0; i < writer->bucket_count() / 2; ++i) {
      msg.Clear();
      writer->FillBucket(i, msg.mutable_bucket());
      ASSERT_TRUE(stream->Write(msg));
    }
    ctx.TryCancel();  // the learner dies mid-stream
    EXPECT_FALSE(stream->Finish().ok());
  }
  auto still = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(still.version, 1u);
  EXPECT_EQ(still.tokens, after.tokens);
  ExpectSameModel(*policy, still);
}

std::pair<uint64_t, uint64_t> Serving(v1::Generator::Stub* stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GeneratorInfo info;
  EXPECT_TRUE(stub->Info(&ctx, v1::InfoRequest(), &info).ok());
  return {info.policy_version(), info.policy_revision()};
}

// The policy's weights as float32 views, published as (version, revision).
Result<PublishResult> PublishPolicy(TrainablePolicy& policy, uint64_t version, uint64_t revision,
                                    const std::string& address) {
  std::vector<torch::Tensor> keep;
  std::vector<WeightTensorView> views;
  for (auto& [name, t] : policy.NamedWeights()) {
    keep.push_back(t.detach().to(torch::kFloat32).contiguous());
    views.push_back({name, "F32", keep.back().sizes().vec(), keep.back().data_ptr(),
                     static_cast<uint64_t>(keep.back().nbytes())});
  }
  SPAR_ASSIGN_OR_RETURN(auto writer, WeightStreamWriter::Create(version, views, 8 << 20, revision));
  return PublishWeights(writer, {address}, std::chrono::seconds(60));
}

TEST(WeightSyncE2E, IntermediatePublicationsServeRevisionsThenTheNextVersion) {
  SPAR_REQUIRE_TINY_MODEL();
  auto gen = StartGenerator(TinyGeneratorConfig("gen-revisions"));
  ASSERT_NE(gen, nullptr);
  auto before = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(before.version, 0u);
  EXPECT_EQ(before.revision, 0u);

  auto loaded = CausalLMPolicy::Load(TinyModelDir(), "cpu", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  CausalLMPolicy* policy = loaded->get();
  LearnerConfig config = SmallStepsConfig();
  config.bucket_mb = 8;
  config.publish_every_steps = 1;
  auto core = LearnerCore::Create(config, std::move(*loaded), nullptr);
  ASSERT_TRUE(core.ok()) << core.status().ToString();
  // The orchestrator names the chain when the iteration starts.
  ASSERT_TRUE((*core)->StartIteration(0, 4, {gen->server.address}).ok());
  auto examples = [&](int from) {
    std::vector<LearnerExample> out;
    for (int i = from; i < from + 2; ++i) {
      LearnerExample e;
      e.prompt_id = "p" + std::to_string(i);
      e.prompt_ids = before.prompt;
      e.responses = {before.tokens, {static_cast<int32_t>(1000 + i), 1001, 1002}};
      e.win_rates = {0.1, 0.9};
      out.push_back(e);
    }
    return out;
  };
  auto await_publications = [&](uint64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while ((*core)->Progress().intermediate_publications < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return (*core)->Progress();
  };

  // Step 1 -> version 0 revision 1, with the learner's weights after it.
  ASSERT_EQ((*core)->Submit(examples(0)).accepted, 2u);
  LearnerProgressSnapshot p = await_publications(1);
  ASSERT_EQ(p.intermediate_publications, 1u);
  EXPECT_EQ(p.intermediate_publish_failures, 0u);
  EXPECT_EQ(p.policy_version, 0u);
  EXPECT_EQ(p.policy_revision, 1u);
  EXPECT_EQ(Serving(gen->stub.get()), std::make_pair(uint64_t{0}, uint64_t{1}));
  auto first = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(first.version, 0u);
  EXPECT_EQ(first.revision, 1u);
  ExpectSameModel(*policy, first);

  // Step 2 -> revision 2.
  ASSERT_EQ((*core)->Submit(examples(2)).accepted, 2u);
  p = await_publications(2);
  ASSERT_EQ(p.intermediate_publications, 2u);
  EXPECT_EQ(p.policy_revision, 2u);
  EXPECT_EQ(Serving(gen->stub.get()), std::make_pair(uint64_t{0}, uint64_t{2}));
  auto second = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(second.revision, 2u);
  ExpectSameModel(*policy, second);

  // An older revision is refused (the generator keeps serving 0.2); the
  // same (version, revision) with the same weights is a no-op.
  auto older = PublishPolicy(*policy, 0, 1, gen->server.address);
  ASSERT_FALSE(older.ok());
  EXPECT_NE(older.status().message().find("older than the serving version 0 revision 2"), std::string::npos)
      << older.status().ToString();
  auto same = PublishPolicy(*policy, 0, 2, gen->server.address);
  EXPECT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(Serving(gen->stub.get()), std::make_pair(uint64_t{0}, uint64_t{2}));

  // The end of the iteration: version 1, revision 0, no intermediate
  // publication for the last steps.
  auto finished = (*core)->FinishIteration(0, {gen->server.address}, "");
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_EQ(finished->policy_version, 1u);
  EXPECT_EQ(finished->publish.result.revision(), 0u);
  EXPECT_EQ(Serving(gen->stub.get()), std::make_pair(uint64_t{1}, uint64_t{0}));
  EXPECT_EQ((*core)->Progress().policy_revision, 0u);
  auto after = GenerateGreedy(gen->stub.get());
  EXPECT_EQ(after.version, 1u);
  EXPECT_EQ(after.revision, 0u);
  ExpectSameModel(*policy, after);
  // Any revision of version 0 is older than version 1.
  auto stale = PublishPolicy(*policy, 0, 5, gen->server.address);
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("older than the serving version 1"), std::string::npos)
      << stale.status().ToString();

  // Iteration 1 restarts its revisions at 1 (the chain is the one last given).
  ASSERT_TRUE((*core)->StartIteration(1, 2).ok());
  ASSERT_EQ((*core)->Submit(examples(4)).accepted, 2u);
  p = await_publications(1);
  EXPECT_EQ(p.policy_revision, 1u);
  EXPECT_EQ(Serving(gen->stub.get()), std::make_pair(uint64_t{1}, uint64_t{1}));
}

}  // namespace
}  // namespace spar::testing
