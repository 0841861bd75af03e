#include "orchestrator/pipeline.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bus/mailbox.h"
#include "common/logging.h"
#include "metrics/telemetry.h"

namespace spar {

uint64_t PromptSeed(uint64_t run_seed, uint32_t iteration, uint64_t index) {
  // splitmix64 over the three inputs.
  uint64_t x = run_seed * 0x9E3779B97F4A7C15ull ^ (uint64_t{iteration} << 40) ^ index;
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string U64(uint64_t v) { return std::to_string(v); }

// Bodies of index lists: "3,7,9".
std::string JoinIndices(const std::vector<uint64_t>& v) {
  std::string out;
  for (uint64_t i : v) out += (out.empty() ? "" : ",") + std::to_string(i);
  return out;
}
std::vector<uint64_t> SplitIndices(const std::string& s) {
  std::vector<uint64_t> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    out.push_back(std::stoull(s.substr(start, end - start)));
    start = end + 1;
  }
  return out;
}

// Retries `fn` with exponential back-off while it fails with a transient
// code; names the service in the log.
template <typename Fn>
auto WithRetries(const std::string& who, const PipelineOptions& o, const std::atomic<bool>& stop,
                 Fn fn) -> decltype(fn()) {
  auto backoff = std::chrono::milliseconds(200);
  for (int attempt = 1;; ++attempt) {
    auto result = fn();
    if (result.ok()) return result;
    const StatusCode code = result.status().code();
    const bool transient = code == StatusCode::kUnavailable || code == StatusCode::kDeadlineExceeded ||
                           code == StatusCode::kResourceExhausted || code == StatusCode::kAborted;
    if (!transient || attempt >= o.max_service_attempts || stop.load()) return result;
    Logger("orchestrator")->warn("{} failed (attempt {}), retrying in {} ms: {}", who, attempt,
                                 backoff.count(), result.status().ToString());
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(o.max_backoff));
  }
}

// Drains further messages of the same kind already waiting, up to `max`.
std::vector<uint64_t> TakeBatch(Mailbox& box, const v1::ActorMessage& first, size_t max,
                                bool* stop_seen) {
  std::vector<uint64_t> batch = SplitIndices(first.body());
  while (batch.size() < max) {
    auto next = box.Receive(std::chrono::milliseconds(0));
    if (!next) break;
    if (next->kind() == "stop") {
      *stop_seen = true;
      break;
    }
    for (uint64_t i : SplitIndices(next->body())) batch.push_back(i);
  }
  return batch;
}

// The pipeline's live figures (metric_names::kOrchestrator*). Every
// series is a detached dummy when the options carry no registry, so the
// code below never checks.
struct PipelineMetrics {
  explicit PipelineMetrics(MetricsRegistry* registry) {
    MetricsRegistry* r = registry ? registry : &own;
    namespace mn = metric_names;
    for (const char* stage : mn::kOrchestratorStages)
      prompts[stage] = r->GetGauge(mn::kOrchestratorPrompts, "Prompts of the current iteration by stage",
                                   {{"stage", stage}});
    prompts_total = r->GetCounter(mn::kOrchestratorPromptsTotal, "Prompts that finished every stage");
    rollouts_total = r->GetCounter(mn::kOrchestratorRolloutsTotal, "Rollouts received from the generators");
    tokens_total = r->GetCounter(mn::kOrchestratorRolloutTokensTotal, "Response tokens received");
    for (const char* stage : {"generation", "scoring", "training"}) {
      wait[stage] = r->GetHistogram(mn::kOrchestratorStageWaitSeconds,
                                    "Seconds a prompt waited in front of a stage", LatencyBuckets(),
                                    {{"stage", stage}});
      busy[stage] = r->GetCounter(mn::kOrchestratorStageBusySecondsTotal,
                                  "Seconds spent in the stage's service calls", {{"stage", stage}});
    }
    for (const char* stage : {"scoring", "training"})
      idle[stage] = r->GetCounter(mn::kOrchestratorStageIdleSecondsTotal,
                                  "Seconds the stage waited on the stage before it", {{"stage", stage}});
    publish_seconds = r->GetGauge(mn::kWeightPublishSeconds, "Seconds of the last weight publication");
    publish_bytes = r->GetGauge(mn::kWeightPublishBytes, "Bytes of the last weight publication");
    publish_gbps = r->GetGauge(mn::kWeightPublishGigabytesPerSecond, "GB/s of the last weight publication");
  }
  void SetStages(double pending, double generating, double scoring, double training, double done) {
    prompts["pending"]->Set(pending);
    prompts["generating"]->Set(generating);
    prompts["scoring"]->Set(scoring);
    prompts["training"]->Set(training);
    prompts["done"]->Set(done);
  }

