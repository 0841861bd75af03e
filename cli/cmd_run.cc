// `spar run --config FILE`: the whole SPPO/GPO pipeline (local children or
// remote services), a summary table, RUN_DIR/summary.json and the final HF
// folder. Running it again on the same run folder resumes.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/command.h"
#include "common/logging.h"
#include "orchestrator/run_driver.h"

namespace spar::cli {
namespace {

struct RunArgs {
  std::string config;
  std::string dir;
  uint32_t iterations = 0;
};

void PrintTable(const RunSummary& summary) {
  std::printf("\n%-5s %8s %9s %10s %9s %10s %9s %8s %9s %10s\n", "iter", "prompts", "rollouts", "tokens",
              "tok/s", "chosen-wr", "steps", "loss", "sync s", "wall s");
  for (const auto& s : summary.iterations) {
    std::printf("%-5u %8lu %9lu %10lu %9.1f %10.3f %9lu %8.4f %9.2f %10.1f\n", s.iteration,
                static_cast<unsigned long>(s.prompts), static_cast<unsigned long>(s.rollouts),
                static_cast<unsigned long>(s.rollout_tokens),
                s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0, s.mean_chosen_win_rate,
                static_cast<unsigned long>(s.learner.step), s.learner.loss, s.weight_sync_seconds, s.wall_seconds);
  }
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
  const bool tty = isatty(STDOUT_FILENO);
  options.on_iteration = [&](const IterationStats& s) {
    const double rate = s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0;
    if (tty) {
      std::printf("iteration %u/%u done: %lu rollouts, %.1f tokens/s, loss %.4f, %.1f s\n", s.iteration + 1,
                  config->run.iterations, static_cast<unsigned long>(s.rollouts), rate, s.learner.loss,
                  s.wall_seconds);
      std::fflush(stdout);
    }
  };
  auto summary = RunPipeline(*config, options);
  if (!summary.ok()) return Fail("run", summary.status());
  PrintTable(*summary);
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<RunArgs>();
  sub.add_option("--config", args->config, "spar YAML config (run:, prompts:, policy:, services)")->required();
  sub.add_option("--dir", args->dir, "override run.dir (the run folder: store, logs, checkpoints)");
  sub.add_option("--iterations", args->iterations, "override run.iterations");
  sub.callback([args]() { Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("run", "Run the whole SPPO/GPO pipeline (resumes a run folder)", 5, Setup);

}  // namespace spar::cli
