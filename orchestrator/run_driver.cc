#include "orchestrator/run_driver.h"

#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "bus/bus.h"
#include "common/files.h"
#include "common/logging.h"
#include "orchestrator/clients.h"
#include "orchestrator/launcher.h"
#include "metrics/metrics.h"
#include "metrics/telemetry.h"
#include "orchestrator/prompt_set.h"
#include "orchestrator/report.h"
#include "storage/run_store.h"

extern char** environ;

namespace spar {

namespace fs = std::filesystem;

namespace {

// Runs `argv` to completion with its output appended to `log_path`.
Status RunToCompletion(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Unavailable("cannot start " + argv[0] + ": " + std::strerror(rc));
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Internal("`" + argv[1] + "` failed; its log (" + log_path + ") ends with:\n" + TailOfFile(log_path));
  return Status::Ok();
}

std::string Absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

nlohmann::json StatsJson(const IterationStats& s, const HeldOutResult& h) {
  return {{"iteration", s.iteration},
          {"held_out_prompts", h.prompts},
          {"held_out_win_rate", h.prompts > 0 ? nlohmann::json(h.win_rate) : nlohmann::json(nullptr)},
          {"held_out_seconds", h.seconds},
          {"prompts", s.prompts},
          {"generated_groups", s.generated_groups},
          {"reused_groups", s.reused_groups},
          {"rollouts", s.rollouts},
          {"rollout_tokens", s.rollout_tokens},
          {"scored_groups", s.scored_groups},
          {"trained_examples", s.trained_examples},
          {"generation_seconds", s.generation_seconds},
          {"tokens_per_second", s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0},
          {"rollouts_per_second", s.generation_seconds > 0 ? s.rollouts / s.generation_seconds : 0.0},
          {"scoring_busy_seconds", s.scoring_busy_seconds},
          {"scorer_groups_per_second", s.scoring_busy_seconds > 0 ? s.scored_groups / s.scoring_busy_seconds : 0.0},
          {"training_busy_seconds", s.training_busy_seconds},
          {"finish_seconds", s.finish_seconds},
          {"weight_sync_seconds", s.weight_sync_seconds},
          {"wall_seconds", s.wall_seconds},
          {"policy_version", s.policy_version},
          {"checkpoint_dir", s.checkpoint_dir},
          {"mean_chosen_win_rate", s.mean_chosen_win_rate},
          {"learner_step", s.learner.step},
          {"learner_loss", s.learner.loss},
          {"learner_grad_norm", s.learner.grad_norm},
          {"learner_tokens_per_second", s.learner.tokens_per_second},
          {"lost_generators", s.lost_generators}};
}

// The run's bus: a broker every local service publishes to (spar top
// subscribes through RUN_DIR/bus.json), and a recorder that keeps every
// metrics snapshot in the run store as history for `spar report`.
class RunBus {
 public:
  static Result<std::unique_ptr<RunBus>> Start(const std::string& run_dir, RunStore* store) {
    auto bus = std::unique_ptr<RunBus>(new RunBus());
    SPAR_ASSIGN_OR_RETURN(bus->broker_, BusBroker::Start({"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"}));
    const auto& a = bus->broker_->addresses();
    nlohmann::json j = {{"publish", a.publish}, {"subscribe", a.subscribe}};
    SPAR_RETURN_IF_ERROR(WriteFileAtomic(run_dir + "/bus.json", j.dump() + "\n"));
    SPAR_ASSIGN_OR_RETURN(auto subscriber, BusSubscriber::Connect(a.subscribe, {"metrics."}));
    bus->thread_ = std::thread([b = bus.get(), store, sub = std::shared_ptr<BusSubscriber>(std::move(subscriber))] {
      while (!b->stop_) {
        auto message = sub->Receive(std::chrono::milliseconds(200));
        if (!message.ok() || !*message || !(*message)->envelope.has_metrics()) continue;
        const auto& e = (*message)->envelope;
        // History is best effort: a failed append is logged, never fatal.
        Status s = store->AppendMetrics(MetricsPointFromSnapshot(e.source(), e.unix_micros(), e.metrics()));
        if (!s.ok()) Logger("run")->warn("metrics history: {}", s.ToString());
      }
    });
    return bus;
  }
  ~RunBus() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const BusAddresses& addresses() const { return broker_->addresses(); }

