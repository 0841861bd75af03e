// spar/orchestrator/run_driver.h — `spar run`: the whole SPPO/GPO run.
//
// Local mode (run.launch: local) starts every service as a child process of
// this one on loopback, from the same config file (each reads its own
// section); remote mode connects to the addresses in the config. Then, for
// each iteration t not yet recorded as done in the run store: prompt shard
// t goes through IterationPipeline (generate -> store -> score -> store ->
// train), the learner checkpoints to RUN_DIR/checkpoints/iter-<t> and
// streams version t+1 to the generators; the iteration's stats are stored.
//
// Held-out judging: the last run.held_out prompts never train; after each
// iteration the new policy's responses to them are judged against pi_0's by
// the scorer (orchestrator/evaluation.h), reported per iteration.
//
// Local mode with an explicit `address:` for a service (a generators entry,
// scorer or learner) uses that running service instead of starting one:
// swapping the preference model is a change of scorer.address.
//
// Resume: a second `spar run` on the same run folder skips iterations
// recorded as done and (local mode) starts the learner and generators from
// the last checkpoint at its version; the pipeline itself resumes a
// half-done iteration from the store.
//
// Thread safety: one call at a time per run folder (the store's lock makes
// a second process fail with FailedPrecondition).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "metrics/metrics.h"
#include "orchestrator/evaluation.h"
#include "orchestrator/pipeline.h"
#include "orchestrator/run_config.h"

namespace spar {

struct RunSummary {
  std::string run_dir;
  std::string final_model;  // HF folder of the last policy
  uint32_t iterations_done = 0;
  uint32_t iterations_resumed = 0;  // done by an earlier invocation
  std::vector<IterationStats> iterations;  // those run by this invocation
  std::vector<HeldOutResult> held_out;     // pi_{t+1} against pi_0, one per entry of `iterations`
  double wall_seconds = 0;
};

struct RunDriverOptions {
  std::string config_path;   // the YAML file the children read
  std::string spar_binary;   // default: this executable
  // host:port of the orchestrator's own /metrics (port 0 = any); "" = none.
  std::string metrics_listen = "127.0.0.1:0";
  // The orchestrator's metrics (iteration, prompts per stage, ...; names in
  // metrics/telemetry.h) go here when set (not owned), so the caller can
  // draw progress from them; otherwise into a registry of the run's own.
  MetricsRegistry* metrics = nullptr;
  // Called after each iteration (progress output).
  std::function<void(const IterationStats&, const HeldOutResult&)> on_iteration;
};

// Runs (or resumes) the run. Writes RUN_DIR/bus.json (the bus broker) and
// RUN_DIR/services.json (every service: name, kind, gRPC address, /metrics
// address when known, pid of local children) when the services are up, and
// RUN_DIR/summary.json at the end.
// Errors name the stage and service: a child that fails to start (with the
// tail of its log), a service that stays unreachable, a store problem.
Result<RunSummary> RunPipeline(const RunConfig& config, const RunDriverOptions& options);

// Builds policy.model from policy.init when the folder is absent (seeded
// random weights of a real architecture and the real tokenizer).
Status EnsureInitialPolicy(const RunConfig& config);

// summary.json contents.
std::string SummaryJson(const RunSummary& summary);

}  // namespace spar
