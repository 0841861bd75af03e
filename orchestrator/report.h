// spar/orchestrator/report.h — `spar report RUN_DIR`: one self-contained
// HTML page about a run (inline SVG charts, no scripts, no network).
//
// Inputs: RUN_DIR/summary.json (written by `spar run` when it finishes)
// and the run store RUN_DIR/store, opened read-only so a run in progress
// can be reported on. Per-iteration numbers come from summary.json, or,
// while there is none yet, from the store's iteration states (the same
// JSON per iteration). The store's metrics history gives the "over time"
// charts.
//
// Metrics history contract (what the run should AppendMetrics): one
// MetricsPoint per source and snapshot, values named as MetricsPointFromSnapshot
// names them: "<metric>{k=v,...}" for counters and gauges (labels sorted,
// "{}" for none), "<metric>_sum{...}" and "<metric>_count{...}" for
// histograms. The charts use spar_generator_tokens_total (differenced
// into tokens/s, else the spar_generator_tokens_per_second gauge) and
// spar_learner_loss.
//
// Errors: NotFound when there is neither summary.json nor any iteration
// state in the store, DataLoss for a summary.json that does not parse,
// Unavailable when the page cannot be written. A store that cannot be
// opened is not an error: the report says so and goes on without it.
//
// Thread safety: plain functions; no shared state.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "spar/v1/bus.pb.h"
#include "storage/records.h"

namespace spar {

struct ReportOptions {
  std::string run_dir;
  std::string out;  // "" = RUN_DIR/report.html
};

struct ReportResult {
  std::string path;            // the page written
  size_t iterations = 0;       // rows in the iterations table
  size_t metrics_points = 0;   // store history points read
  bool from_summary = false;   // false: iterations came from the store
  std::vector<std::string> notes;  // what was missing ("store unavailable: ...")
};

// Reads the run folder and writes the page (atomically).
Result<ReportResult> WriteRunReport(const ReportOptions& options);

// The page from its inputs: `summary_json` is summary.json's text (or a
// document {"iterations": [...]} built from iteration states), `history`
// the store's metrics points in time order, `notes` shown at the top.
// DataLoss if summary_json does not parse as a JSON object.
Result<std::string> RenderRunReport(const std::string& summary_json, const std::vector<MetricsPoint>& history,
                                    const std::vector<std::string>& notes);

// A bus snapshot as a metrics-history point, named as described above.
MetricsPoint MetricsPointFromSnapshot(const std::string& source, int64_t unix_micros,
                                      const v1::MetricsSnapshot& snapshot);

}  // namespace spar