 private:
  RunBus() = default;
  std::unique_ptr<BusBroker> broker_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

Status EnsureInitialPolicy(const RunConfig& config, const std::string& spar_binary, const std::string& log_dir) {
  const std::string& dir = config.policy.model;
  if (fs::exists(fs::path(dir) / "config.json")) return Status::Ok();
  const auto& init = config.policy.init;
  if (!init.enabled)
    return NotFound(config.source + ": policy.model '" + dir +
                    "' has no config.json (and policy.init is not set to build it)");
  Logger("run")->info("building the initial policy {} ({} {}, seed {})", dir, init.arch, init.preset, init.seed);
  return RunToCompletion({spar_binary, "init-model", "--arch", init.arch, "--preset", init.preset, "--tokenizer",
                          init.tokenizer, "--out", dir, "--seed", std::to_string(init.seed)},
                         log_dir + "/init-model.log");
}

// Builds scorer.model from scorer.init when the folder is absent.
Status EnsureScorerModel(const RunConfig& config, const std::string& spar_binary, const std::string& log_dir) {
  const auto& m = config.scorer_model;
  if (!m.init.enabled || fs::exists(fs::path(m.model) / "config.json")) return Status::Ok();
  const auto& init = m.init;
  Logger("run")->info("building the preference model {} ({} {} + {} head, seed {})", m.model, init.arch, init.preset,
                      init.head, init.seed);
  std::vector<std::string> argv = {spar_binary, "init-model", "--arch", init.arch, "--preset", init.preset,
                                   "--tokenizer", init.tokenizer, "--out", m.model, "--seed", std::to_string(init.seed),
                                   "--head", init.head, "--k", std::to_string(init.k)};
  if (init.prompt_head) argv.push_back("--prompt-head");
  return RunToCompletion(argv, log_dir + "/init-scorer.log");
}

Status EnsureInitialPolicy(const RunConfig& config) {
  SPAR_RETURN_IF_ERROR(EnsureDir(config.run.dir + "/logs"));
  return EnsureInitialPolicy(config, Launcher::SelfExecutable(), config.run.dir + "/logs");
}

std::string SummaryJson(const RunSummary& summary) {
  nlohmann::json iterations = nlohmann::json::array();
  uint64_t rollouts = 0, tokens = 0;
  double generation_seconds = 0;
  for (size_t i = 0; i < summary.iterations.size(); ++i) {
    const auto& s = summary.iterations[i];
    iterations.push_back(StatsJson(s, i < summary.held_out.size() ? summary.held_out[i] : HeldOutResult{}));
    rollouts += s.rollouts;
    tokens += s.rollout_tokens;
    generation_seconds += s.generation_seconds;
  }
  nlohmann::json j = {{"run_dir", summary.run_dir},
                      {"final_model", summary.final_model},
                      {"iterations_done", summary.iterations_done},
                      {"iterations_resumed", summary.iterations_resumed},
                      {"rollouts", rollouts},
                      {"rollout_tokens", tokens},
                      {"rollout_tokens_per_second", generation_seconds > 0 ? tokens / generation_seconds : 0.0},
                      {"wall_seconds", summary.wall_seconds},
                      {"iterations", iterations}};
  return j.dump(2);
}

Result<RunSummary> RunPipeline(const RunConfig& config, const RunDriverOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  auto log = Logger("run");
  RunSummary summary;
  summary.run_dir = Absolute(config.run.dir);
  const std::string log_dir = summary.run_dir + "/logs";
  SPAR_RETURN_IF_ERROR(EnsureDir(log_dir));
  const std::string binary = options.spar_binary.empty() ? Launcher::SelfExecutable() : options.spar_binary;

  SPAR_ASSIGN_OR_RETURN(PromptSet prompts, PromptSet::Load(config.prompts.path, config.prompts.limit));
  // The last run.held_out prompts are never trained on (held-out judging).
  const size_t held_out_count = static_cast<size_t>(config.run.held_out);
  if (held_out_count + config.run.iterations > prompts.prompts.size())
    return InvalidArgument(config.source + ": run.held_out is " + std::to_string(held_out_count) + " but " +
                           config.prompts.path + " has only " + std::to_string(prompts.prompts.size()) +
                           " prompts: at least one per iteration (" + std::to_string(config.run.iterations) +
                           ") must stay for training");
  std::vector<PromptRecord> held_out(prompts.prompts.end() - static_cast<std::ptrdiff_t>(held_out_count),
                                     prompts.prompts.end());
  prompts.prompts.resize(prompts.prompts.size() - held_out_count);
  for (size_t i = 0; i < held_out.size(); ++i) held_out[i].prompt_index = i;
  SPAR_ASSIGN_OR_RETURN(auto store, RunStore::Open(summary.run_dir + "/store"));

  // Which iterations are already done, and from which checkpoint to go on.
  uint32_t first = 0;
  std::string policy_dir = Absolute(config.policy.model);
  for (uint32_t t = 0; t < config.run.iterations; ++t) {
    SPAR_ASSIGN_OR_RETURN(auto state, store->GetIterationState(t));
    if (!state) break;
    auto j = nlohmann::json::parse(*state, nullptr, false);
    if (j.is_discarded() || !j.value("done", false)) break;
    first = t + 1;
    policy_dir = j.value("checkpoint_dir", policy_dir);
  }
  summary.iterations_resumed = first;
  if (first > 0) log->info("resuming after {} finished iteration(s) from {}", first, policy_dir);

  SPAR_ASSIGN_OR_RETURN(auto bus, RunBus::Start(summary.run_dir, store.get()));
  MetricsRegistry own_metrics;
  MetricsRegistry& metrics = options.metrics ? *options.metrics : own_metrics;
  auto* iteration_gauge = metrics.GetGauge(metric_names::kOrchestratorIteration, "Current iteration (0-based)");
  metrics.GetGauge(metric_names::kOrchestratorIterations, "Iterations in this run")->Set(config.run.iterations);
  SPAR_ASSIGN_OR_RETURN(auto telemetry, ServiceTelemetry::Start({"orchestrator", "orchestrator",
                                                                 bus->addresses().publish, options.metrics_listen, ""},
                                                                &metrics));
  // Who serves where, for monitors and tests: written once the services are up.
  nlohmann::json services = nlohmann::json::array();
  services.push_back({{"name", "orchestrator"}, {"service", "orchestrator"}, {"address", ""}, {"source", "orchestrator"},
                      {"metrics", telemetry->metrics_address()}, {"pid", static_cast<int64_t>(::getpid())}});

  std::unique_ptr<Launcher> launcher;
  std::vector<std::string> generator_addresses = config.services.generators;
  std::string scorer_address = config.services.scorer, learner_address = config.services.learner;
  if (generator_addresses.empty()) generator_addresses.push_back("");
  if (first < config.run.iterations && config.run.launch == "local") {
    SPAR_RETURN_IF_ERROR(EnsureInitialPolicy(config, binary, log_dir));
    launcher = std::make_unique<Launcher>(binary, log_dir);
    const std::string cfg = Absolute(options.config_path);
    const std::string bus_address = bus->addresses().publish;
    const std::vector<std::string> policy_args = {"--config", cfg, "--model", policy_dir, "--policy-version",
                                                  std::to_string(first), "--bus", bus_address,
                                                  "--metrics-listen", "127.0.0.1:0"};
    // A service with an explicit address in the config is already running
    // somewhere (e.g. another preference model): use it, start the rest.
    std::vector<std::pair<std::string, std::pair<std::string, std::vector<std::string>>>> plan;
    if (scorer_address.empty()) {
      SPAR_RETURN_IF_ERROR(EnsureScorerModel(config, binary, log_dir));
      plan.push_back(
          {"scorer", {"scorer", {"--config", cfg, "--bus", bus_address, "--metrics-listen", "127.0.0.1:0"}}});
    } else log->info("scorer: using the running service at {}", scorer_address);
    if (learner_address.empty()) plan.push_back({"learner", {"learner", policy_args}});
    else log->info("learner: using the running service at {}", learner_address);
    for (size_t i = 0; i < generator_addresses.size(); ++i) {
      if (!generator_addresses[i].empty()) {
        log->info("generator-{}: using the running service at {}", i, generator_addresses[i]);
        continue;
      }
      auto args = policy_args;
      args.insert(args.end(), {"--id", "generator-" + std::to_string(i)});
      plan.push_back({"generator-" + std::to_string(i), {"generator", args}});
    }
    for (const auto& [name, what] : plan) {
      SPAR_ASSIGN_OR_RETURN(ChildService child, launcher->Start(name, what.first, what.second));
      log->info("{} serving on {} (log {})", name, child.address, child.log_path);
      // Its name on the bus: a generator publishes as its --id, rank 0 of
      // the learner as learner-0.
      services.push_back({{"name", name}, {"service", what.first}, {"address", child.address},
                          {"source", name == "learner" ? "learner-0" : name},
                          {"metrics", child.metrics_address}, {"pid", static_cast<int64_t>(child.pid)},
                          {"log", child.log_path}});
      if (name == "scorer") scorer_address = child.address;
      if (name == "learner") learner_address = child.address;
      if (name.rfind("generator-", 0) == 0) generator_addresses[std::stoul(name.substr(10))] = child.address;
    }
  }

  // Services this run did not start (remote mode, or an explicit address).
  auto listed = [&](const std::string& name) {
    for (const auto& s : services)
      if (s["name"] == name) return true;
    return false;
  };
  if (!listed("scorer")) services.push_back({{"name", "scorer"}, {"service", "scorer"}, {"address", scorer_address}});
  if (!listed("learner"))
    services.push_back({{"name", "learner"}, {"service", "learner"}, {"address", learner_address}});
  for (size_t i = 0; i < generator_addresses.size(); ++i)
    if (!listed("generator-" + std::to_string(i)))
      services.push_back({{"name", "generator-" + std::to_string(i)}, {"service", "generator"},
                          {"address", generator_addresses[i]}});
  SPAR_RETURN_IF_ERROR(WriteFileAtomic(summary.run_dir + "/services.json",
                                       nlohmann::json{{"services", services}}.dump(2) + "\n"));

  std::vector<std::unique_ptr<GeneratorClient>> generator_clients;
  std::vector<GeneratorClient*> generators;
  for (size_t i = 0; i < generator_addresses.size(); ++i) {
    generator_clients.push_back(MakeGrpcGeneratorClient("generator-" + std::to_string(i), generator_addresses[i]));
    generators.push_back(generator_clients.back().get());
  }
  auto scorer = MakeGrpcScorerClient(scorer_address);
  auto learner = MakeGrpcLearnerClient(learner_address);

  PipelineOptions pipeline_options;
  pipeline_options.generation = config.generation;
  pipeline_options.seed = static_cast<uint64_t>(config.run.seed);
  pipeline_options.pipelined = config.run.pipelined;
  pipeline_options.inflight_per_generator = config.run.inflight_per_generator;
  pipeline_options.checkpoint_root = summary.run_dir + "/checkpoints";
  pipeline_options.metrics = &metrics;
  IterationPipeline pipeline(store.get(), generators, scorer.get(), learner.get(), pipeline_options);

  HeldOutOptions held_out_options;
  held_out_options.generation = config.generation;
  held_out_options.seed = static_cast<uint64_t>(config.run.seed);
  HeldOutEvaluator evaluator(store.get(), std::move(held_out), generators, scorer.get(), held_out_options);
  if (first < config.run.iterations) SPAR_RETURN_IF_ERROR(evaluator.EnsureBaseline(first));

  summary.final_model = policy_dir;
  for (uint32_t t = first; t < config.run.iterations; ++t) {
    auto shard = prompts.Shard(t, config.run.iterations);
    log->info("iteration {}: {} prompts", t, shard.size());
    iteration_gauge->Set(t);
    SPAR_ASSIGN_OR_RETURN(IterationStats stats, pipeline.Run(t, shard));
    SPAR_ASSIGN_OR_RETURN(HeldOutResult judged, evaluator.Judge(stats.policy_version));
    if (judged.prompts > 0)
      log->info("iteration {}: pi_{} wins {:.3f} against pi_0 on {} held-out prompts ({:.1f} s)", t,
                judged.policy_version, judged.win_rate, judged.prompts, judged.seconds);
    nlohmann::json state = StatsJson(stats, judged);
    state["done"] = true;
    SPAR_RETURN_IF_ERROR(store->PutIterationState(t, state.dump()));
    summary.final_model = stats.checkpoint_dir;
    summary.iterations.push_back(stats);
    summary.held_out.push_back(judged);
    if (options.on_iteration) options.on_iteration(stats, judged);
  }
  summary.iterations_done = config.run.iterations;
  summary.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  SPAR_RETURN_IF_ERROR(WriteFileAtomic(summary.run_dir + "/summary.json", SummaryJson(summary) + "\n"));
  if (launcher) {
    // Close our connections first: an idle gRPC channel does not notice the
    // server's GOAWAY, so each child's Shutdown would wait out its whole
    // grace period for connections nobody uses any more.
    generators.clear();
    generator_clients.clear();
    scorer.reset();
    learner.reset();
    launcher->StopAll();
  }
  return summary;
}

}  // namespace spar
