// spar/metrics/metrics.h — named counters, gauges and histograms, exposed
// as Prometheus text (/metrics) and as snapshots for the ZeroMQ bus.
//
// Families are named `spar_<part>_<what>[_unit]` (e.g.
// spar_generator_tokens_total, spar_weight_sync_seconds) and created once
// through a MetricsRegistry; a family holds one series per label set.
// Updating a series is lock-free (atomics); creating one takes a lock, so
// hot paths keep the pointer they got.
//
// Thread safety: everything here may be used from any thread. Series live
// as long as their registry.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "spar/v1/bus.pb.h"

namespace spar {

using MetricLabels = std::map<std::string, std::string>;

class Counter {
 public:
  void Increment(double by = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double by);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound (Prometheus "le" buckets), +Inf last.
  std::vector<uint64_t> CumulativeCounts() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Keeps `gauge` at the per-second increase of `counter` over the last
// `window`, so a reader of /metrics sees a rate without rate(). Update()
// samples the counter; call it from the process's loop (every ~0.1-1 s).
// Until two samples span some time, the gauge stays as it was.
// Thread safety: one thread calls Update(); the series themselves are
// atomic. Neither pointer is owned; both must outlive the RateGauge.
class RateGauge {
 public:
  RateGauge(const Counter* counter, Gauge* gauge,
            std::chrono::milliseconds window = std::chrono::seconds(5));
  void Update(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

 private:
  const Counter* counter_;
  Gauge* gauge_;
  std::chrono::milliseconds window_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, double>> samples_;
};

// Buckets for latencies in seconds: 1 ms .. 100 s.
std::vector<double> LatencyBuckets();

class MetricsRegistry {
 public:
  // The same name and labels always give the same series. A name used
  // with two types, or not matching [a-zA-Z_:][a-zA-Z0-9_:]*, is a
  // programming error: the call aborts in debug builds and returns a
  // detached series otherwise (never crashes a service over a metric).
  Counter* GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge* GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram* GetHistogram(const std::string& name, const std::string& help,
                          const std::vector<double>& bounds, const MetricLabels& labels = {});

  // Prometheus text exposition format 0.0.4.
  std::string PrometheusText() const;
  // Every series, for the bus and the run store.
  v1::MetricsSnapshot Snapshot() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::map<MetricLabels, std::unique_ptr<Counter>> counters;
    std::map<MetricLabels, std::unique_ptr<Gauge>> gauges;
    std::map<MetricLabels, std::unique_ptr<Histogram>> histograms;
  };
  Family* FamilyFor(const std::string& name, Type type, const std::string& help);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
  // Series handed out for misuse, so callers always get a valid pointer.
  std::vector<std::unique_ptr<Counter>> detached_counters_;
  std::vector<std::unique_ptr<Gauge>> detached_gauges_;
  std::vector<std::unique_ptr<Histogram>> detached_histograms_;
};

// Checks that `text` parses as Prometheus text exposition (names, label
// syntax, numeric values, TYPE lines before samples). Used by tests and by
// `spar top` to read scraped endpoints. InvalidArgument naming the line.
Status ValidatePrometheusText(const std::string& text);

}  // namespace spar
