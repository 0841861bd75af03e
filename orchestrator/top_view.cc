#include "orchestrator/top_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <string_view>

#include "metrics/telemetry.h"

namespace spar {
namespace {

namespace mn = metric_names;
using MetricMap = std::map<std::string, v1::Metric>;

constexpr const char* kRed = "\x1b[31m";
constexpr const char* kGreen = "\x1b[32m";
constexpr const char* kYellow = "\x1b[33m";
constexpr const char* kBold = "\x1b[1m";
constexpr const char* kReset = "\x1b[0m";

std::string SeriesKey(const v1::Metric& m) {
  // Proto maps have no order; a std::map gives every snapshot the same key.
  std::map<std::string, std::string> labels(m.labels().begin(), m.labels().end());
  std::string key = m.name() + "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) key += ",";
    key += k + "=" + v;
    first = false;
  }
  return key + "}";
}

bool LabelsMatch(const v1::Metric& m, const MetricLabels& filter) {
  for (const auto& [k, v] : filter) {
    auto it = m.labels().find(k);
    if (it == m.labels().end() || it->second != v) return false;
  }
  return true;
}

// Sum of the value (or, for histograms with `count`, the count) of the
// series named `name` whose labels include `filter`.
std::optional<double> Sum(const MetricMap& metrics, const std::string& name, const MetricLabels& filter,
                          bool count = false) {
  std::optional<double> total;
  // Keys start with the name and '{', so the matching series are adjacent.
  for (auto it = metrics.lower_bound(name + "{"); it != metrics.end(); ++it) {
    if (it->first.compare(0, name.size() + 1, name + "{") != 0) break;
    if (!LabelsMatch(it->second, filter)) continue;
    total = total.value_or(0.0) + (count ? static_cast<double>(it->second.count()) : it->second.value());
  }
  return total;
}

// Bucket counts of the matching histogram series, summed (series with other
// bounds than the first are left out).
bool SumBuckets(const MetricMap& metrics, const std::string& name, const MetricLabels& filter,
                std::vector<double>* bounds, std::vector<uint64_t>* counts) {
  bool found = false;
  for (auto it = metrics.lower_bound(name + "{"); it != metrics.end(); ++it) {
    if (it->first.compare(0, name.size() + 1, name + "{") != 0) break;
    const v1::Metric& m = it->second;
    if (m.type() != v1::Metric::HISTOGRAM || !LabelsMatch(m, filter)) continue;
    if (!found) {
      bounds->assign(m.bucket_bounds().begin(), m.bucket_bounds().end());
      counts->assign(static_cast<size_t>(m.bucket_counts_size()), 0);
      found = true;
    }
    if (static_cast<size_t>(m.bucket_counts_size()) != counts->size()) continue;
    for (int i = 0; i < m.bucket_counts_size(); ++i) (*counts)[static_cast<size_t>(i)] += m.bucket_counts(i);
  }
  return found;
}

std::string Format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// A number in at most ~8 columns, precision by magnitude.
std::string Num(std::optional<double> v) {
  if (!v || !std::isfinite(*v)) return "-";
  const double a = std::fabs(*v);
  if (a == 0) return "0";
  if (a < 0.01) return Format("%.1e", *v);
  if (a < 10) return Format("%.2f", *v);
  if (a < 1000) return Format("%.1f", *v);
  if (a < 1e6) return Format("%.0f", *v);
  if (a < 1e9) return Format("%.2fM", *v / 1e6);
  return Format("%.2fG", *v / 1e9);
}

// Losses: small numbers whose 3rd and 4th decimals matter.
std::string Precise(std::optional<double> v) {
  if (v && std::isfinite(*v) && std::fabs(*v) >= 0.01 && std::fabs(*v) < 100) return Format("%.4f", *v);
  return Num(v);
}

std::string Int(std::optional<double> v) {
  if (!v || !std::isfinite(*v)) return "-";
  return Format("%.0f", *v);
}

std::string Percent(std::optional<double> fraction) {
  if (!fraction || !std::isfinite(*fraction)) return "-";
  return Format("%.0f", *fraction * 100.0) + "%";
}

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  return buf;
}