  MetricsRegistry own;
  std::map<std::string, Gauge*> prompts;
  std::map<std::string, Histogram*> wait;
  std::map<std::string, Counter*> busy, idle;
  Counter* prompts_total;
  Counter* rollouts_total;
  Counter* tokens_total;
  Gauge* publish_seconds;
  Gauge* publish_bytes;
  Gauge* publish_gbps;
};

// When each prompt became ready for a stage, for the wait histograms.
class ReadySince {
 public:
  void Mark(const std::vector<uint64_t>& indices) {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    for (uint64_t i : indices) since_[i] = now;
  }
  // Observes the wait of each index that was marked, and forgets it.
  void Take(const std::vector<uint64_t>& indices, Histogram* wait) {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    for (uint64_t i : indices) {
      auto it = since_.find(i);
      if (it == since_.end()) continue;
      wait->Observe(std::chrono::duration<double>(now - it->second).count());
      since_.erase(it);
    }
  }

 private:
  std::mutex mutex_;
  std::map<uint64_t, Clock::time_point> since_;
};

}  // namespace

IterationPipeline::IterationPipeline(RunStore* store, std::vector<GeneratorClient*> generators,
                                     ScorerClient* scorer, LearnerClient* learner,
                                     PipelineOptions options)
    : store_(store), generators_(std::move(generators)), scorer_(scorer), learner_(learner),
      options_(std::move(options)) {}

