// `spar run --config FILE`: the whole SPPO/GPO pipeline (local children or
// remote services), a summary table, RUN_DIR/summary.json and the final HF
// folder. Running it again on the same run folder resumes.
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>

#include "cli/command.h"
#include "common/logging.h"
#include "metrics/telemetry.h"
#include "orchestrator/run_driver.h"
#include "orchestrator/top_view.h"

namespace spar::cli {
namespace {

struct RunArgs {
  std::string config;
  std::string dir;
  uint32_t iterations = 0;
  std::string metrics_listen = "127.0.0.1:0";
  double progress_interval = 0;  // 0: 0.5 s on a terminal, 10 s otherwise
};

// Progress while the run works, from the orchestrator's own metrics: on a
// terminal one line redrawn in place (bar, prompts/s, ETA of the iteration
// and of the run); otherwise a plain line every interval, for log files.
class ProgressReporter {
 public:
  // `metrics` (not owned) is the registry the run driver fills.
  ProgressReporter(MetricsRegistry* m, uint32_t iterations, bool tty, std::chrono::milliseconds interval)
      : iterations_(iterations), tty_(tty), interval_(interval) {
    namespace mn = metric_names;
    iteration_ = m->GetGauge(mn::kOrchestratorIteration, "Current iteration (0-based)");
    for (const char* stage : mn::kOrchestratorStages)
      stages_.push_back(m->GetGauge(mn::kOrchestratorPrompts, "Prompts of the current iteration by stage",
                                    {{"stage", stage}}));
    prompts_total_ = m->GetCounter(mn::kOrchestratorPromptsTotal, "Prompts that finished every stage");
    rollouts_total_ = m->GetCounter(mn::kOrchestratorRolloutsTotal, "Rollouts received from the generators");
    thread_ = std::thread([this] { Loop(); });
  }
  ~ProgressReporter() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
    Clear();
  }
  // Prints a line of its own (an iteration's result) above the progress line.
  void Print(const std::string& line) {
    std::lock_guard<std::mutex> lock(print_mutex_);
    if (tty_) std::fputs("\r\x1b[K", stdout);
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
  }

 private:
  void Clear() {
    std::lock_guard<std::mutex> lock(print_mutex_);
    if (tty_) std::fputs("\r\x1b[K", stdout);
    std::fflush(stdout);
  }
  static int Width() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 100;
  }
  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, interval_, [this] { return stop_; })) Draw();
  }
  void Draw() {
    const auto now = std::chrono::steady_clock::now();
    samples_.push_back({now, prompts_total_->value(), rollouts_total_->value()});
    while (samples_.size() > 2 && now - samples_[1].at > std::chrono::seconds(20)) samples_.pop_front();
    const Sample& first = samples_.front();
    const double dt = std::chrono::duration<double>(now - first.at).count();
    std::optional<double> prompts_per_second, rollouts_per_second;
    if (dt > 0.5 && samples_.size() > 1) {
      prompts_per_second = (prompts_total_->value() - first.prompts) / dt;
      rollouts_per_second = (rollouts_total_->value() - first.rollouts) / dt;
    }
    double total = 0;
    for (const Gauge* g : stages_) total += g->value();
    if (total <= 0) return;  // services still starting
    const double done = stages_.back()->value();
    const auto iteration = static_cast<uint32_t>(iteration_->value());
    // The run's ETA assumes the iterations left have this one's size.
    std::string run_eta = "-";
    if (prompts_per_second && *prompts_per_second > 0) {
      const double left = (total - done) + total * (iterations_ - 1 - std::min(iteration, iterations_ - 1));
      run_eta = FormatDuration(left / *prompts_per_second);
    }
    char counts[160];
    std::snprintf(counts, sizeof counts, "  gen %.0f score %.0f train %.0f  %s rollouts/s  run ETA %s",
                  stages_[0]->value() + stages_[1]->value(), stages_[2]->value(), stages_[3]->value(),
                  rollouts_per_second ? FormatRate(*rollouts_per_second).c_str() : "-", run_eta.c_str());
    const std::string label = "iteration " + std::to_string(iteration + 1) + "/" + std::to_string(iterations_);
    std::lock_guard<std::mutex> print_lock(print_mutex_);
    if (tty_) {
      const std::string line = ProgressLine(label, done, total, prompts_per_second, "prompts", counts, Width());
      std::fputs(("\r" + line + "\x1b[K").c_str(), stdout);
    } else {
      const std::string line = ProgressLine(label, done, total, prompts_per_second, "prompts", counts, 200);
      std::fputs(("progress: " + line + "\n").c_str(), stdout);
    }
    std::fflush(stdout);
  }
  static std::string FormatRate(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, v < 10 ? "%.2f" : "%.1f", v);
    return buf;
  }

  struct Sample {
    std::chrono::steady_clock::time_point at;
    double prompts;
    double rollouts;
  };
  const uint32_t iterations_;
  const bool tty_;
  const std::chrono::milliseconds interval_;
  const Gauge* iteration_;
  std::vector<const Gauge*> stages_;  // in kOrchestratorStages order; "done" last
  const Counter* prompts_total_;
  const Counter* rollouts_total_;
  std::deque<Sample> samples_;
  std::mutex mutex_, print_mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