const char* StateColor(SourceState s) {
  switch (s) {
    case SourceState::kUp: return kGreen;
    case SourceState::kStopped: return kYellow;
    default: return kRed;
  }
}

// One line of the frame, cut at `width` visible columns; colors add escapes
// that take no columns.
class Line {
 public:
  Line(int width, bool color) : width_(width), color_(color) {}
  Line& Add(std::string_view text, const char* ansi = nullptr) {
    const int room = width_ - visible_;
    if (room <= 0 || text.empty()) return *this;
    if (static_cast<int>(text.size()) > room) text = text.substr(0, static_cast<size_t>(room));
    if (color_ && ansi) out_ += ansi;
    out_ += text;
    if (color_ && ansi) out_ += kReset;
    visible_ += static_cast<int>(text.size());
    return *this;
  }
  // `text` padded to `w` columns (right-aligned for numbers).
  Line& Cell(const std::string& text, int w, bool right = true, const char* ansi = nullptr) {
    std::string t = text.size() > static_cast<size_t>(w) ? text.substr(0, static_cast<size_t>(w)) : text;
    const std::string pad(static_cast<size_t>(w) - t.size(), ' ');
    if (right) Add(pad);
    Add(t, ansi);
    if (!right) Add(pad);
    return *this;
  }
  int visible() const { return visible_; }
  std::string Finish() {
    // Trailing blanks only make the frame wrap on narrow terminals.
    while (!out_.empty() && out_.back() == ' ') out_.pop_back();
    return out_ + "\n";
  }

 private:
  int width_;
  bool color_;
  int visible_ = 0;
  std::string out_;
};

}  // namespace

const char* SourceStateName(SourceState state) {
  switch (state) {
    case SourceState::kUp: return "up";
    case SourceState::kDown: return "down";
    case SourceState::kStopped: return "stopped";
    case SourceState::kFailed: return "failed";
  }
  return "?";
}

std::optional<double> HistogramQuantile(double q, const std::vector<double>& bounds,
                                        const std::vector<uint64_t>& cumulative_counts) {
  if (cumulative_counts.empty() || cumulative_counts.back() == 0) return std::nullopt;
  q = std::clamp(q, 0.0, 1.0);
  const double total = static_cast<double>(cumulative_counts.back());
  const double rank = q * total;
  size_t i = 0;
  while (i < cumulative_counts.size() && static_cast<double>(cumulative_counts[i]) < rank) ++i;
  if (i >= bounds.size()) {
    // In the +Inf bucket: the largest finite bound is the best we know.
    if (bounds.empty()) return std::nullopt;
    return bounds.back();
  }
  const double lower = i == 0 ? std::min(0.0, bounds[0]) : bounds[i - 1];
  const double upper = bounds[i];
  const double below = i == 0 ? 0.0 : static_cast<double>(cumulative_counts[i - 1]);
  const double in_bucket = static_cast<double>(cumulative_counts[i]) - below;
  if (in_bucket <= 0) return upper;
  return lower + (upper - lower) * (rank - below) / in_bucket;
}

std::string FormatDuration(double seconds) { return Duration(seconds); }

std::string ProgressLine(const std::string& label, double done, double total, std::optional<double> per_second,
                         const std::string& unit, const std::string& suffix, int width) {
  const double fraction = total > 0 ? std::clamp(done / total, 0.0, 1.0) : 0.0;
  std::string eta = "-";
  if (total > 0 && done >= total) {
    eta = "0s";
  } else if (per_second && *per_second > 0 && total > 0) {
    eta = Duration((total - done) / *per_second);
  }
  const std::string right = " " + Int(done) + "/" + Int(total) + " " + unit + "  " +
                            (per_second ? Num(per_second) : std::string("-")) + "/s  ETA " + eta + suffix;
  const int bar = std::clamp(width - static_cast<int>(label.size() + right.size()) - 3, 10, 50);
  const int filled = std::clamp(static_cast<int>(std::lround(fraction * bar)), 0, bar);
  std::string line = label + " [" + std::string(static_cast<size_t>(filled), '#') +
                     std::string(static_cast<size_t>(bar - filled), '-') + "]" + right;
  if (width > 0 && static_cast<int>(line.size()) > width) line.resize(static_cast<size_t>(width));
  return line;
}

