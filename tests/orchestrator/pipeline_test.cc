// The iteration pipeline's coordination logic, on the real run store, real
// ZeroMQ mailboxes and the real rule scorer over loopback gRPC. Generator
// and learner are in-process stand-ins here (their services have their own
// tests); the end-to-end tests run the real ones.
#include "orchestrator/pipeline.h"

#include <atomic>
#include <functional>
#include <mutex>
#include <set>

#include <gtest/gtest.h>

#include "metrics/telemetry.h"
#include "services/common/server.h"
#include "services/scorer/scorer_config.h"
#include "services/scorer/scorer_service.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

class StandInGenerator : public GeneratorClient {
 public:
  explicit StandInGenerator(std::string name) : name_(std::move(name)), address_(name_ + ":0") {}
  const std::string& name() const override { return name_; }
  const std::string& address() const override { return address_; }
  std::atomic<int> calls{0};
  std::atomic<int> fail_after{-1};  // >= 0: Unavailable from this call on
  uint64_t version = 0;
  Result<RolloutGroup> Generate(const PromptRecord& p, const GenerationConfig& c, uint64_t seed,
                                std::chrono::milliseconds) override {
    int n = calls++;
    if (fail_after >= 0 && n >= fail_after) return Unavailable(name_ + " is gone");
    RolloutGroup g;
    g.iteration = p.iteration;
    g.prompt_index = p.prompt_index;
    g.prompt_id = p.prompt_id;
    g.prompt_token_ids = {1, 2, 3};
    for (uint32_t s = 0; s < c.samples_per_prompt; ++s) {
      RolloutRecord r;
      r.sample_index = s;
      // Deterministic in the seed: lengths 1..K words.
      for (uint32_t w = 0; w <= (seed + s) % c.samples_per_prompt; ++w) r.text += "word ";
      r.token_ids = {static_cast<int32_t>(s + 10)};
      r.logprobs = {-1.0f};
      r.policy_version = version;
      r.generator_id = name_;
      g.rollouts.push_back(r);
    }
    return g;
  }
  std::atomic<bool> state_down{false};  // State() answers Unavailable
  Result<GeneratorState> State(std::chrono::milliseconds) override {
    if (state_down) return Unavailable(name_ + " is gone");
    GeneratorState s;
    s.policy_version = version;
    return s;
  }

 private:
  std::string name_, address_;
};

class StandInLearner : public LearnerClient {
 public:
  explicit StandInLearner(std::vector<StandInGenerator*> gens) : gens_(std::move(gens)) {}
  const std::string& address() const override { return address_; }
  std::mutex mutex;
  std::multiset<std::string> submitted;
  int starts = 0;
  int transient_failures = 0;  // Submit fails this many times first
  std::function<void()> on_submit;  // called inside every Submit
  Result<LearnerProgressInfo> StartIteration(uint32_t, uint64_t, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mutex);
    ++starts;
    submitted.clear();  // a restarted iteration starts over from pi_t
    return LearnerProgressInfo();
  }
  Result<uint64_t> Submit(const std::vector<const RolloutGroup*>& groups,
                          const std::vector<const ScoreRecord*>& scores, std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> lock(mutex);
    if (on_submit) on_submit();
    if (transient_failures > 0) {
      --transient_failures;
      return Unavailable("learner restarting");
    }
    for (size_t i = 0; i < groups.size(); ++i) {
      EXPECT_EQ(groups[i]->prompt_id, scores[i]->prompt_id);
      submitted.insert(groups[i]->prompt_id);
    }
    return static_cast<uint64_t>(groups.size());
  }
  Result<FinishInfo> FinishIteration(uint32_t iteration, const std::vector<std::string>& chain,
                                     const std::string& dir, std::chrono::milliseconds) override {
    for (auto* g : gens_)
      if (std::find(chain.begin(), chain.end(), g->address()) != chain.end()) g->version = iteration + 1;
    FinishInfo f;
    f.policy_version = iteration + 1;
    f.checkpoint_dir = dir;
    return f;
  }

 private:
  std::vector<StandInGenerator*> gens_;
  std::string address_ = "learner:0";
};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ScorerConfig sc;
    sc.kind = "rule";
    sc.rule.target_words = 3;
    auto model = CreatePreferenceModel(sc);
    ASSERT_TRUE(model.ok());
    auto core = ScorerCore::Create(std::move(*model));
    core_ = std::move(*core);
    service_ = std::make_unique<ScorerService>(core_.get());
    auto server = StartGrpcServer({}, {service_.get()});
    ASSERT_TRUE(server.ok());
    server_ = std::move(server->server);
    scorer_ = MakeGrpcScorerClient(server->address);
    auto store = RunStore::Open(dir_.str());
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    for (int i = 0; i < 12; ++i) {
      PromptRecord p;
      p.iteration = 0;
      p.prompt_index = static_cast<uint64_t>(i);
      p.prompt_id = "p" + std::to_string(i);
      p.text = "Prompt " + std::to_string(i);
      shard_.push_back(p);
    }
    options_.generation.samples_per_prompt = 4;
    options_.inflight_per_generator = 2;
    options_.max_backoff = std::chrono::milliseconds(50);
  }
  void TearDown() override { server_->Shutdown(std::chrono::system_clock::now()); }

  size_t Count(bool scores) {
    size_t n = 0;
    if (scores) store_->ForEachScore(0, [&](const ScoreRecord&) { return ++n, true; }).IgnoreError();
    else store_->ForEachGroup(0, [&](const RolloutGroup&) { return ++n, true; }).IgnoreError();
    return n;
  }

  testing::TempDir dir_;
  std::unique_ptr<ScorerCore> core_;
  std::unique_ptr<ScorerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ScorerClient> scorer_;
  std::unique_ptr<RunStore> store_;
  std::vector<PromptRecord> shard_;
  PipelineOptions options_;
};

