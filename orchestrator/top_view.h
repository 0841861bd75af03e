// spar/orchestrator/top_view.h — the model behind `spar top`: what every
// service on the bus said last, turned into one text frame.
//
// Fed BusMessages (metrics snapshots and lifecycle events) as they arrive,
// TopView keeps per source the snapshots of the last `rate_window` and the
// time it last heard from it, and from those computes counter rates
// (tokens/s, rollouts/s, groups/s), histogram quantiles over the window,
// occupancy, and which pipeline stage holds the run back now. A source is
// down when nothing arrived from it for `down_after` (a killed process) or
// it said STOPPED / FAILED.
//
// Times: `now_micros` is the monitor's clock (unix micros) when a message
// arrived or a frame is drawn; it decides up/down. Rates use the
// publishers' own envelope timestamps, so a late delivery does not skew them.
//
// The metric names it reads are those in metrics/telemetry.h.
//
// Thread safety: none; one thread feeds and renders (spar top's loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "metrics/metrics.h"
#include "spar/v1/bus.pb.h"

namespace spar {

struct TopViewOptions {
  std::chrono::milliseconds down_after{5000};    // silence before a source is down
  std::chrono::milliseconds rate_window{10000};  // rates and quantiles look back this far
  int width = 100;                               // columns of the frame (min 40)
  bool color = false;                            // ANSI colors (a terminal)
};

enum class SourceState { kUp, kDown, kStopped, kFailed };
const char* SourceStateName(SourceState state);  // "up", "down", "stopped", "failed"

// The stage that holds the run back now: "generation", "scoring",
// "training", or "" when there is not enough to tell; `reason` says why in
// a few words ("142 prompts waiting in scoring", "learner idle 80%").
struct BottleneckEstimate {
  std::string stage;
  std::string reason;
};

// One generator row of the frame (one per generator label value a source
// reports; a generator process reports one).
struct GeneratorRow {
  std::string source;
  std::string generator;  // label value, or the source name
  SourceState state = SourceState::kUp;
  std::optional<double> tokens_per_second;
  std::optional<double> rollouts_per_second;
  std::optional<double> busy_slots;
  std::optional<double> max_slots;
  std::optional<double> occupancy;  // busy / max, 0..1
  std::optional<double> queue_depth;
  std::optional<double> policy_version;
};

// The quantile q (0..1) of a Prometheus-style histogram (cumulative counts
// per upper bound, +Inf last), interpolated linearly inside a bucket as
// Prometheus' histogram_quantile does. nullopt for an empty histogram.
std::optional<double> HistogramQuantile(double q, const std::vector<double>& bounds,
                                        const std::vector<uint64_t>& cumulative_counts);

// One progress line as `spar run` draws it: "<label> [####------]
// <done>/<total> <unit>  <rate>/s  ETA <eta><suffix>", cut to `width`
// columns (no newline). The ETA is "-" without a positive rate; the bar is
// full when done >= total.
std::string ProgressLine(const std::string& label, double done, double total, std::optional<double> per_second,
                         const std::string& unit, const std::string& suffix, int width);

// Seconds as "42s", "3m07s", "2h05m" ("-" for negative or not finite).
std::string FormatDuration(double seconds);

class TopView {
 public:
  explicit TopView(TopViewOptions options = {});
  // The frame's width from the next Render on (min 40), e.g. after a resize.
  void set_width(int width) { options_.width = width < 40 ? 40 : width; }

  // Takes one message received at `now_micros`. Actor messages and
  // envelopes without a source are ignored.
  void Observe(const BusMessage& message, int64_t now_micros);
  void Observe(const v1::BusEnvelope& envelope, int64_t now_micros);

  // Declares a source that should be there (e.g. from RUN_DIR/services.json)
  // before anything is heard from it: it shows as down until it speaks, so
  // a service that died before the monitor started is not simply missing.
  void Expect(const std::string& source, const std::string& service);

  // Sources heard from or expected so far (down ones included).
  size_t source_count() const { return sources_.size(); }
  // Sources heard from at least once (expected ones that never spoke are not).
  size_t heard_count() const;
  std::vector<std::string> Sources() const;
  // kDown for a source never seen.
  SourceState StateOf(const std::string& source, int64_t now_micros) const;

  // The newest value of `name` at `source`, summed over the series whose
  // labels include `labels` (histograms: their sum). nullopt if none.
  std::optional<double> Latest(const std::string& source, const std::string& name,
                               const MetricLabels& labels = {}) const;
  // Per-second increase of counter `name` (summed likewise) over the rate
  // window; nullopt with fewer than two snapshots or after a reset.
  std::optional<double> Rate(const std::string& source, const std::string& name,
                             const MetricLabels& labels = {}) const;
  // Quantile of histogram `name` over the observations of the rate window.
  std::optional<double> WindowQuantile(const std::string& source, const std::string& name, double q,
                                       const MetricLabels& labels = {}) const;

  std::vector<GeneratorRow> Generators(int64_t now_micros) const;
  BottleneckEstimate Bottleneck(int64_t now_micros) const;

  // One frame: header, iteration progress bar with ETA, stage counts,
  // bottleneck, then generator, weight-sync, scorer and learner sections.
  // Every line is at most `width` visible columns; lines end with '\n'.
  std::string Render(int64_t now_micros) const;

 private:
  using MetricMap = std::map<std::string, v1::Metric>;  // series key -> metric
  struct Snapshot {
    int64_t unix_micros = 0;
    std::shared_ptr<const MetricMap> metrics;
  };
  struct Source {
    std::string service;
    int64_t last_seen_micros = 0;
    std::optional<v1::LifecycleEvent::Kind> terminal;  // STOPPED / FAILED, until it speaks again
    std::string address;
    std::string detail;
    std::deque<Snapshot> history;  // oldest first; the last is the newest
  };

  const Source* Find(const std::string& source) const;
  SourceState StateOfSource(const Source& source, int64_t now_micros) const;
  // The window's oldest and newest snapshots (the same one when only one).
  static const Snapshot* Oldest(const Source& source);
  static const Snapshot* Newest(const Source& source);
  std::vector<std::string> SourcesOf(const std::string& service) const;
  // The first orchestrator source that is up (or any, if none is up).
  const Source* Orchestrator(int64_t now_micros, std::string* name) const;

  TopViewOptions options_;
  std::map<std::string, Source> sources_;
};

}  // namespace spar