TopView::TopView(TopViewOptions options) : options_(options) {
  options_.width = std::max(options_.width, 40);
}

void TopView::Observe(const BusMessage& message, int64_t now_micros) { Observe(message.envelope, now_micros); }

void TopView::Observe(const v1::BusEnvelope& envelope, int64_t now_micros) {
  if (envelope.source().empty() || envelope.has_actor()) return;
  Source& s = sources_[envelope.source()];
  if (!envelope.service().empty()) s.service = envelope.service();
  s.last_seen_micros = std::max(s.last_seen_micros, now_micros);
  if (envelope.has_lifecycle()) {
    const auto& l = envelope.lifecycle();
    if (l.kind() == v1::LifecycleEvent::STOPPED || l.kind() == v1::LifecycleEvent::FAILED) {
      s.terminal = l.kind();
    } else {
      s.terminal.reset();  // a restarted process speaks again
    }
    if (!l.address().empty()) s.address = l.address();
    if (l.kind() != v1::LifecycleEvent::HEARTBEAT) s.detail = l.detail();
  }
  if (envelope.has_metrics()) {
    auto metrics = std::make_shared<MetricMap>();
    for (const auto& m : envelope.metrics().metrics()) (*metrics)[SeriesKey(m)] = m;
    const int64_t t = envelope.unix_micros() > 0 ? envelope.unix_micros() : now_micros;
    // Out-of-order delivery would give negative rates: keep time order.
    if (!s.history.empty() && t <= s.history.back().unix_micros) {
      s.history.back().metrics = std::move(metrics);
    } else {
      s.history.push_back({t, std::move(metrics)});
    }
    const int64_t horizon = s.history.back().unix_micros - options_.rate_window.count() * 1000;
    while (s.history.size() > 2 && s.history[1].unix_micros <= horizon) s.history.pop_front();
  }
}

void TopView::Expect(const std::string& source, const std::string& service) {
  if (source.empty()) return;
  Source& s = sources_[source];  // last_seen_micros stays 0 (never heard) for a new one
  if (s.service.empty()) s.service = service;
}

size_t TopView::heard_count() const {
  size_t n = 0;
  for (const auto& [name, s] : sources_) n += s.last_seen_micros > 0;
  return n;
}

std::vector<std::string> TopView::Sources() const {
  std::vector<std::string> out;
  for (const auto& [name, s] : sources_) out.push_back(name);
  return out;
}

const TopView::Source* TopView::Find(const std::string& source) const {
  auto it = sources_.find(source);
  return it == sources_.end() ? nullptr : &it->second;
}

const TopView::Snapshot* TopView::Oldest(const Source& source) {
  return source.history.empty() ? nullptr : &source.history.front();
}

const TopView::Snapshot* TopView::Newest(const Source& source) {
  return source.history.empty() ? nullptr : &source.history.back();
}

SourceState TopView::StateOfSource(const Source& s, int64_t now_micros) const {
  if (s.terminal) return *s.terminal == v1::LifecycleEvent::FAILED ? SourceState::kFailed : SourceState::kStopped;
  if (now_micros - s.last_seen_micros > options_.down_after.count() * 1000) return SourceState::kDown;
  return SourceState::kUp;
}

SourceState TopView::StateOf(const std::string& source, int64_t now_micros) const {
  const Source* s = Find(source);
  return s ? StateOfSource(*s, now_micros) : SourceState::kDown;
}

std::optional<double> TopView::Latest(const std::string& source, const std::string& name,
                                      const MetricLabels& labels) const {
  const Source* s = Find(source);
  if (!s || s->history.empty()) return std::nullopt;
  return Sum(*Newest(*s)->metrics, name, labels);
}

std::optional<double> TopView::Rate(const std::string& source, const std::string& name,
                                    const MetricLabels& labels) const {
  const Source* s = Find(source);
  if (!s || s->history.size() < 2) return std::nullopt;
  const Snapshot* a = Oldest(*s);
  const Snapshot* b = Newest(*s);
  const auto va = Sum(*a->metrics, name, labels);
  const auto vb = Sum(*b->metrics, name, labels);
  const double dt = static_cast<double>(b->unix_micros - a->unix_micros) / 1e6;
  if (!va || !vb || dt <= 0 || *vb < *va) return std::nullopt;
  return (*vb - *va) / dt;
}