TEST_F(PipelineTest, PipelinedIterationStoresScoresAndTrainsEveryPromptOnce) {
  StandInGenerator a("gen-a"), b("gen-b");
  StandInLearner learner({&a, &b});
  IterationPipeline p(store_.get(), {&a, &b}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->generated_groups, 12u);
  EXPECT_EQ(stats->rollouts, 48u);
  EXPECT_EQ(stats->trained_examples, 12u);
  EXPECT_EQ(stats->policy_version, 1u);
  EXPECT_EQ(Count(false), 12u);
  EXPECT_EQ(Count(true), 12u);
  EXPECT_EQ(learner.submitted.size(), 12u);
  EXPECT_EQ(std::set<std::string>(learner.submitted.begin(), learner.submitted.end()).size(), 12u);
  // Both generators got work.
  EXPECT_GT(a.calls.load(), 0);
  EXPECT_GT(b.calls.load(), 0);
  EXPECT_EQ(a.version, 1u);
  EXPECT_EQ(b.version, 1u);
}

TEST_F(PipelineTest, ResumeRedoesNothingStoredAndDuplicatesNothing) {
  // A first run stored groups for 5 prompts and scores for 3, then died.
  StandInGenerator first("gen-a");
  for (int i = 0; i < 5; ++i) {
    auto g = first.Generate(shard_[static_cast<size_t>(i)], options_.generation,
                            PromptSeed(options_.seed, 0, static_cast<uint64_t>(i)), {});
    ASSERT_TRUE(store_->PutGroup(*g).ok());
  }
  for (int i = 0; i < 3; ++i) {
    RolloutGroup g = **store_->GetGroup(0, static_cast<uint64_t>(i));
    auto s = scorer_->Score({&shard_[static_cast<size_t>(i)]}, {&g}, std::chrono::seconds(10));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(store_->PutScore((*s)[0]).ok());
  }
  StandInGenerator a("gen-a");
  StandInLearner learner({&a});
  IterationPipeline p(store_.get(), {&a}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(a.calls.load(), 7);  // only the 7 prompts without a group
  EXPECT_EQ(stats->reused_groups, 5u);
  EXPECT_EQ(stats->scored_groups, 9u);  // 2 stored-but-unscored + 7 new
  EXPECT_EQ(Count(false), 12u);
  EXPECT_EQ(Count(true), 12u);
  EXPECT_EQ(learner.submitted.size(), 12u);  // all 12, each once
}

TEST_F(PipelineTest, DeadGeneratorsWorkGoesToTheOthers) {
  StandInGenerator a("gen-a"), dying("gen-dying");
  dying.fail_after = 1;
  StandInLearner learner({&a, &dying});
  IterationPipeline p(store_.get(), {&a, &dying}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(Count(false), 12u);
  EXPECT_EQ(stats->trained_examples, 12u);
  ASSERT_EQ(stats->lost_generators.size(), 1u);
  EXPECT_EQ(stats->lost_generators[0], "gen-dying");
  EXPECT_EQ(a.version, 1u);
  EXPECT_EQ(dying.version, 0u);  // not in the publish chain
}

TEST_F(PipelineTest, AllGeneratorsDownIsAClearError) {
  StandInGenerator a("gen-a");
  a.fail_after = 0;
  StandInLearner learner({&a});
  IterationPipeline p(store_.get(), {&a}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("every generator is down"), std::string::npos)
      << stats.status().ToString();
}

TEST_F(PipelineTest, LearnerOutagesAreRetriedAndStagedModeGivesTheSameStore) {
  StandInGenerator a("gen-a");
  StandInLearner learner({&a});
  learner.transient_failures = 2;
  options_.pipelined = false;
  IterationPipeline p(store_.get(), {&a}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(learner.submitted.size(), 12u);
  EXPECT_EQ(Count(true), 12u);
}

}  // namespace
}  // namespace spar

namespace spar {
namespace {

TEST_F(PipelineTest, StageCountsWaitsAndIdleTimeGoToTheRegistry) {
  namespace mn = metric_names;
  MetricsRegistry registry;
  options_.metrics = &registry;
  auto stage = [&](const char* name) {
    return registry.GetGauge(mn::kOrchestratorPrompts, "", {{"stage", name}})->value();
  };
  StandInGenerator a("gen-a"), b("gen-b");
  StandInLearner learner({&a, &b});
  // Seen from inside the learner: the batch being submitted counts as
  // "training" already.
  std::vector<double> seen;
  learner.on_submit = [&] { seen.push_back(stage("training")); };
  IterationPipeline p(store_.get(), {&a, &b}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  ASSERT_FALSE(seen.empty());
  for (double training : seen) EXPECT_GE(training, 1);
  EXPECT_EQ(stage("done"), 12);
  for (const char* st : {"pending", "generating", "scoring", "training"}) EXPECT_EQ(stage(st), 0) << st;
  EXPECT_EQ(registry.GetCounter(mn::kOrchestratorPromptsTotal, "")->value(), 12);
  EXPECT_EQ(registry.GetCounter(mn::kOrchestratorRolloutsTotal, "")->value(), 48);
  EXPECT_EQ(registry.GetCounter(mn::kOrchestratorRolloutTokensTotal, "")->value(), 48);  // one token each
  // Every prompt waited once in front of each stage.
  for (const char* st : {"generation", "scoring", "training"}) {
    Histogram* wait = registry.GetHistogram(mn::kOrchestratorStageWaitSeconds, "", LatencyBuckets(), {{"stage", st}});
    EXPECT_EQ(wait->count(), 12u) << st;
    EXPECT_GE(wait->sum(), 0) << st;
  }
  // Scoring waited on generation at least until the first group arrived.
  EXPECT_GT(registry.GetCounter(mn::kOrchestratorStageIdleSecondsTotal, "", {{"stage", "scoring"}})->value(), 0);
  EXPECT_GT(registry.GetCounter(mn::kOrchestratorStageIdleSecondsTotal, "", {{"stage", "training"}})->value(), 0);
  EXPECT_TRUE(ValidatePrometheusText(registry.PrometheusText()).ok());
}

TEST_F(PipelineTest, ResumedGroupsStartInTheirStage) {
  namespace mn = metric_names;
  // Stored: groups for prompts 0-3, scores for 0-1; only the rest waits in
  // front of generation and scoring.
  StandInGenerator first("gen-a");
  for (int i = 0; i < 4; ++i) {
    auto g = first.Generate(shard_[static_cast<size_t>(i)], options_.generation, 1, std::chrono::seconds(1));
    ASSERT_TRUE(store_->PutGroup(*g).ok());
  }
  for (int i = 0; i < 2; ++i) {
    RolloutGroup g = **store_->GetGroup(0, static_cast<uint64_t>(i));
    auto s = scorer_->Score({&shard_[static_cast<size_t>(i)]}, {&g}, std::chrono::seconds(10));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(store_->PutScore((*s)[0]).ok());
  }
  MetricsRegistry registry;
  options_.metrics = &registry;
  options_.pipelined = false;  // staged: nothing moves before generation ends
  StandInGenerator gen("gen-b");
  StandInLearner learner({&gen});
  IterationPipeline p(store_.get(), {&gen}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->reused_groups, 4u);
  EXPECT_EQ(registry.GetGauge(mn::kOrchestratorPrompts, "", {{"stage", "done"}})->value(), 12);
  Histogram* gen_wait = registry.GetHistogram(mn::kOrchestratorStageWaitSeconds, "", LatencyBuckets(),
                                              {{"stage", "generation"}});
  EXPECT_EQ(gen_wait->count(), 8u);  // only the prompts generated now
  auto wait_count = [&](const char* st) {
    return registry.GetHistogram(mn::kOrchestratorStageWaitSeconds, "", LatencyBuckets(), {{"stage", st}})->count();
  };
  EXPECT_EQ(wait_count("scoring"), 10u);   // 2 stored unscored + 8 new
  EXPECT_EQ(wait_count("training"), 12u);  // every group is resubmitted
}

}  // namespace
}  // namespace spar

namespace spar {
namespace {

TEST_F(PipelineTest, AGeneratorThatDiedAfterItsLastPromptGetsNoWeights) {
  StandInGenerator a("gen-a"), b("gen-b");
  StandInLearner learner({&a, &b});
  // b served its prompts, then died before the publication.
  learner.on_submit = [&] { b.state_down = true; };
  IterationPipeline p(store_.get(), {&a, &b}, scorer_.get(), &learner, options_);
  auto stats = p.Run(0, shard_);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GT(b.calls.load(), 0);
  EXPECT_EQ(stats->lost_generators, std::vector<std::string>{"gen-b"});
  EXPECT_EQ(a.version, 1u);
  EXPECT_EQ(b.version, 0u);  // not in the chain
}

}  // namespace
}  // namespace spar