Result<IterationStats> IterationPipeline::Run(uint32_t iteration,
                                              const std::vector<PromptRecord>& shard) {
  auto log = Logger("orchestrator");
  const auto start = Clock::now();
  IterationStats stats;
  stats.iteration = iteration;
  stats.prompts = shard.size();
  if (shard.empty()) return InvalidArgument("iteration " + std::to_string(iteration) + " has no prompts");
  if (generators_.empty()) return InvalidArgument("no generators configured");
  SPAR_RETURN_IF_ERROR(store_->PutPrompts(shard));
  std::map<uint64_t, const PromptRecord*> by_index;
  for (const auto& p : shard) by_index[p.prompt_index] = &p;

  // What the store already has.
  std::vector<uint64_t> to_generate, to_score, to_train;
  for (const auto& p : shard) {
    SPAR_ASSIGN_OR_RETURN(bool has_group, store_->HasGroup(iteration, p.prompt_index));
    if (!has_group) {
      to_generate.push_back(p.prompt_index);
      continue;
    }
    ++stats.reused_groups;
    SPAR_ASSIGN_OR_RETURN(auto score, store_->GetScore(iteration, p.prompt_index));
    (score ? to_train : to_score).push_back(p.prompt_index);
  }
  if (stats.reused_groups)
    log->info("iteration {}: resuming — {} groups stored ({} scored), {} prompts to generate", iteration,
              stats.reused_groups, to_train.size(), to_generate.size());

  PipelineMetrics metrics(options_.metrics);
  metrics.SetStages(static_cast<double>(to_generate.size()), 0, static_cast<double>(to_score.size()),
                    static_cast<double>(to_train.size()), 0);
  ReadySince ready_to_generate, ready_to_score, ready_to_train;
  ready_to_generate.Mark(to_generate);
  ready_to_score.Mark(to_score);
  ready_to_train.Mark(to_train);

  std::atomic<bool> stop{false};
  std::vector<std::string> generator_addresses;  // for the learner's intermediate publications, if any
  for (const auto& g : generators_) generator_addresses.push_back(g->address());
  auto started = WithRetries("learner StartIteration", options_, stop, [&] {
    return learner_->StartIteration(iteration, shard.size(), generator_addresses, std::chrono::minutes(10));
  });
  if (!started.ok()) return started.status().WithContext("iteration " + std::to_string(iteration));

  // Mailboxes. Names carry the iteration so a resumed run never collides.
  const std::string tag = std::to_string(iteration) + "-" + std::to_string(::getpid());
  SPAR_ASSIGN_OR_RETURN(auto coord_box, Mailbox::Create("coordinator-" + tag));
  SPAR_ASSIGN_OR_RETURN(auto scorer_box, Mailbox::Create("scorer-" + tag));
  SPAR_ASSIGN_OR_RETURN(auto learner_box, Mailbox::Create("learner-" + tag));
  SPAR_ASSIGN_OR_RETURN(auto to_coord, MailboxAddress::Connect("coordinator-" + tag));
  SPAR_ASSIGN_OR_RETURN(auto to_scorer, MailboxAddress::Connect("scorer-" + tag));
  SPAR_ASSIGN_OR_RETURN(auto to_learner, MailboxAddress::Connect("learner-" + tag));
  std::vector<std::unique_ptr<Mailbox>> gen_boxes;
  std::vector<std::unique_ptr<MailboxAddress>> to_gen;
  for (size_t g = 0; g < generators_.size(); ++g) {
    SPAR_ASSIGN_OR_RETURN(auto box, Mailbox::Create("generator-" + std::to_string(g) + "-" + tag));
    SPAR_ASSIGN_OR_RETURN(auto addr, MailboxAddress::Connect(box->name()));
    gen_boxes.push_back(std::move(box));
    to_gen.push_back(std::move(addr));
  }

  std::mutex stats_mutex;
  std::vector<std::thread> threads;

  // ---- generator actors: a mailbox thread feeding a few worker threads ----
  for (size_t g = 0; g < generators_.size(); ++g) {
    threads.emplace_back([&, g] {
      GeneratorClient* client = generators_[g];
      std::mutex q_mutex;
      std::condition_variable q_cv;
      std::deque<uint64_t> queue;
      bool closing = false;
      std::vector<std::thread> workers;
      for (int w = 0; w < options_.inflight_per_generator; ++w) {
        workers.emplace_back([&] {
          for (;;) {
            uint64_t index;
            {
              std::unique_lock<std::mutex> lock(q_mutex);
              q_cv.wait(lock, [&] { return closing || !queue.empty(); });
              if (queue.empty()) return;
              index = queue.front();
              queue.pop_front();
            }
            ready_to_generate.Take({index}, metrics.wait["generation"]);
            const PromptRecord& prompt = *by_index.at(index);
            const auto t0 = Clock::now();
            auto group = client->Generate(prompt, options_.generation,
                                          PromptSeed(options_.seed, iteration, index),
                                          options_.generate_timeout);
            metrics.busy["generation"]->Increment(Since(t0));
            Status s = group.ok() ? store_->PutGroup(*group) : group.status();
            if (s.ok()) {
              uint64_t tokens = 0;
              for (const auto& r : group->rollouts) tokens += r.token_ids.size();
              metrics.rollouts_total->Increment(static_cast<double>(group->rollouts.size()));
              metrics.tokens_total->Increment(static_cast<double>(tokens));
              {
                std::lock_guard<std::mutex> lock(stats_mutex);
                stats.rollouts += group->rollouts.size();
                stats.rollout_tokens += tokens;
                ++stats.generated_groups;
              }
              to_coord->Post("generated", JoinIndices({g, index})).IgnoreError();
            } else {
              nlohmann::json body = {{"index", index}, {"generator", g}, {"code", static_cast<int>(s.code())},
                                     {"error", s.ToString()}};
              to_coord->Post("generate_failed", body.dump()).IgnoreError();
            }
          }
        });
      }
      for (;;) {
        auto m = gen_boxes[g]->Receive(std::chrono::milliseconds(200));
        if (!m) continue;
        if (m->kind() == "stop") break;
        if (m->kind() == "generate") {
          std::lock_guard<std::mutex> lock(q_mutex);
          for (uint64_t i : SplitIndices(m->body())) queue.push_back(i);
          q_cv.notify_all();
        }
      }
      {
        std::lock_guard<std::mutex> lock(q_mutex);
        closing = true;
        queue.clear();
      }
      q_cv.notify_all();
      for (auto& w : workers) w.join();
    });
  }

  // ---- scorer actor ----
  threads.emplace_back([&] {
    auto idle_since = Clock::now();
    for (bool stop_seen = false; !stop_seen;) {
      auto m = scorer_box->Receive(std::chrono::milliseconds(200));
      metrics.idle["scoring"]->Increment(Since(idle_since));
      idle_since = Clock::now();
      if (!m) continue;
      if (m->kind() == "stop") break;
      std::vector<uint64_t> batch = TakeBatch(*scorer_box, *m, options_.score_batch_groups, &stop_seen);
      ready_to_score.Take(batch, metrics.wait["scoring"]);
      std::vector<RolloutGroup> groups;
      Status failed;
      for (uint64_t i : batch) {
        auto g = store_->GetGroup(iteration, i);
        if (!g.ok() || !g->has_value()) {
          failed = g.ok() ? DataLoss("group " + U64(i) + " vanished from the store") : g.status();
          break;
        }
        groups.push_back(std::move(**g));
      }
      if (failed.ok()) {
        std::vector<const PromptRecord*> prompts;
        std::vector<const RolloutGroup*> group_ptrs;
        for (size_t i = 0; i < groups.size(); ++i) {
          prompts.push_back(by_index.at(batch[i]));
          group_ptrs.push_back(&groups[i]);
        }
        auto t0 = Clock::now();
        auto scores = WithRetries("scorer at " + scorer_->address(), options_, stop, [&] {
          return scorer_->Score(prompts, group_ptrs, options_.score_timeout);
        });
        metrics.busy["scoring"]->Increment(Since(t0));
        {
          std::lock_guard<std::mutex> lock(stats_mutex);
          stats.scoring_busy_seconds += Since(t0);
        }
        if (scores.ok()) {
          for (const auto& s : *scores) {
            failed = store_->PutScore(s);
            if (!failed.ok()) break;
          }
        } else {
          failed = scores.status();
        }
      }
      if (failed.ok()) to_coord->Post("scored", JoinIndices(batch)).IgnoreError();
      else to_coord->Post("fatal", failed.WithContext("scoring").ToString()).IgnoreError();
      idle_since = Clock::now();
    }
  });

  // ---- learner actor ----
  threads.emplace_back([&] {
    auto idle_since = Clock::now();
    for (bool stop_seen = false; !stop_seen;) {
      auto m = learner_box->Receive(std::chrono::milliseconds(200));
      metrics.idle["training"]->Increment(Since(idle_since));
      idle_since = Clock::now();
      if (!m) continue;
      if (m->kind() == "stop") break;
      std::vector<uint64_t> batch = TakeBatch(*learner_box, *m, options_.train_batch_groups, &stop_seen);
      ready_to_train.Take(batch, metrics.wait["training"]);
      std::vector<RolloutGroup> groups;
      std::vector<ScoreRecord> scores;
      Status failed;
      for (uint64_t i : batch) {
        auto g = store_->GetGroup(iteration, i);
        auto s = store_->GetScore(iteration, i);
        if (!g.ok() || !s.ok() || !g->has_value() || !s->has_value()) {
          failed = !g.ok() ? g.status() : !s.ok() ? s.status() : DataLoss("group or score " + U64(i) + " missing");
          break;
        }
        groups.push_back(std::move(**g));
        scores.push_back(std::move(**s));
      }
      if (failed.ok()) {
        std::vector<const RolloutGroup*> gp;
        std::vector<const ScoreRecord*> sp;
        for (size_t i = 0; i < groups.size(); ++i) {
          gp.push_back(&groups[i]);
          sp.push_back(&scores[i]);
        }
        auto t0 = Clock::now();
        auto accepted = WithRetries("learner at " + learner_->address(), options_, stop,
                                    [&] { return learner_->Submit(gp, sp, options_.learner_timeout); });
        metrics.busy["training"]->Increment(Since(t0));
        {
          std::lock_guard<std::mutex> lock(stats_mutex);
          stats.training_busy_seconds += Since(t0);
          for (const auto& s : scores) {
            double best = 0;
            for (double w : s.win_rates) best = std::max(best, w);
            stats.mean_chosen_win_rate += best;
          }
        }
        if (!accepted.ok()) failed = accepted.status();
      }
      if (failed.ok()) to_coord->Post("trained", JoinIndices(batch)).IgnoreError();
      else to_coord->Post("fatal", failed.WithContext("training").ToString()).IgnoreError();
      idle_since = Clock::now();
    }
  });

  // ---- coordinator (this thread) ----
  std::deque<uint64_t> pending(to_generate.begin(), to_generate.end());
  std::vector<int> outstanding(generators_.size(), 0);
  std::vector<bool> alive(generators_.size(), true);
  std::map<uint64_t, int> attempts;
  std::vector<uint64_t> generated_waiting, scored_waiting;  // staged mode
  size_t generated = stats.reused_groups, scored = to_train.size(), trained = 0;
  Status fatal;
  const auto gen_start = Clock::now();
  auto dispatch = [&] {
    while (!pending.empty()) {
      int best = -1;
      for (size_t g = 0; g < generators_.size(); ++g) {
        if (!alive[g] || outstanding[g] >= options_.inflight_per_generator) continue;
        if (best < 0 || outstanding[g] < outstanding[static_cast<size_t>(best)]) best = static_cast<int>(g);
      }
      if (best < 0) return;
      uint64_t i = pending.front();
      pending.pop_front();
      ++outstanding[static_cast<size_t>(best)];
      to_gen[static_cast<size_t>(best)]->Post("generate", U64(i)).IgnoreError();
    }
  };
  // Staged mode holds everything until the stage before is complete.
  if (options_.pipelined || to_generate.empty()) {
    for (uint64_t i : to_score) to_scorer->Post("score", U64(i)).IgnoreError();
  } else {
    generated_waiting = to_score;
  }
  if (options_.pipelined || (to_generate.empty() && to_score.empty())) {
    for (uint64_t i : to_train) to_learner->Post("train", U64(i)).IgnoreError();
  } else {
    scored_waiting = to_train;
  }
  auto publish_stages = [&] {
    size_t generating = 0;
    for (int n : outstanding) generating += static_cast<size_t>(std::max(n, 0));
    metrics.SetStages(static_cast<double>(pending.size()), static_cast<double>(generating),
                      static_cast<double>(generated - scored), static_cast<double>(scored - trained),
                      static_cast<double>(trained));
  };
  dispatch();
  publish_stages();
  while (fatal.ok() && trained < shard.size()) {
    auto m = coord_box->Receive(std::chrono::milliseconds(500));
    if (!m) continue;
    struct PublishOnExit {
      std::function<void()> fn;
      ~PublishOnExit() { fn(); }
    } publish_on_exit{publish_stages};
    const std::string& kind = m->kind();
    if (kind == "generate_failed") {
      auto body = nlohmann::json::parse(m->body());
      uint64_t i = body["index"].get<uint64_t>();
      size_t g = body["generator"].get<size_t>();
      --outstanding[g];
      const auto code = static_cast<StatusCode>(body["code"].get<int>());
      log->warn("generator {} ({}) failed on prompt {}: {}", generators_[g]->name(),
                generators_[g]->address(), i, body["error"].get<std::string>());
      if (code == StatusCode::kUnavailable && alive[g]) {
        alive[g] = false;
        stats.lost_generators.push_back(generators_[g]->name());
        log->error("generator {} at {} is down; its prompts go to the others", generators_[g]->name(),
                   generators_[g]->address());
      }
      if (++attempts[i] >= options_.max_generate_attempts) {
        fatal = Unavailable("prompt " + U64(i) + " failed on " + std::to_string(attempts[i]) +
                            " attempts; last error: " + body["error"].get<std::string>());
        break;
      }
      pending.push_front(i);
      ready_to_generate.Mark({i});
      if (std::none_of(alive.begin(), alive.end(), [](bool a) { return a; })) {
        fatal = Unavailable("every generator is down");
        break;
      }
      dispatch();
    } else if (kind == "generated") {
      auto parts = SplitIndices(m->body());  // generator, index
      --outstanding[parts[0]];
      ++generated;
      dispatch();
      publish_stages();
      ready_to_score.Mark({parts[1]});
      if (options_.pipelined) {
        to_scorer->Post("score", U64(parts[1])).IgnoreError();
      } else {
        generated_waiting.push_back(parts[1]);
      }
      if (generated == shard.size()) {
        stats.generation_seconds = Since(gen_start);
        if (!generated_waiting.empty()) to_scorer->Post("score", JoinIndices(generated_waiting)).IgnoreError();
        generated_waiting.clear();
      }
    } else if (kind == "scored") {
      auto batch = SplitIndices(m->body());
      scored += batch.size();
      stats.scored_groups += batch.size();
      ready_to_train.Mark(batch);
      publish_stages();  // before the learner hears of the batch, so it counts as training there
      if (options_.pipelined) {
        to_learner->Post("train", m->body()).IgnoreError();
      } else {
        scored_waiting.insert(scored_waiting.end(), batch.begin(), batch.end());
        if (scored == shard.size()) {
          to_learner->Post("train", JoinIndices(scored_waiting)).IgnoreError();
          scored_waiting.clear();
        }
      }
    } else if (kind == "trained") {
      const size_t n = SplitIndices(m->body()).size();
      trained += n;
      metrics.prompts_total->Increment(static_cast<double>(n));
    } else if (kind == "fatal") {
      fatal = Unavailable(m->body());
    }
  }
  stop = true;
  for (auto& g : to_gen) g->Post("stop").IgnoreError();
  to_scorer->Post("stop").IgnoreError();
  to_learner->Post("stop").IgnoreError();
  for (auto& t : threads) t.join();
  if (!fatal.ok()) return fatal.WithContext("iteration " + std::to_string(iteration));
  stats.trained_examples = trained;
  if (trained) stats.mean_chosen_win_rate /= static_cast<double>(trained);
  if (stats.generation_seconds == 0 && stats.generated_groups) stats.generation_seconds = Since(gen_start);

  // End of the shard: the learner trains what is left, checkpoints and
  // publishes version t+1 down the chain of live generators.
  // A generator that died after its last prompt has not failed a request
  // yet: ask each one before putting it in the chain, or the publication
  // would stop at it.
  // Probed again before every attempt: one that dies during a publication
  // fails it, and the retry must leave it out.
  auto live_chain = [&]() {
    std::vector<std::string> chain;
    for (size_t g = 0; g < generators_.size(); ++g) {
      if (!alive[g]) continue;
      auto state = generators_[g]->State(std::chrono::seconds(10));
      if (!state.ok() && state.status().code() == StatusCode::kUnavailable) {
        alive[g] = false;
        stats.lost_generators.push_back(generators_[g]->name());
        log->error("generator {} at {} is down; it gets no weights: {}", generators_[g]->name(),
                   generators_[g]->address(), state.status().ToString());
        continue;
      }
      chain.push_back(generators_[g]->address());
    }
    return chain;
  };
  std::vector<std::string> chain = live_chain();
  if (chain.empty()) return Unavailable("iteration " + std::to_string(iteration) + ": every generator is down");
  const std::string checkpoint = options_.checkpoint_root.empty()
                                     ? std::string()
                                     : options_.checkpoint_root + "/iter-" + std::to_string(iteration);
  auto t0 = Clock::now();
  std::atomic<bool> no_stop{false};
  int publish_attempts = 0;
  auto finished = WithRetries("learner FinishIteration", options_, no_stop, [&] {
    if (publish_attempts++ > 0) chain = live_chain();
    return learner_->FinishIteration(iteration, chain, checkpoint, options_.learner_timeout);
  });
  if (!finished.ok()) return finished.status().WithContext("iteration " + std::to_string(iteration));
  stats.finish_seconds = Since(t0);
  stats.weight_sync_seconds = finished->publish_seconds;
  metrics.publish_seconds->Set(finished->publish_seconds);
  metrics.publish_bytes->Set(static_cast<double>(finished->publish_bytes));
  if (finished->publish_seconds > 0)
    metrics.publish_gbps->Set(static_cast<double>(finished->publish_bytes) / finished->publish_seconds / 1e9);
  stats.policy_version = finished->policy_version;
  stats.checkpoint_dir = finished->checkpoint_dir;
  stats.learner = finished->progress;

  // Every live generator must serve the new version before t+1 starts.
  for (size_t g = 0; g < generators_.size(); ++g) {
    if (!alive[g]) continue;
    auto state = generators_[g]->State(std::chrono::seconds(30));
    if (!state.ok()) {
      log->error("generator {} did not answer after the weight update: {}", generators_[g]->name(),
                 state.status().ToString());
      stats.lost_generators.push_back(generators_[g]->name());
      continue;
    }
    if (state->policy_version != stats.policy_version)
      return FailedPrecondition("generator " + generators_[g]->name() + " serves version " +
                                std::to_string(state->policy_version) + " after the update to " +
                                std::to_string(stats.policy_version));
  }
  stats.wall_seconds = Since(start);
  return stats;
}

}  // namespace spar