std::optional<double> TopView::WindowQuantile(const std::string& source, const std::string& name, double q,
                                              const MetricLabels& labels) const {
  const Source* s = Find(source);
  if (!s || s->history.empty()) return std::nullopt;
  std::vector<double> bounds, old_bounds;
  std::vector<uint64_t> counts, old_counts;
  if (!SumBuckets(*Newest(*s)->metrics, name, labels, &bounds, &counts)) return std::nullopt;
  if (s->history.size() >= 2 && SumBuckets(*Oldest(*s)->metrics, name, labels, &old_bounds, &old_counts) &&
      old_counts.size() == counts.size()) {
    for (size_t i = 0; i < counts.size(); ++i) counts[i] = counts[i] >= old_counts[i] ? counts[i] - old_counts[i] : 0;
  }
  return HistogramQuantile(q, bounds, counts);
}

std::vector<std::string> TopView::SourcesOf(const std::string& service) const {
  std::vector<std::string> out;
  for (const auto& [name, s] : sources_)
    if (s.service == service) out.push_back(name);
  return out;
}

const TopView::Source* TopView::Orchestrator(int64_t now_micros, std::string* name) const {
  const Source* any = nullptr;
  for (const auto& [n, s] : sources_) {
    if (s.service != "orchestrator") continue;
    if (StateOfSource(s, now_micros) == SourceState::kUp) {
      if (name) *name = n;
      return &s;
    }
    if (!any) {
      any = &s;
      if (name) *name = n;
    }
  }
  return any;
}

