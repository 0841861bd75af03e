// The learner on the real decoders: SPPO / GPO gradients through a tiny
// model against finite differences (float64), gradient checkpointing gives
// the same loss and gradients, bf16 autocast over float32 master weights,
// checkpoint -> load -> identical logits, and bad examples rejected while
// training goes on with the rest.
#include <cmath>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>

#include "services/learner/causal_lm_policy.h"
#include "services/learner/learner_core.h"
#include "services/learner/trainer.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

CausalLMPolicy TinyPolicy(const std::string& arch, uint64_t seed, torch::ScalarType dtype = torch::kFloat32) {
  auto config = *ModelConfig::Preset(arch, "tiny");
  CausalLM model = *CreateCausalLM(config, seed);
  model->to(dtype);
  return CausalLMPolicy(model, "", arch + "-tiny");
}

// Two groups of K = 3 over token ids a tiny model knows.
std::vector<LearnerExample> Groups() {
  std::vector<LearnerExample> out;
  for (int g = 0; g < 2; ++g) {
    LearnerExample e;
    e.prompt_id = "g" + std::to_string(g);
    e.prompt_ids = {2, 100 + g, 101, 102};
    e.responses = {{300, 301, 302}, {400 + g, 401}, {500, 501, 502, 503}};
    e.win_rates = {0.7, 0.45, 0.2};
    e.mean_scores = {0.3, -0.1, -0.4};
    out.push_back(e);
  }
  return out;
}

TokenBatch Collated(const CausalLMPolicy& policy) {
  CollateOptions o;
  o.max_length = 16;
  o.max_prompt_length = 8;
  o.pad_id = policy.pad_id();
  return Collate(Groups(), o);
}

// The learner's loss as a function of the policy's parameters, with a
// fixed reference (the initial model's log-probs).
torch::Tensor Loss(CausalLMPolicy& policy, const TokenBatch& b, const torch::Tensor& ref, const LossOptions& o) {
  auto logp = policy.MaskedSequenceLogProbs(b.input_ids, b.attention_mask, b.labels, b.loss_mask)
                  .view({b.groups, b.k});
  return PreferenceLoss(logp, ref, b.win_rates, b.mean_scores, o).loss;
}

TEST(TrainingFeaturesTest, SppoAndGpoGradientsThroughTheModelMatchFiniteDifferences) {
  auto policy = TinyPolicy("llama", 21, torch::kFloat64);
  auto b = Collated(policy);
  torch::Tensor ref;
  {
    torch::NoGradGuard no_grad;
    ref = policy.MaskedSequenceLogProbs(b.input_ids, b.attention_mask, b.labels, b.loss_mask)
              .view({b.groups, b.k}) - 0.05;  // a != 0 so the pair terms are not at their minimum
  }
  for (auto kind : {LossKind::kSppo, LossKind::kSppoAllK, LossKind::kGpo}) {
    LossOptions o;
    o.kind = kind;
    o.eta = 2;
    o.gpo_clamp = 1000;
    auto named = policy.NamedWeights();
    for (auto& [name, p] : named)
      if (p.grad().defined()) p.mutable_grad().zero_();
    Loss(policy, b, ref, o).backward();
    // A few entries of every kind of tensor: embeddings of used tokens,
    // attention, MLP, norms.
    const std::vector<std::pair<std::string, std::vector<int64_t>>> probes = {
        {"model.embed_tokens.weight", {301, 5}},
        {"model.layers.0.self_attn.q_proj.weight", {3, 7}},
        {"model.layers.1.self_attn.v_proj.weight", {1, 2}},
        {"model.layers.0.mlp.down_proj.weight", {4, 9}},
        {"model.layers.1.input_layernorm.weight", {11}},
        {"model.norm.weight", {0}},
        {"lm_head.weight", {401, 3}},
    };
    for (const auto& [name, index] : probes) {
      torch::Tensor param;
      for (auto& [n, p] : named)
        if (n == name) param = p;
      ASSERT_TRUE(param.defined()) << name;
      std::vector<at::indexing::TensorIndex> idx(index.begin(), index.end());
      const double analytic = param.grad().index(idx).item<double>();
      const double h = 1e-5;
      double values[2];
      for (int side = 0; side < 2; ++side) {
        torch::NoGradGuard no_grad;
        const double original = param.index(idx).item<double>();
        param.index_put_(idx, original + (side == 0 ? h : -h));
        values[side] = Loss(policy, b, ref, o).item<double>();
        param.index_put_(idx, original);
      }
      const double numeric = (values[0] - values[1]) / (2 * h);
      EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-5 * std::abs(numeric))
          << LossKindName(kind) << " " << name;
    }
  }
}

class CheckpointingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CheckpointingTest, SameLossAndGradientsWithAndWithoutIt) {
  auto policy = TinyPolicy(GetParam(), 5);
  auto b = Collated(policy);
  torch::Tensor ref = torch::zeros({b.groups, b.k});
  LossOptions o;
  o.eta = 3;
  policy.SetTraining(true);
  auto run = [&](bool checkpointing) {
    EXPECT_TRUE(policy.ConfigureTraining(checkpointing, "float32").ok());
    for (auto& p : policy.Parameters())
      if (p.grad().defined()) p.mutable_grad().zero_();
    auto loss = Loss(policy, b, ref, o);
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& p : policy.Parameters()) grads.push_back(p.grad().clone());
    return std::make_pair(loss.item<double>(), grads);
  };
  auto [plain_loss, plain] = run(false);
  auto [ckpt_loss, ckpt] = run(true);
  EXPECT_TRUE(policy.model()->gradient_checkpointing());
  EXPECT_DOUBLE_EQ(plain_loss, ckpt_loss);
  ASSERT_EQ(plain.size(), ckpt.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_GT(plain[i].abs().sum().item<double>(), 0) << "parameter " << i << " got no gradient";
    EXPECT_TRUE(torch::allclose(plain[i], ckpt[i], 1e-5, 1e-7)) << "parameter " << i;
  }
  // Inference (no grad) never takes the checkpointed path and still works.
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::isfinite(policy.Forward(b.input_ids, b.attention_mask)).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(Architectures, CheckpointingTest, ::testing::Values("llama", "gemma"));

TEST(TrainingFeaturesTest, CheckpointedTrainingStepsEqualPlainOnes) {
  auto plain = TinyPolicy("llama", 8), ckpt = TinyPolicy("llama", 8);
  ASSERT_TRUE(ckpt.ConfigureTraining(true, "float32").ok());
  LearnerConfig c;
  c.learning_rate = 1e-3;
  c.warmup_ratio = 0;
  c.loss.eta = 2;
  c.max_length = 16;
  c.max_prompt_length = 8;
  PolicyTrainer ta(&plain, c, nullptr), tb(&ckpt, c, nullptr);
  ASSERT_TRUE(ta.BeginIteration(4).ok());
  ASSERT_TRUE(tb.BeginIteration(4).ok());
  for (int i = 0; i < 2; ++i) {
    auto sa = ta.Step(Groups());
    auto sb = tb.Step(Groups());
    ASSERT_TRUE(sa.ok() && sb.ok());
    EXPECT_NEAR(sa->loss, sb->loss, 1e-6 * std::max(1.0, std::abs(sa->loss)));
  }
  auto pa = plain.Parameters(), pb = ckpt.Parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::allclose(pa[i], pb[i], 1e-5, 1e-6)) << i;
}

TEST(TrainingFeaturesTest, Bf16AutocastKeepsFloat32MasterWeightsAndTrains) {
  auto fp32 = TinyPolicy("llama", 9), bf16 = TinyPolicy("llama", 9);
  ASSERT_TRUE(bf16.ConfigureTraining(false, "bfloat16").ok());
  auto b = Collated(bf16);
  torch::Tensor ref = torch::zeros({b.groups, b.k});
  LossOptions o;
  o.eta = 3;
  auto l32 = Loss(fp32, b, ref, o);
  auto l16 = Loss(bf16, b, ref, o);
  EXPECT_NEAR(l16.item<double>(), l32.item<double>(), 0.05 * std::abs(l32.item<double>()));
  EXPECT_NE(l16.item<double>(), l32.item<double>());  // bf16 matmuls really ran
  l16.backward();
  for (auto& p : bf16.Parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
  }
  // The autocast scope ends with the forward.
  EXPECT_FALSE(AutocastState::Current().cpu_enabled);
  // Checkpointing under autocast recomputes in bf16 too: same gradients.
  std::vector<torch::Tensor> plain;
  for (auto& p : bf16.Parameters()) {
    plain.push_back(p.grad().clone());
    p.mutable_grad().zero_();
  }
  ASSERT_TRUE(bf16.ConfigureTraining(true, "bfloat16").ok());
  bf16.SetTraining(true);
  Loss(bf16, b, ref, o).backward();
  auto params = bf16.Parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::allclose(plain[i], params[i].grad(), 1e-4, 1e-6)) << i;

  // Steps with autocast lower the loss.
  LearnerConfig c;
  c.learning_rate = 2e-5;
  c.warmup_ratio = 0;
  c.loss.eta = 2;
  c.max_length = 16;
  c.max_prompt_length = 8;
  c.dtype = "bfloat16";
  PolicyTrainer trainer(&bf16, c, nullptr);
  ASSERT_TRUE(trainer.BeginIteration(8).ok());
  auto first = trainer.Step(Groups());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  double last = first->loss;
  for (int i = 0; i < 5; ++i) last = trainer.Step(Groups())->loss;
  EXPECT_LT(last, first->loss);

  // Autocast needs float32 parameters; unknown names are refused.
  auto half = TinyPolicy("llama", 9, torch::kBFloat16);
  EXPECT_NE(half.ConfigureTraining(false, "bfloat16").message().find("master weights"), std::string::npos);
  EXPECT_FALSE(fp32.ConfigureTraining(false, "float16").ok());
}

