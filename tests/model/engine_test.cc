// The generation engine on a tiny real Llama-3 (random weights, the real
// tokenizer): batching, seeds, sampling filters, stops, cancellation,
// weight swaps; and the sampler on hand-made distributions.
#include "model/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <future>
#include <set>

#include "tests/support/test_support.h"

namespace spar {
namespace {

// --- SampleTokens on known distributions -----------------------------------

torch::Tensor LogitsOf(const std::vector<std::vector<double>>& probs) {
  auto t = torch::empty({static_cast<int64_t>(probs.size()), static_cast<int64_t>(probs[0].size())});
  for (size_t i = 0; i < probs.size(); ++i)
    for (size_t j = 0; j < probs[i].size(); ++j) t[i][j] = std::log(probs[i][j]);
  return t;
}

TEST(Sampler, GreedyTakesTheArgmaxAndReportsTemperatureOneLogProbs) {
  auto logits = LogitsOf({{0.1, 0.6, 0.3}});
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  SampleTokens(logits, {{0.0f, 1.0f, 0, 0.99}}, &tokens, &logprobs);
  EXPECT_EQ(tokens[0], 1);
  EXPECT_NEAR(logprobs[0], std::log(0.6), 1e-5);
}

TEST(Sampler, InverseCdfPicksTheTokenTheUniformFallsIn) {
  auto logits = LogitsOf({{0.2, 0.5, 0.3}, {0.2, 0.5, 0.3}, {0.2, 0.5, 0.3}});
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  // Unfiltered: cumulative 0.2, 0.7, 1.0 in vocabulary order.
  SampleTokens(logits, {{1, 1, 0, 0.1}, {1, 1, 0, 0.5}, {1, 1, 0, 0.9}}, &tokens, &logprobs);
  EXPECT_EQ(tokens, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_NEAR(logprobs[2], std::log(0.3), 1e-5);
}

TEST(Sampler, TopPAndTopKKeepOnlyTheHead) {
  auto logits = LogitsOf({{0.2, 0.5, 0.3}, {0.2, 0.5, 0.3}});
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  // top_p 0.6: {0.5, 0.3} kept (0.5 < 0.6 so the second is needed); u=0.99
  // lands on the last kept token, never on 0.2.
  // top_k 1: only the argmax, whatever u.
  SampleTokens(logits, {{1, 0.6f, 0, 0.99}, {1, 1, 1, 0.99}}, &tokens, &logprobs);
  EXPECT_EQ(tokens[0], 2);
  EXPECT_EQ(tokens[1], 1);
  // Log-probs stay those of the unfiltered temperature-1 distribution.
  EXPECT_NEAR(logprobs[0], std::log(0.3), 1e-5);
}

TEST(Sampler, TemperatureSharpensTheDistribution) {
  auto logits = LogitsOf({{0.4, 0.6}});
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  // At T = 0.25: p ~ 0.165 / 0.835, so u = 0.3 picks token 1 (at T = 1 it
  // would pick token 0).
  SampleTokens(logits, {{0.25f, 1, 0, 0.3}}, &tokens, &logprobs);
  EXPECT_EQ(tokens[0], 1);
  SampleTokens(logits, {{1.0f, 1, 0, 0.3}}, &tokens, &logprobs);
  EXPECT_EQ(tokens[0], 0);
}

// --- The engine on a tiny model --------------------------------------------

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = ::spar::testing::TokenizerDir("llama3");
    if (dir.empty()) GTEST_SKIP() << "Llama-3 tokenizer absent: run scripts/setup.sh";
    auto tok = Tokenizer::FromDir(dir.string());
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tokenizer_ = std::shared_ptr<const Tokenizer>(std::move(*tok));
    config_ = *ModelConfig::Preset("llama", "tiny");
  }

  std::unique_ptr<GenerationEngine> Make(uint64_t seed = 5, int32_t max_batch = 4) {
    auto model = CreateCausalLM(config_, seed);
    EXPECT_TRUE(model.ok());
    EngineOptions options;
    options.max_batch = max_batch;
    options.max_context = 128;
    options.max_queue = 64;
    auto engine = GenerationEngine::Create(*model, tokenizer_, options);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    return std::move(*engine);
  }

  std::vector<int32_t> Prompt(const std::string& text) {
    auto ids = tokenizer_->EncodeChat({{"user", text}}, true);
    EXPECT_TRUE(ids.ok());
    return *ids;
  }