void PrintTable(const RunSummary& summary) {
  std::printf("\n%-5s %8s %9s %10s %9s %9s %9s %10s %9s %8s %9s %10s %10s\n", "iter", "prompts", "rollouts",
              "tokens", "tok/s", "groups/s", "learn t/s", "chosen-wr", "steps", "loss", "sync s", "wall s", "vs-pi0");
  for (size_t i = 0; i < summary.iterations.size(); ++i) {
    const auto& s = summary.iterations[i];
    char judged[32] = "-";
    if (i < summary.held_out.size() && summary.held_out[i].prompts > 0)
      std::snprintf(judged, sizeof judged, "%.3f", summary.held_out[i].win_rate);
    std::printf("%-5u %8lu %9lu %10lu %9.1f %9.2f %9.1f %10.3f %9lu %8.4f %9.2f %10.1f %10s\n", s.iteration,
                static_cast<unsigned long>(s.prompts), static_cast<unsigned long>(s.rollouts),
                static_cast<unsigned long>(s.rollout_tokens),
                s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0,
                s.scoring_busy_seconds > 0 ? s.scored_groups / s.scoring_busy_seconds : 0.0,
                s.learner.tokens_per_second, s.mean_chosen_win_rate,
                static_cast<unsigned long>(s.learner.step), s.learner.loss, s.weight_sync_seconds, s.wall_seconds, judged);
  }
  std::printf("(groups/s: scorer groups per second of scorer calls; learn t/s: learner training tokens/s;\n"
              " vs-pi0: win rate of the iteration's new policy against pi_0 on the held-out prompts, per the scorer)\n");
  std::printf("\nrun folder:  %s\nsummary:     %s/summary.json\nfinal model: %s\n", summary.run_dir.c_str(),
              summary.run_dir.c_str(), summary.final_model.c_str());
  if (summary.iterations_resumed > 0)
    std::printf("(%u iteration(s) were done by an earlier run and resumed past)\n", summary.iterations_resumed);
}

int Run(const RunArgs& args) {
  auto config = RunConfig::Load(args.config);
  if (!config.ok()) return Fail("run", config.status());
  if (!args.dir.empty()) config->run.dir = args.dir;
  if (args.iterations > 0) config->run.iterations = args.iterations;
  SetLogLevel(config->log_level).IgnoreError();  // validated by the config reader
  SetLogProcessTag("run");
  RunDriverOptions options;
  options.config_path = args.config;
  options.metrics_listen = args.metrics_listen;
  MetricsRegistry metrics;
  options.metrics = &metrics;
  const bool tty = isatty(STDOUT_FILENO);
  const auto interval = std::chrono::milliseconds(
      static_cast<int64_t>(1000 * (args.progress_interval > 0 ? args.progress_interval : tty ? 0.5 : 10.0)));
  auto progress = std::make_unique<ProgressReporter>(&metrics, config->run.iterations, tty, interval);
  options.on_iteration = [&](const IterationStats& s, const HeldOutResult&) {
    const double rate = s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0;
    char line[256];
    std::snprintf(line, sizeof line, "iteration %u/%u done: %lu rollouts, %.1f tokens/s, loss %.4f, %.1f s",
                  s.iteration + 1, config->run.iterations, static_cast<unsigned long>(s.rollouts), rate,
                  s.learner.loss, s.wall_seconds);
    progress->Print(line);
  };
  auto summary = RunPipeline(*config, options);
  progress.reset();
  if (!summary.ok()) return Fail("run", summary.status());
  PrintTable(*summary);
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<RunArgs>();
  sub.add_option("--config", args->config, "spar YAML config (run:, prompts:, policy:, services)")->required();
  sub.add_option("--dir", args->dir, "override run.dir (the run folder: store, logs, checkpoints)");
  sub.add_option("--iterations", args->iterations, "override run.iterations");
  sub.add_option("--metrics-listen", args->metrics_listen,
                 "serve the orchestrator's Prometheus /metrics on host:port (port 0 = any; \"\" = none)");
  sub.add_option("--progress-interval", args->progress_interval,
                 "seconds between progress lines (default 0.5 on a terminal, 10 otherwise)")
      ->check(CLI::NonNegativeNumber);
  sub.callback([args]() { Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("run", "Run the whole SPPO/GPO pipeline (resumes a run folder)", 5, Setup);

}  // namespace spar::cli