std::vector<GeneratorRow> TopView::Generators(int64_t now_micros) const {
  std::vector<GeneratorRow> rows;
  for (const std::string& source : SourcesOf("generator")) {
    const Source& s = *Find(source);
    std::set<std::string> ids;
    if (const Snapshot* n = Newest(s)) {
      for (const auto& [key, m] : *n->metrics) {
        if (m.name().rfind("spar_generator_", 0) != 0) continue;
        auto it = m.labels().find("generator");
        if (it != m.labels().end()) ids.insert(it->second);
      }
    }
    if (ids.empty()) ids.insert("");
    for (const std::string& id : ids) {
      GeneratorRow row;
      row.source = source;
      row.generator = id.empty() ? source : id;
      row.state = StateOfSource(s, now_micros);
      MetricLabels f;
      if (!id.empty()) f["generator"] = id;
      row.tokens_per_second = Rate(source, mn::kGeneratorTokensTotal, f);
      if (!row.tokens_per_second) row.tokens_per_second = Latest(source, mn::kGeneratorTokensPerSecond, f);
      row.rollouts_per_second = Rate(source, mn::kGeneratorRolloutsTotal, f);
      row.busy_slots = Latest(source, mn::kGeneratorBusySlots, f);
      row.max_slots = Latest(source, mn::kGeneratorMaxSlots, f);
      if (row.busy_slots && row.max_slots && *row.max_slots > 0) row.occupancy = *row.busy_slots / *row.max_slots;
      row.queue_depth = Latest(source, mn::kGeneratorQueueDepth, f);
      row.policy_version = Latest(source, mn::kGeneratorPolicyVersion, f);
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

BottleneckEstimate TopView::Bottleneck(int64_t now_micros) const {
  // A stage whose every service is gone stalls everything behind it.
  const std::pair<const char*, const char*> kStages[] = {
      {"generator", "generation"}, {"scorer", "scoring"}, {"learner", "training"}};
  for (const auto& [service, stage] : kStages) {
    const auto names = SourcesOf(service);
    if (names.empty()) continue;
    bool any_up = false;
    for (const auto& n : names) any_up |= StateOf(n, now_micros) == SourceState::kUp;
    if (!any_up)
      return {stage, names.size() == 1 ? names[0] + " is " + SourceStateName(StateOf(names[0], now_micros))
                                       : "every " + std::string(service) + " is down"};
  }

  // Prompts pile up in front of the slowest stage.
  std::string orch_name;
  if (const Source* orch = Orchestrator(now_micros, &orch_name);
      orch && StateOfSource(*orch, now_micros) == SourceState::kUp) {
    const std::pair<const char*, const char*> kQueues[] = {
        {"generating", "generation"}, {"scoring", "scoring"}, {"training", "training"}};
    double best = 0;
    BottleneckEstimate out;
    for (const auto& [label, stage] : kQueues) {
      const auto n = Latest(orch_name, mn::kOrchestratorPrompts, {{"stage", label}});
      if (n && *n > best) {
        best = *n;
        out = {stage, Int(*n) + " prompts " + label};
      }
    }
    if (best > 0) return out;
  }

  // Without stage counts: is the learner starving, are generators full?
  std::optional<double> idle;
  int learners = 0;
  for (const auto& n : SourcesOf("learner")) {
    if (auto r = Rate(n, mn::kLearnerDataWaitSecondsTotal)) {
      idle = idle.value_or(0) + std::min(*r, 1.0);
      ++learners;
    }
  }
  if (idle) *idle /= learners;
  double occupancy_sum = 0, queued = 0;
  int with_occupancy = 0;
  for (const auto& row : Generators(now_micros)) {
    if (row.state != SourceState::kUp) continue;
    if (row.occupancy) {
      occupancy_sum += *row.occupancy;
      ++with_occupancy;
    }
    queued += row.queue_depth.value_or(0);
  }
  const std::optional<double> occupancy =
      with_occupancy ? std::optional<double>(occupancy_sum / with_occupancy) : std::nullopt;
  if (idle && *idle >= 0.5) {
    if ((occupancy && *occupancy >= 0.8) || queued > 0 || SourcesOf("scorer").empty())
      return {"generation", "learner idle " + Percent(idle) + ", generators " + Percent(occupancy) + " busy"};
    return {"scoring", "learner idle " + Percent(idle) + ", generators only " + Percent(occupancy) + " busy"};
  }
  if (idle && *idle < 0.1) return {"training", "learner idle only " + Percent(idle)};
  if (occupancy && *occupancy >= 0.9 && queued > 0)
    return {"generation", "generators " + Percent(occupancy) + " busy, " + Int(queued) + " queued"};
  return {"", "not enough data yet"};
}

std::string TopView::Render(int64_t now_micros) const {
  const int w = options_.width;
  const bool c = options_.color;
  std::string frame;
  auto line = [&] { return Line(w, c); };

  size_t up = 0;
  for (const auto& [n, s] : sources_) up += StateOfSource(s, now_micros) == SourceState::kUp;
  frame += line()
               .Add("spar top", kBold)
               .Add("  " + std::to_string(sources_.size()) + " sources, " + std::to_string(up) + " up")
               .Finish();

  // Iteration progress.
  std::string orch_name;
  const Source* orch = Orchestrator(now_micros, &orch_name);
  if (orch && !orch->history.empty()) {
    const auto iteration = Latest(orch_name, mn::kOrchestratorIteration);
    const auto iterations = Latest(orch_name, mn::kOrchestratorIterations);
    double total = 0;
    std::map<std::string, std::optional<double>> stage;
    for (const char* st : mn::kOrchestratorStages) {
      stage[st] = Latest(orch_name, mn::kOrchestratorPrompts, {{"stage", st}});
      total += stage[st].value_or(0);
    }
    const double done = stage["done"].value_or(0);
    std::string left = "iteration " + (iteration ? Int(*iteration + 1) : std::string("-"));
    if (iterations) left += "/" + Int(*iterations);
    std::string right;
    std::string eta = "-";
    double fraction = total > 0 ? done / total : 0;
    if (total > 0) {
      auto rate = Rate(orch_name, mn::kOrchestratorPromptsTotal);
      if (!rate || *rate <= 0) rate = Rate(orch_name, mn::kOrchestratorPrompts, {{"stage", "done"}});
      if (done >= total) {
        eta = "0s";
      } else if (rate && *rate > 0) {
        eta = Duration((total - done) / *rate);
      }
      right = Format(" %5.1f%%", fraction * 100) + "  " + Int(done) + "/" + Int(total) + " prompts  ETA " + eta;
    } else {
      right = "  no prompts yet";
    }
    const int bar = std::clamp(w - static_cast<int>(left.size() + right.size()) - 4, 10, 60);
    const int filled = std::clamp(static_cast<int>(std::lround(fraction * bar)), 0, bar);
    Line l = line();
    l.Add(left + "  [")
        .Add(std::string(static_cast<size_t>(filled), '#'), kGreen)
        .Add(std::string(static_cast<size_t>(bar - filled), '-'))
        .Add("]")
        .Add(right);
    if (StateOfSource(*orch, now_micros) != SourceState::kUp)
      l.Add("  orchestrator " + std::string(SourceStateName(StateOfSource(*orch, now_micros))), kRed);
    frame += l.Finish();
    Line stages = line();
    stages.Add("prompts  ");
    for (const char* st : mn::kOrchestratorStages) stages.Add(std::string(st) + " " + Int(stage[st]) + "  ");
    frame += stages.Finish();
    // How long prompts wait in front of each stage, and how much of the
    // time scoring and training starve (waiting on the stage before).
    Line waits = line();
    waits.Add("waits    ");
    bool any_wait = false;
    for (const char* st : {"generation", "scoring", "training"}) {
      const auto p50 = WindowQuantile(orch_name, mn::kOrchestratorStageWaitSeconds, 0.5, {{"stage", st}});
      auto idle = Rate(orch_name, mn::kOrchestratorStageIdleSecondsTotal, {{"stage", st}});
      if (!p50 && !idle) continue;
      any_wait = true;
      waits.Add(std::string(st) + " p50 " + Num(p50) + " s");
      if (idle) waits.Add(" idle " + Percent(std::min(*idle, 1.0)));
      waits.Add("  ");
    }
    if (any_wait) frame += waits.Finish();
  } else {
    frame += line().Add("iteration -  (no orchestrator metrics seen)").Finish();
  }
  const BottleneckEstimate b = Bottleneck(now_micros);
  {
    Line l = line();
    l.Add("bottleneck  ");
    if (b.stage.empty()) {
      l.Add("? (" + b.reason + ")");
    } else {
      l.Add(b.stage, c ? kYellow : nullptr).Add(": " + b.reason);
    }
    frame += l.Finish();
  }

  // Name column: as wide as the longest name, within limits.
  int name_w = 12;
  for (const auto& [n, s] : sources_) name_w = std::max(name_w, static_cast<int>(n.size()) + 1);
  for (const auto& row : Generators(now_micros))
    name_w = std::max(name_w, static_cast<int>(row.generator.size()) + 1);
  name_w = std::min(name_w, std::max(12, w / 4));

  const auto rows = Generators(now_micros);
  if (!rows.empty()) {
    frame += "\n";
    Line h = line();
    h.Cell("GENERATOR", name_w, false, kBold).Cell("STATE", 8, false, kBold);
    for (const char* col : {"TOK/S", "ROLL/S", "OCC", "QUEUE", "VERSION"}) h.Cell(col, 9, true, kBold);
    frame += h.Finish();
    for (const auto& r : rows) {
      const bool live = r.state == SourceState::kUp;
      Line l = line();
      l.Cell(r.generator, name_w, false).Cell(SourceStateName(r.state), 8, false, StateColor(r.state));
      l.Cell(live ? Num(r.tokens_per_second) : "-", 9).Cell(live ? Num(r.rollouts_per_second) : "-", 9);
      std::string occ = r.occupancy ? Percent(r.occupancy) : (r.busy_slots ? Int(r.busy_slots) + " busy" : "-");
      l.Cell(live ? occ : "-", 9).Cell(live ? Int(r.queue_depth) : "-", 9).Cell(Int(r.policy_version), 9);
      frame += l.Finish();
    }
    for (const auto& r : rows) {
      MetricLabels f;
      if (r.generator != r.source) f["generator"] = r.generator;
      const auto applied = Latest(r.source, mn::kWeightSyncAppliedTotal, f);
      const Source* s = Find(r.source);
      const auto count = s && !s->history.empty()
                             ? Sum(*Newest(*s)->metrics, mn::kWeightSyncSeconds, f, /*count=*/true)
                             : std::nullopt;
      if (!count || *count <= 0) continue;
      const auto seconds = Latest(r.source, mn::kWeightSyncSeconds, f);
      const auto bytes = Latest(r.source, mn::kWeightSyncBytesTotal, f);
      std::optional<double> gbps;
      if (seconds && bytes && *seconds > 0) gbps = *bytes / *seconds / 1e9;
      Line l = line();
      l.Add("weight sync " + r.generator + ": " + Int(applied ? applied : count) + " versions, mean " +
            Num(*seconds / *count) + " s, " + Num(bytes ? std::optional<double>(*bytes / 1e9) : std::nullopt) +
            " GB at " + Num(gbps) + " GB/s");
      frame += l.Finish();
    }
  }

  const auto scorers = SourcesOf("scorer");
  if (!scorers.empty()) {
    frame += "\n";
    Line h = line();
    h.Cell("SCORER", name_w, false, kBold).Cell("STATE", 8, false, kBold);
    for (const char* col : {"GROUPS/S", "RESP/S", "P50 S", "P95 S", "QUEUE"}) h.Cell(col, 9, true, kBold);
    frame += h.Finish();
    for (const auto& n : scorers) {
      const SourceState st = StateOf(n, now_micros);
      const bool live = st == SourceState::kUp;
      Line l = line();
      l.Cell(n, name_w, false).Cell(SourceStateName(st), 8, false, StateColor(st));
      l.Cell(live ? Num(Rate(n, mn::kScorerGroupsTotal)) : "-", 9)
          .Cell(live ? Num(Rate(n, mn::kScorerResponsesTotal)) : "-", 9)
          .Cell(live ? Num(WindowQuantile(n, mn::kScorerLatencySeconds, 0.5)) : "-", 9)
          .Cell(live ? Num(WindowQuantile(n, mn::kScorerLatencySeconds, 0.95)) : "-", 9)
          .Cell(live ? Int(Latest(n, mn::kScorerQueueDepth)) : "-", 9);
      frame += l.Finish();
    }
  }

  const auto learners = SourcesOf("learner");
  if (!learners.empty()) {
    frame += "\n";
    Line h = line();
    h.Cell("LEARNER", name_w, false, kBold).Cell("STATE", 8, false, kBold);
    for (const char* col : {"STEP", "LOSS", "LR", "GRAD", "TOK/S", "IDLE"}) h.Cell(col, 9, true, kBold);
    frame += h.Finish();
    for (const auto& n : learners) {
      const SourceState st = StateOf(n, now_micros);
      const bool live = st == SourceState::kUp;
      auto tokens = Rate(n, mn::kLearnerTokensTotal);
      if (!tokens) tokens = Latest(n, mn::kLearnerTokensPerSecond);
      auto idle = Rate(n, mn::kLearnerDataWaitSecondsTotal);
      if (idle) idle = std::min(*idle, 1.0);
      Line l = line();
      l.Cell(n, name_w, false).Cell(SourceStateName(st), 8, false, StateColor(st));
      l.Cell(Int(Latest(n, mn::kLearnerStep)), 9)
          .Cell(Precise(Latest(n, mn::kLearnerLoss)), 9)
          .Cell(Num(Latest(n, mn::kLearnerLearningRate)), 9)
          .Cell(Num(Latest(n, mn::kLearnerGradNorm)), 9)
          .Cell(live ? Num(tokens) : "-", 9)
          .Cell(live ? Percent(idle) : "-", 9);
      frame += l.Finish();
    }
  }

  // Everything else (orchestrators, unknown kinds): name and state.
  std::vector<std::string> others;
  for (const auto& [n, s] : sources_)
    if (s.service != "generator" && s.service != "scorer" && s.service != "learner") others.push_back(n);
  if (!others.empty()) {
    frame += "\n";
    Line h = line();
    h.Cell("OTHER", name_w, false, kBold).Cell("STATE", 8, false, kBold).Cell("SERVICE", 14, false, kBold);
    frame += h.Finish();
    for (const auto& n : others) {
      const Source& s = *Find(n);
      const SourceState st = StateOfSource(s, now_micros);
      Line l = line();
      l.Cell(n, name_w, false)
          .Cell(SourceStateName(st), 8, false, StateColor(st))
          .Cell(s.service.empty() ? "-" : s.service, 14, false)
          .Add(s.detail);
      frame += l.Finish();
    }
  }
  return frame;
}

}  // namespace spar
