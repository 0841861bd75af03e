#include "metrics/metrics.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <regex>
#include <sstream>

namespace spar {
namespace {

void AtomicAdd(std::atomic<double>& a, double by) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + by, std::memory_order_relaxed)) {
  }
}

bool ValidName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
              (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatLabels(const MetricLabels& labels, const std::string& extra_key = "",
                         const std::string& extra_value = "") {
  if (labels.empty() && extra_key.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    out += (first ? "" : ",") + k + "=\"" + EscapeLabel(v) + "\"";
    first = false;
  }
  if (!extra_key.empty()) out += (first ? "" : ",") + extra_key + "=\"" + extra_value + "\"";
  return out + "}";
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

void Counter::Increment(double by) {
  if (by < 0) return;  // counters only go up
  AtomicAdd(value_, by);
}

void Gauge::Add(double by) { AtomicAdd(value_, by); }

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double v) {
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
}

std::vector<uint64_t> Histogram::CumulativeCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    out[i] = total;
  }
  return out;
}

RateGauge::RateGauge(const Counter* counter, Gauge* gauge, std::chrono::milliseconds window)
    : counter_(counter), gauge_(gauge), window_(window) {}

void RateGauge::Update(std::chrono::steady_clock::time_point now) {
  samples_.emplace_back(now, counter_->value());
  // Keep one sample at or before the window's start, so the rate always
  // spans the whole window once the process has run that long.
  while (samples_.size() > 2 && samples_[1].first <= now - window_) samples_.pop_front();
  const auto& [t0, v0] = samples_.front();
  const double dt = std::chrono::duration<double>(now - t0).count();
  if (dt < 1e-3) return;
  gauge_->Set(std::max(0.0, samples_.back().second - v0) / dt);
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100};
}

MetricsRegistry::Family* MetricsRegistry::FamilyFor(const std::string& name, Type type,
                                                    const std::string& help) {
  if (!ValidName(name)) {
    assert(false && "invalid metric name");
    return nullptr;
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    Family f;
    f.type = type;
    f.help = help;
    it = families_.emplace(name, std::move(f)).first;
  }
  if (it->second.type != type) {
    assert(false && "metric name reused with another type");
    return nullptr;
  }
  return &it->second;
}

Counter* MetricsRegistry::GetCounter(const std::string& name, const std::string& help,
                                     const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family* f = FamilyFor(name, Type::kCounter, help);
  if (!f) return detached_counters_.emplace_back(std::make_unique<Counter>()).get();
  auto& slot = f->counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* MetricsRegistry::GetGauge(const std::string& name, const std::string& help,
                                 const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family* f = FamilyFor(name, Type::kGauge, help);
  if (!f) return detached_gauges_.emplace_back(std::make_unique<Gauge>()).get();
  auto& slot = f->gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const std::vector<double>& bounds,
                                         const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mutex_);
  Family* f = FamilyFor(name, Type::kHistogram, help);
  if (!f) return detached_histograms_.emplace_back(std::make_unique<Histogram>(bounds)).get();
  auto& slot = f->histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return slot.get();
}

std::string MetricsRegistry::PrometheusText() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  for (const auto& [name, f] : families_) {
    const char* type = f.type == Type::kCounter ? "counter" : f.type == Type::kGauge ? "gauge" : "histogram";
    std::string help = f.help;
    for (auto& c : help)
      if (c == '\n') c = ' ';
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
    for (const auto& [labels, c] : f.counters) out << name << FormatLabels(labels) << " " << FormatValue(c->value()) << "\n";
    for (const auto& [labels, g] : f.gauges) out << name << FormatLabels(labels) << " " << FormatValue(g->value()) << "\n";
    for (const auto& [labels, h] : f.histograms) {
      auto cumulative = h->CumulativeCounts();
      for (size_t i = 0; i < h->bounds().size(); ++i)
        out << name << "_bucket" << FormatLabels(labels, "le", FormatValue(h->bounds()[i])) << " "
            << cumulative[i] << "\n";
      out << name << "_bucket" << FormatLabels(labels, "le", "+Inf") << " " << cumulative.back() << "\n";
      out << name << "_sum" << FormatLabels(labels) << " " << FormatValue(h->sum()) << "\n";
      out << name << "_count" << FormatLabels(labels) << " " << h->count() << "\n";
    }
  }
  return out.str();
}

v1::MetricsSnapshot MetricsRegistry::Snapshot() const {
  std::lock_guard<std::mutex> lock(mutex_);
  v1::MetricsSnapshot snap;
  for (const auto& [name, f] : families_) {
    auto add = [&](const MetricLabels& labels, v1::Metric::Type type) {
      auto* m = snap.add_metrics();
      m->set_name(name);
      m->set_type(type);
      for (const auto& [k, v] : labels) (*m->mutable_labels())[k] = v;
      return m;
    };
    for (const auto& [labels, c] : f.counters) add(labels, v1::Metric::COUNTER)->set_value(c->value());
    for (const auto& [labels, g] : f.gauges) add(labels, v1::Metric::GAUGE)->set_value(g->value());
    for (const auto& [labels, h] : f.histograms) {
      auto* m = add(labels, v1::Metric::HISTOGRAM);
      m->set_value(h->sum());
      m->set_count(h->count());
      for (double b : h->bounds()) m->add_bucket_bounds(b);
      for (uint64_t c : h->CumulativeCounts()) m->add_bucket_counts(c);
    }
  }
  return snap;
}

Status ValidatePrometheusText(const std::string& text) {
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? ([-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|Inf|NaN))( [0-9]+)?$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  std::istringstream in(text);
  std::string line;
  int n = 0;
  std::map<std::string, std::string> types;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::smatch m;
      if (!std::regex_match(line, m, kType))
        return InvalidArgument("prometheus line " + std::to_string(n) + ": bad TYPE line: " + line);
      types[m[1]] = m[2];
      continue;
    }
    if (line[0] == '#') continue;
    std::smatch m;
    if (!std::regex_match(line, m, kSample))
      return InvalidArgument("prometheus line " + std::to_string(n) + ": not a sample: " + line);
    std::string name = m[1];
    std::string base = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      size_t len = std::strlen(suffix);
      if (base.size() > len && base.compare(base.size() - len, len, suffix) == 0 &&
          types.count(base.substr(0, base.size() - len))) {
        base = base.substr(0, base.size() - len);
        break;
      }
    }
    if (!types.count(base))
      return InvalidArgument("prometheus line " + std::to_string(n) + ": sample of '" + name +
                             "' before its TYPE line");
  }
  return Status::Ok();
}

}  // namespace spar