TEST(TrainingFeaturesTest, CheckpointThenLoadGivesIdenticalLogits) {
  testing::TempDir dir;
  auto policy = TinyPolicy("llama", 12);
  LearnerConfig c;
  c.learning_rate = 1e-3;
  c.warmup_ratio = 0;
  c.max_length = 16;
  c.max_prompt_length = 8;
  PolicyTrainer trainer(&policy, c, nullptr);
  ASSERT_TRUE(trainer.BeginIteration(2).ok());
  ASSERT_TRUE(trainer.Step(Groups()).ok());  // weights differ from the seed's
  ASSERT_TRUE(policy.Save(dir.str() + "/ckpt").ok());
  auto loaded = CausalLMPolicy::Load(dir.str() + "/ckpt", "cpu", "float32");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto b = Collated(policy);
  torch::NoGradGuard no_grad;
  policy.SetTraining(false);
  EXPECT_TRUE(torch::equal(policy.Forward(b.input_ids, b.attention_mask),
                           (*loaded)->Forward(b.input_ids, b.attention_mask)));
  auto fresh = TinyPolicy("llama", 13);
  EXPECT_FALSE(torch::equal(policy.Forward(b.input_ids, b.attention_mask), fresh.Forward(b.input_ids, b.attention_mask)));
  ASSERT_TRUE(fresh.Load(dir.str() + "/ckpt").ok());
  EXPECT_TRUE(torch::equal(policy.Forward(b.input_ids, b.attention_mask), fresh.Forward(b.input_ids, b.attention_mask)));
}

TEST(TrainingFeaturesTest, BadExamplesAreRejectedAndTrainingGoesOnWithTheRest) {
  testing::TempDir dir;
  auto policy = std::make_unique<CausalLMPolicy>(TinyPolicy("llama", 14));
  CausalLMPolicy* raw = policy.get();
  auto before = raw->Parameters()[0].clone();
  LearnerConfig c;
  c.model = "unused";
  c.batch_groups = 2;
  c.learning_rate = 1e-3;
  c.warmup_ratio = 0;
  c.max_length = 16;
  c.max_prompt_length = 8;
  auto core = LearnerCore::Create(c, std::move(policy), nullptr);
  ASSERT_TRUE(core.ok());
  ASSERT_TRUE((*core)->StartIteration(0, 2).ok());
  auto good = Groups();
  std::vector<LearnerExample> batch = good;
  LearnerExample k1 = good[0];
  k1.prompt_id = "k1";
  k1.responses.resize(1);
  k1.win_rates.resize(1);
  k1.mean_scores.resize(1);
  LearnerExample lengths = good[0];
  lengths.prompt_id = "lengths";
  lengths.win_rates.pop_back();
  LearnerExample nan = good[0];
  nan.prompt_id = "nan";
  nan.win_rates[1] = std::nan("");
  LearnerExample vocab = good[0];
  vocab.prompt_id = "vocab";
  vocab.responses[2][1] = 128256;  // == vocab_size of the tiny Llama
  LearnerExample ref = good[0];
  ref.prompt_id = "ref";
  ref.ref_logprobs = {{-1, -1, -1}, {-1}, {-1, -1, -1, -1}};
  for (auto* e : {&k1, &lengths, &nan, &vocab, &ref}) batch.insert(batch.begin() + 1, *e);
  auto outcome = (*core)->Submit(batch);
  EXPECT_EQ(outcome.accepted, 2u);
  std::map<std::string, std::string> why(outcome.rejected.begin(), outcome.rejected.end());
  ASSERT_EQ(why.size(), 5u);
  EXPECT_NE(why["k1"].find("K >= 2"), std::string::npos) << why["k1"];
  EXPECT_NE(why["lengths"].find("2 win_rates for 3 responses"), std::string::npos) << why["lengths"];
  EXPECT_NE(why["nan"].find("win_rates"), std::string::npos) << why["nan"];
  EXPECT_NE(why["vocab"].find("= 128256"), std::string::npos) << why["vocab"];
  EXPECT_NE(why["ref"].find("ref_logprobs"), std::string::npos) << why["ref"];
  auto finished = (*core)->FinishIteration(0, {}, "");
  ASSERT_TRUE(finished.ok()) << finished.status().ToString();
  EXPECT_EQ(finished->progress.examples_seen, 2u);
  EXPECT_EQ(finished->progress.step, 1);
  EXPECT_FALSE(torch::equal(before, raw->Parameters()[0]));
}

}  // namespace
}  // namespace spar