  std::shared_ptr<const Tokenizer> tokenizer_;
  ModelConfig config_;
};

TEST_F(EngineTest, KSamplesWithLogProbsAndTheSameSeedGivesTheSameOutput) {
  auto engine = Make();
  SamplingOptions s;
  s.temperature = 1.0f;
  s.max_new_tokens = 12;
  s.seed = 42;
  auto a = engine->Generate(Prompt("Hello there"), 5, s);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_EQ(a->size(), 5u);
  std::set<std::vector<int32_t>> distinct;
  for (size_t i = 0; i < a->size(); ++i) {
    const auto& out = (*a)[i];
    EXPECT_EQ(out.sample_index, i);
    ASSERT_FALSE(out.token_ids.empty());
    ASSERT_EQ(out.token_ids.size(), out.logprobs.size());
    for (float lp : out.logprobs) {
      EXPECT_TRUE(std::isfinite(lp));
      EXPECT_LE(lp, 0.0f);
    }
    EXPECT_TRUE(out.finish_reason == "length" || out.finish_reason == "stop");
    distinct.insert(out.token_ids);
  }
  EXPECT_GT(distinct.size(), 1u) << "samples of one prompt should differ";
  // Concurrent load must not change a seeded result.
  std::promise<void> other_done;
  GenerationRequest noise;
  noise.prompt_ids = Prompt("Something else entirely");
  noise.num_samples = 3;
  noise.sampling = s;
  noise.sampling.seed = 7;
  noise.on_done = [&](const Status&) { other_done.set_value(); };
  ASSERT_TRUE(engine->Submit(noise).ok());
  auto b = engine->Generate(Prompt("Hello there"), 5, s);
  ASSERT_TRUE(b.ok());
  other_done.get_future().wait();
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ((*a)[i].token_ids, (*b)[i].token_ids) << "sample " << i;
  auto stats = engine->Stats();
  EXPECT_EQ(stats.rollouts_completed, 13u);
  EXPECT_EQ(stats.busy_slots, 0);
}

TEST_F(EngineTest, LogProbsAreThoseOfTheFullForward) {
  auto model = *CreateCausalLM(config_, 9);
  EngineOptions options;
  options.max_batch = 2;
  options.max_context = 64;
  auto created = GenerationEngine::Create(model, tokenizer_, options);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto engine = std::move(*created);
  SamplingOptions s;
  s.temperature = 0.7f;
  s.top_p = 0.9f;
  s.max_new_tokens = 6;
  s.seed = 3;
  s.ignore_eos = true;
  auto prompt = Prompt("Check");
  auto out = engine->Generate(prompt, 1, s);
  ASSERT_TRUE(out.ok());
  std::vector<int64_t> all(prompt.begin(), prompt.end());
  for (int32_t t : (*out)[0].token_ids) all.push_back(t);
  torch::NoGradGuard no_grad;
  auto logits = model->Forward(torch::tensor(all).unsqueeze(0), torch::ones({1, (int64_t)all.size()}, torch::kLong));
  auto logp = logits[0].log_softmax(-1);
  for (size_t i = 0; i < (*out)[0].token_ids.size(); ++i) {
    const int64_t pos = static_cast<int64_t>(prompt.size() + i) - 1;
    EXPECT_NEAR(logp[pos][(*out)[0].token_ids[i]].item<float>(), (*out)[0].logprobs[i], 1e-4) << i;
  }
}

TEST_F(EngineTest, GreedyStopsAtStopTokensAndStrings) {
  auto engine = Make();
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 10;
  auto free_run = engine->Generate(Prompt("abc"), 1, s);
  ASSERT_TRUE(free_run.ok());
  const auto& tokens = (*free_run)[0].token_ids;
  ASSERT_GE(tokens.size(), 3u);
  // Stop at the third token's id: the output ends there, token included.
  SamplingOptions stop_token = s;
  stop_token.stop_token_ids = {tokens[2]};
  auto stopped = engine->Generate(Prompt("abc"), 1, stop_token);
  ASSERT_TRUE(stopped.ok());
  const auto& st = (*stopped)[0];
  EXPECT_EQ(st.finish_reason, "stop");
  ASSERT_LE(st.token_ids.size(), 3u);
  EXPECT_EQ(st.token_ids.back(), tokens[2]);
  // A stop string cut from the text.
  const std::string text = (*free_run)[0].text;
  if (text.size() >= 4) {
    SamplingOptions stop_string = s;
    stop_string.stop = {text.substr(2, 2)};
    auto cut = engine->Generate(Prompt("abc"), 1, stop_string);
    ASSERT_TRUE(cut.ok());
    EXPECT_EQ((*cut)[0].finish_reason, "stop");
    EXPECT_EQ((*cut)[0].text, text.substr(0, text.find(text.substr(2, 2))));
  }
}

TEST_F(EngineTest, BadRequestsAreRejectedWithTheFieldName) {
  auto engine = Make();
  GenerationRequest r;
  EXPECT_NE(engine->Submit(r).status().message().find("prompt"), std::string::npos);
  r.prompt_ids = {1, 2};
  r.num_samples = 0;
  EXPECT_NE(engine->Submit(r).status().message().find("num_samples"), std::string::npos);
  r.num_samples = 1;
  r.sampling.temperature = -1;
  EXPECT_NE(engine->Submit(r).status().message().find("temperature"), std::string::npos);
  r.sampling.temperature = 1;
  r.sampling.top_p = 1.5;
  EXPECT_NE(engine->Submit(r).status().message().find("top_p"), std::string::npos);
  r.sampling.top_p = 1;
  r.sampling.max_new_tokens = 1000;
  EXPECT_NE(engine->Submit(r).status().message().find("max_context"), std::string::npos);
  r.sampling.max_new_tokens = 4;
  r.prompt_ids = {1, static_cast<int32_t>(config_.vocab_size)};
  EXPECT_NE(engine->Submit(r).status().message().find("vocabulary"), std::string::npos);
  r.prompt_ids = {1, 2};
  r.num_samples = 65;
  EXPECT_EQ(engine->Submit(r).status().code(), StatusCode::kResourceExhausted);
}

TEST_F(EngineTest, CancelFreesSlotsAndReportsCancelled) {
  auto engine = Make(5, 2);
  GenerationRequest r;
  r.prompt_ids = Prompt("long one");
  r.num_samples = 4;
  r.sampling.max_new_tokens = 100;
  r.sampling.ignore_eos = true;
  std::promise<Status> done;
  r.on_done = [&](const Status& s) { done.set_value(s); };
  auto id = engine->Submit(r);
  ASSERT_TRUE(id.ok());
  engine->Cancel(*id);
  auto status = done.get_future().get();
  EXPECT_EQ(status.code(), StatusCode::kCancelled);
  for (int i = 0; i < 100 && engine->Stats().busy_slots > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(engine->Stats().busy_slots, 0);
  EXPECT_EQ(engine->Stats().queue_depth, 0);
  // Still serving.
  SamplingOptions s;
  s.max_new_tokens = 3;
  EXPECT_TRUE(engine->Generate(Prompt("after"), 2, s).ok());
}

TEST_F(EngineTest, SwapWeightsChangesOutputsAndBumpsTheVersion) {
  auto engine = Make(5);
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 8;
  s.ignore_eos = true;
  auto before = engine->Generate(Prompt("swap"), 1, s);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ((*before)[0].policy_version, 0u);
  auto other = *CreateCausalLM(config_, 99);
  auto bad = other->NamedWeights();
  bad.pop_back();
  EXPECT_FALSE(engine->SwapWeights(bad, 1).ok());
  ASSERT_TRUE(engine->SwapWeights(other->NamedWeights(), 1).ok());
  // The same version again: a no-op with the same weights (a retried
  // publication), refused with other weights or an older version.
  EXPECT_TRUE(engine->SwapWeights(other->NamedWeights(), 1).ok());
  auto third = *CreateCausalLM(config_, 98);
  EXPECT_EQ(engine->SwapWeights(third->NamedWeights(), 1).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine->SwapWeights(third->NamedWeights(), 0).code(), StatusCode::kFailedPrecondition);
  auto after = engine->Generate(Prompt("swap"), 1, s);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)[0].policy_version, 1u);
  EXPECT_NE((*before)[0].token_ids, (*after)[0].token_ids);
  // The new weights give what a fresh engine on them gives.
  auto fresh = Make(99);
  auto expected = fresh->Generate(Prompt("swap"), 1, s);
  EXPECT_EQ((*expected)[0].token_ids, (*after)[0].token_ids);
}

TEST_F(EngineTest, ManyRequestsFromManyThreadsAllComplete) {
  auto engine = Make(5, 3);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      SamplingOptions s;
      s.max_new_tokens = 5 + t;
      s.seed = t;
      auto out = engine->Generate(Prompt("thread " + std::to_string(t)), 2, s);
      if (out.ok() && out->size() == 2) ok++;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(engine->Stats().rollouts_completed, 8u);
}

}  // namespace
}  // namespace spar
