// `spar bench pipeline`: the wall time of one SPPO iteration with the
// stages overlapped (generation, scoring and training at once: pi_t is
// fixed through the iteration) against the same work staged (all
// generation, then all scoring, then all training, as the seed's scripts
// do), on the same config, services and prompts. Each mode is a fresh run
// folder with real child processes (spar run's local mode); the figure is
// the iteration's wall time, from the first prompt sent to version t+1
// confirmed on every generator (service start-up and the held-out judging
// are outside it).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "bench/bench.h"
#include "common/logging.h"
#include "orchestrator/run_driver.h"

namespace spar::bench {
namespace {

namespace fs = std::filesystem;

struct PipelineBenchArgs {
  std::string config = "examples/local.yaml";
  int64_t prompts = 12;  // prompts in the iteration
  int repeats = 1;
  std::string dir;       // where the two run folders go (default: a temp folder)
};

// The config with its run folder, iteration count and mode replaced; every
// child reads the same file, so it is written out.
Result<std::string> WriteVariant(const PipelineBenchArgs& args, const fs::path& dir, bool pipelined) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(args.config);
  } catch (const std::exception& e) {
    return InvalidArgument(args.config + ": " + e.what());
  }
  const fs::path run_dir = dir / (pipelined ? "pipelined" : "staged");
  root["run"]["dir"] = run_dir.string();
  root["run"]["iterations"] = 1;
  root["run"]["held_out"] = 0;
  root["run"]["pipelined"] = pipelined;
  root["prompts"]["limit"] = args.prompts;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir.string() + ": " + ec.message());
  const fs::path out = dir / (pipelined ? "pipelined.yaml" : "staged.yaml");
  std::ofstream f(out);
  f << root << "\n";
  if (!f) return Internal("cannot write " + out.string());
  return out.string();
}

int Run(const PipelineBenchArgs& args) {
  const fs::path dir = args.dir.empty()
                           ? fs::temp_directory_path() / ("spar-bench-pipeline-" + std::to_string(getpid()))
                           : fs::path(args.dir);
  fs::create_directories(dir);
  // Both modes start from the same initial models (built once, outside
  // the timing).
  std::printf("pipeline bench: %s, %ld prompts, 1 iteration per run, %d repeat(s)\n", args.config.c_str(),
              static_cast<long>(args.prompts), args.repeats);
  std::printf("%-10s %8s %10s %10s %10s %10s %10s\n", "mode", "wall s", "generate s", "score s", "train s",
              "finish s", "tokens/s");
  double best[2] = {1e300, 1e300};
  for (int r = 0; r < args.repeats; ++r) {
    for (bool pipelined : {false, true}) {
      auto path = WriteVariant(args, dir / ("r" + std::to_string(r)), pipelined);
      if (!path.ok()) return cli::Fail("bench pipeline", path.status());
      auto config = RunConfig::Load(*path);
      if (!config.ok()) return cli::Fail("bench pipeline", config.status());
      RunDriverOptions options;
      options.config_path = *path;
      auto summary = RunPipeline(*config, options);
      if (!summary.ok()) return cli::Fail("bench pipeline", summary.status());
      const auto& s = summary->iterations.at(0);
      std::printf("%-10s %8.1f %10.1f %10.1f %10.1f %10.1f %10.1f\n", pipelined ? "pipelined" : "staged",
                  s.wall_seconds, s.generation_seconds, s.scoring_busy_seconds, s.training_busy_seconds,
                  s.finish_seconds, s.generation_seconds > 0 ? s.rollout_tokens / s.generation_seconds : 0.0);
      std::fflush(stdout);
      best[pipelined] = std::min(best[pipelined], s.wall_seconds);
    }
  }
  const double ratio = best[1] / best[0];
  std::printf("pipelined / staged (best of %d): %.2fx  (aim <= 0.70x)\n", args.repeats, ratio);
  nlohmann::json result = {{"bench", "pipeline"},      {"prompts", args.prompts},
                           {"staged_seconds", best[0]}, {"pipelined_seconds", best[1]},
                           {"ratio", ratio}};
  std::printf("RESULT %s\n", result.dump().c_str());
  if (args.dir.empty()) fs::remove_all(dir);
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<PipelineBenchArgs>();
  sub.add_option("--config", args->config, "spar run config (its services are started as children)");
  sub.add_option("--prompts", args->prompts, "prompts in the measured iteration");
  sub.add_option("--repeats", args->repeats, "runs per mode (best is compared)");
  sub.add_option("--dir", args->dir, "keep the run folders here (default: a temp folder, removed)");
  sub.callback([args]() {
    SetLogLevel("warn").IgnoreError();
    cli::Exit(Run(*args));
  });
}

}  // namespace

SPAR_REGISTER_BENCH("pipeline", "One iteration pipelined vs staged (wall time)", Setup);

}  // namespace spar::bench
