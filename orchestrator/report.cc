#include "orchestrator/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "storage/run_store.h"

namespace spar {
namespace {

using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// Numbers as a reader wants them in a table: integers whole, others with
// six significant digits, tiny ones (learning rates) in exponent form.
std::string Number(double v) {
  if (!std::isfinite(v)) return "-";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return Fmt("%.0f", v);
  return Fmt(std::fabs(v) < 0.001 ? "%.3g" : "%.6g", v);
}

double Field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return kNaN;
  return it->get<double>();
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
};

// A "nice" step (1, 2 or 5 times a power of ten) giving about `n` ticks.
double NiceStep(double range, int n) {
  if (!(range > 0)) return 1;
  const double raw = range / n;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

std::string TickLabel(double v, double step) {
  if (std::fabs(v) < step * 1e-9) v = 0;  // no "-0" from rounding
  if (step >= 1 && std::fabs(v) < 1e6) return Fmt("%.0f", v);
  if (std::fabs(v) >= 1e6) return Fmt("%.3g", v);
  const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(step))), 0, 8);
  char fmt[16];
  std::snprintf(fmt, sizeof(fmt), "%%.%df", decimals);
  return Fmt(fmt, v);
}

// An inline SVG chart: lines (with point markers) or, with `bars`, one bar
// group per x value. Empty series give a "no data" figure.
std::string Chart(const std::string& id, const std::string& title, const std::string& x_label,
                  const std::string& y_label, const std::vector<Series>& series, bool bars = false) {
  constexpr double W = 640, H = 300, L = 70, R = 20, T = 48, B = 46;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  size_t n = 0;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x), ymin = std::min(ymin, y), ymax = std::max(ymax, y);
      ++n;
    }
  std::string svg = "<figure id=\"" + id + "\"><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 " +
                    Fmt("%.0f", W) + " " + Fmt("%.0f", H) + "\" width=\"" + Fmt("%.0f", W) + "\" height=\"" +
                    Fmt("%.0f", H) + "\" role=\"img\" aria-label=\"" + Escape(title) + "\">";
  svg += "<text x=\"" + Fmt("%.0f", W / 2) + "\" y=\"20\" text-anchor=\"middle\" class=\"title\">" + Escape(title) +
         "</text>";
  if (n == 0) {
    svg += "<text x=\"" + Fmt("%.0f", W / 2) + "\" y=\"" + Fmt("%.0f", H / 2) +
           "\" text-anchor=\"middle\" class=\"empty\">no data</text></svg></figure>\n";
    return svg;
  }
  if (bars) {
    xmin -= 0.5, xmax += 0.5;
  }
  if (ymin > 0) ymin = 0;  // rates, seconds, win rates: the axis starts at 0
  if (ymax <= ymin) ymax = ymin + 1;
  if (xmax <= xmin) xmin -= 0.5, xmax += 0.5;
  const double ystep = NiceStep(ymax - ymin, 5);
  ymin = std::floor(ymin / ystep) * ystep;
  ymax = std::ceil(ymax / ystep) * ystep;
  if (ymax <= ymin) ymax = ymin + ystep;
  auto px = [&](double x) { return L + (x - xmin) / (xmax - xmin) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - ymin) / (ymax - ymin) * (H - T - B); };

  // Grid and y ticks.
  for (double y = ymin; y <= ymax + ystep / 2; y += ystep) {
    svg += "<line class=\"grid\" x1=\"" + Fmt("%.1f", L) + "\" x2=\"" + Fmt("%.1f", W - R) + "\" y1=\"" +
           Fmt("%.1f", py(y)) + "\" y2=\"" + Fmt("%.1f", py(y)) + "\"/>";
    svg += "<text class=\"tick\" x=\"" + Fmt("%.1f", L - 6) + "\" y=\"" + Fmt("%.1f", py(y) + 4) +
           "\" text-anchor=\"end\">" + TickLabel(y, ystep) + "</text>";
  }
  // X ticks: whole numbers for iterations (bars or few points), nice steps otherwise.
  const double xstep = std::max(NiceStep(xmax - xmin, 8), bars ? 1.0 : 0.0);
  for (double x = std::ceil(xmin / xstep) * xstep; x <= xmax + 1e-9; x += xstep) {
    svg += "<text class=\"tick\" x=\"" + Fmt("%.1f", px(x)) + "\" y=\"" + Fmt("%.1f", H - B + 16) +
           "\" text-anchor=\"middle\">" + TickLabel(x, xstep) + "</text>";
  }
  svg += "<line class=\"axis\" x1=\"" + Fmt("%.1f", L) + "\" x2=\"" + Fmt("%.1f", W - R) + "\" y1=\"" +
         Fmt("%.1f", H - B) + "\" y2=\"" + Fmt("%.1f", H - B) + "\"/>";
  svg += "<line class=\"axis\" x1=\"" + Fmt("%.1f", L) + "\" x2=\"" + Fmt("%.1f", L) + "\" y1=\"" + Fmt("%.1f", T) +
         "\" y2=\"" + Fmt("%.1f", H - B) + "\"/>";
  svg += "<text class=\"label\" x=\"" + Fmt("%.0f", (L + W - R) / 2) + "\" y=\"" + Fmt("%.0f", H - 8) +
         "\" text-anchor=\"middle\">" + Escape(x_label) + "</text>";
  svg += "<text class=\"label\" transform=\"translate(14," + Fmt("%.0f", (T + H - B) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + Escape(y_label) + "</text>";

  const size_t k = series.size();
  for (size_t si = 0; si < k; ++si) {
    const auto& s = series[si];
    const std::string color = kPalette[si % (sizeof(kPalette) / sizeof(kPalette[0]))];
    if (bars) {
      const double slot = (W - L - R) / (xmax - xmin) * 0.8;
      const double bw = slot / static_cast<double>(k);
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        const double x0 = px(x) - slot / 2 + bw * static_cast<double>(si);
        const double top = std::min(py(y), py(0)), h = std::fabs(py(y) - py(0));
        svg += "<rect x=\"" + Fmt("%.1f", x0) + "\" y=\"" + Fmt("%.1f", top) + "\" width=\"" + Fmt("%.1f", bw) +
               "\" height=\"" + Fmt("%.1f", h) + "\" fill=\"" + color + "\"><title>" + Escape(s.name) + " " +
               Number(x) + ": " + Number(y) + "</title></rect>";
      }
    } else {
      std::string path;
      for (const auto& [x, y] : s.points) {
        if (!std::isfinite(x) || !std::isfinite(y)) continue;
        path += (path.empty() ? "M" : " L") + Fmt("%.1f", px(x)) + "," + Fmt("%.1f", py(y));
      }
      svg += "<path d=\"" + path + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"/>";
      if (s.points.size() <= 60) {
        for (const auto& [x, y] : s.points) {
          if (!std::isfinite(x) || !std::isfinite(y)) continue;
          svg += "<circle cx=\"" + Fmt("%.1f", px(x)) + "\" cy=\"" + Fmt("%.1f", py(y)) + "\" r=\"3\" fill=\"" +
                 color + "\"><title>" + Escape(s.name) + " " + Number(x) + ": " + Number(y) + "</title></circle>";
        }
      }
    }
    // Legend, in the top margin, left to right (a single series needs none).
    if (k > 1) {
      const double lx = L + 130 * static_cast<double>(si);
      svg += "<rect x=\"" + Fmt("%.0f", lx) + "\" y=\"" + Fmt("%.0f", T - 14) + "\" width=\"10\" height=\"10\" fill=\"" +
             color + "\"/><text class=\"legend\" x=\"" + Fmt("%.0f", lx + 14) + "\" y=\"" + Fmt("%.0f", T - 5) + "\">" +
             Escape(s.name) + "</text>";
    }
  }
  svg += "</svg></figure>\n";
  return svg;
}

std::string BaseName(const std::string& key) { return key.substr(0, key.find('{')); }

std::string Labels(const std::string& key) {
  auto p = key.find('{');
  if (p == std::string::npos) return "";
  std::string l = key.substr(p + 1);
  if (!l.empty() && l.back() == '}') l.pop_back();
  return l;
}

// Series over time from the history: counters named `counter` differenced
// into rates, else gauges named `gauge`; one series per source and labels.
std::vector<Series> OverTime(const std::vector<MetricsPoint>& history, const std::string& counter,
                             const std::string& gauge, double t0) {
  std::map<std::string, Series> rates, gauges;
  std::map<std::string, std::pair<double, double>> last;  // series -> (t, value)
  for (const auto& p : history) {
    const double t = static_cast<double>(p.unix_micros) / 1e6 - t0;
    for (const auto& [key, value] : p.values) {
      const std::string base = BaseName(key);
      const std::string labels = Labels(key);
      const std::string name = p.source + (labels.empty() ? "" : " " + labels);
      if (!counter.empty() && base == counter) {
        auto it = last.find(name);
        if (it != last.end() && t > it->second.first && value >= it->second.second) {
          Series& s = rates[name];
          s.name = name;
          s.points.emplace_back(t, (value - it->second.second) / (t - it->second.first));
        }
        last[name] = {t, value};
      } else if (!gauge.empty() && base == gauge) {
        Series& s = gauges[name];
        s.name = name;
        s.points.emplace_back(t, value);
      }
    }
  }
  std::vector<Series> out;
  for (auto& [n, s] : (rates.empty() ? gauges : rates)) out.push_back(std::move(s));
  return out;
}

}  // namespace

MetricsPoint MetricsPointFromSnapshot(const std::string& source, int64_t unix_micros,
                                      const v1::MetricsSnapshot& snapshot) {
  MetricsPoint point;
  point.source = source;
  point.unix_micros = unix_micros;
  for (const auto& m : snapshot.metrics()) {
    std::map<std::string, std::string> labels(m.labels().begin(), m.labels().end());
    std::string l = "{";
    for (const auto& [k, v] : labels) l += (l.size() > 1 ? "," : "") + k + "=" + v;
    l += "}";
    if (m.type() == v1::Metric::HISTOGRAM) {
      point.values.emplace_back(m.name() + "_sum" + l, m.value());
      point.values.emplace_back(m.name() + "_count" + l, static_cast<double>(m.count()));
    } else {
      point.values.emplace_back(m.name() + l, m.value());
    }
  }
  return point;
}

Result<std::string> RenderRunReport(const std::string& summary_json, const std::vector<MetricsPoint>& history,
                                    const std::vector<std::string>& notes) {
  json summary = json::parse(summary_json, nullptr, /*allow_exceptions=*/false);
  if (summary.is_discarded() || !summary.is_object()) return DataLoss("report: summary is not a JSON object");
  std::vector<json> iterations;
  if (auto it = summary.find("iterations"); it != summary.end() && it->is_array())
    for (const auto& i : *it)
      if (i.is_object()) iterations.push_back(i);
  std::sort(iterations.begin(), iterations.end(),
            [](const json& a, const json& b) { return Field(a, "iteration") < Field(b, "iteration"); });

  auto per_iteration = [&](const char* key, const std::string& name) {
    Series s;
    s.name = name;
    for (size_t i = 0; i < iterations.size(); ++i) {
      double x = Field(iterations[i], "iteration");
      if (!std::isfinite(x)) x = static_cast<double>(i);
      const double y = Field(iterations[i], key);
      if (std::isfinite(y)) s.points.emplace_back(x, y);
    }
    return std::vector<Series>{s};
  };
  auto str = [&](const char* key) {
    auto it = summary.find(key);
    if (it == summary.end()) return std::string("-");
    return it->is_string() ? it->get<std::string>() : it->is_number() ? Number(it->get<double>()) : it->dump();
  };

  const std::string run_dir = str("run_dir");
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>spar report: " + Escape(run_dir) +
      "</title>\n<style>\n"
      "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}\n"
      "h1{font-size:22px}h2{font-size:17px;margin-top:28px}\n"
      ".notes{background:#fff4d6;border:1px solid #e5c96b;padding:8px 12px}\n"
      "dl.summary{display:grid;grid-template-columns:max-content auto;gap:4px 16px}dl.summary dt{font-weight:600}\n"
      ".charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;border:1px solid #ddd;padding:4px}\n"
      "svg.chart{font-size:11px;max-width:100%;height:auto}svg .title{font-size:14px;font-weight:600}\n"
      "svg .grid{stroke:#eee}svg .axis{stroke:#555}svg .tick{fill:#555}svg .label{fill:#333}\n"
      "svg .empty{fill:#999;font-size:14px}\n"
      "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}\n"
      "th{background:#f3f3f3}\n"
      "</style></head><body>\n<h1>spar run report</h1>\n";
  if (!notes.empty()) {
    html += "<div class=\"notes\">";
    for (const auto& n : notes) html += "<p>" + Escape(n) + "</p>";
    html += "</div>\n";
  }
  html += "<dl class=\"summary\">";
  const std::pair<const char*, const char*> kSummary[] = {
      {"run_dir", "run folder"},          {"final_model", "final model"},
      {"iterations_done", "iterations done"}, {"rollouts", "rollouts"},
      {"rollout_tokens", "rollout tokens"},   {"rollout_tokens_per_second", "rollout tokens/s"},
      {"wall_seconds", "wall seconds"}};
  for (const auto& [key, label] : kSummary) {
    if (!summary.contains(key)) continue;
    html += "<dt>" + std::string(label) + "</dt><dd>" + Escape(str(key)) + "</dd>";
  }
  html += "</dl>\n";

  html += "<h2>Per iteration</h2>\n<div class=\"charts\">\n";
  html += Chart("tokens-per-iteration", "Rollout tokens/s per iteration", "iteration", "tokens/s",
                per_iteration("tokens_per_second", "tokens/s"));
  html += Chart("win-rate", "Mean chosen win rate per iteration", "iteration", "win rate",
                per_iteration("mean_chosen_win_rate", "win rate"));
  html += Chart("loss", "Learner loss per iteration", "iteration", "loss", per_iteration("learner_loss", "loss"));
  html += Chart("weight-sync", "Weight-sync seconds per iteration", "iteration", "seconds",
                per_iteration("weight_sync_seconds", "weight sync"), /*bars=*/true);
  html += "</div>\n";

  html += "<h2>Over time</h2>\n<div class=\"charts\">\n";
  const double t0 = history.empty() ? 0 : static_cast<double>(history.front().unix_micros) / 1e6;
  html += Chart("tokens-over-time", "Generator tokens/s over time", "seconds since start", "tokens/s",
                OverTime(history, "spar_generator_tokens_total", "spar_generator_tokens_per_second", t0));
  html += Chart("loss-over-time", "Learner loss over time", "seconds since start", "loss",
                OverTime(history, "", "spar_learner_loss", t0));
  html += "</div>\n";

  html += "<h2>Iterations</h2>\n<table>\n<tr>";
  const std::pair<const char*, const char*> kColumns[] = {
      {"iteration", "iteration"},
      {"prompts", "prompts"},
      {"rollouts", "rollouts"},
      {"rollout_tokens", "tokens"},
      {"generation_seconds", "generation s"},
      {"tokens_per_second", "tokens/s"},
      {"rollouts_per_second", "rollouts/s"},
      {"scoring_busy_seconds", "scoring busy s"},
      {"training_busy_seconds", "training busy s"},
      {"weight_sync_seconds", "weight sync s"},
      {"wall_seconds", "wall s"},
      {"policy_version", "policy version"},
      {"mean_chosen_win_rate", "chosen win rate"},
      {"learner_step", "learner step"},
      {"learner_loss", "loss"},
      {"learner_grad_norm", "grad norm"},
      {"learner_tokens_per_second", "learner tokens/s"}};
  for (const auto& [key, label] : kColumns) html += "<th>" + std::string(label) + "</th>";
  html += "</tr>\n";
  for (const auto& it : iterations) {
    html += "<tr>";
    for (const auto& [key, label] : kColumns) html += "<td>" + Number(Field(it, key)) + "</td>";
    html += "</tr>\n";
  }
  html += "</table>\n";
  if (iterations.empty()) html += "<p>No iteration has finished yet.</p>\n";
  html += "<p style=\"color:#888;font-size:12px\">Generated by spar report. " +
          std::to_string(history.size()) + " metrics points.</p>\n</body></html>\n";
  return html;
}

Result<ReportResult> WriteRunReport(const ReportOptions& options) {
  if (options.run_dir.empty()) return InvalidArgument("report: run_dir is empty");
  ReportResult result;
  result.path = options.out.empty() ? options.run_dir + "/report.html" : options.out;

  std::unique_ptr<RunStore> store;
  {
    RunStoreOptions store_options;
    store_options.create_if_missing = false;
    store_options.read_only = true;  // works while `spar run` holds the lock
    auto opened = RunStore::Open(options.run_dir + "/store", store_options);
    if (opened.ok()) {
      store = std::move(opened).value();
    } else {
      result.notes.push_back("run store unavailable (" + opened.status().ToString() +
                             "); charts over time are empty");
    }
  }

  std::string summary_text;
  auto summary = ReadFileToString(options.run_dir + "/summary.json");
  if (summary.ok()) {
    summary_text = *summary;
    result.from_summary = true;
  } else {
    // A run in progress: build the iterations from the store's states.
    json doc = {{"run_dir", options.run_dir}, {"iterations", json::array()}};
    if (store) {
      for (uint32_t t = 0;; ++t) {
        auto state = store->GetIterationState(t);
        if (!state.ok()) return state.status().WithContext("report: iteration state " + std::to_string(t));
        if (!state->has_value()) break;
        json j = json::parse(**state, nullptr, false);
        if (j.is_object()) {
          if (!j.contains("iteration")) j["iteration"] = t;
          doc["iterations"].push_back(j);
        }
      }
    }
    if (doc["iterations"].empty() && !store)
      return NotFound("report: no summary.json and no run store in '" + options.run_dir + "'");
    result.notes.push_back("no summary.json yet (run in progress?): iterations come from the run store");
    doc["iterations_done"] = doc["iterations"].size();
    summary_text = doc.dump();
  }

  std::vector<MetricsPoint> history;
  if (store) {
    Status s = store->ForEachMetrics(0, std::numeric_limits<int64_t>::max(), [&](const MetricsPoint& p) {
      history.push_back(p);
      return true;
    });
    if (!s.ok()) result.notes.push_back("metrics history unreadable: " + s.ToString());
  }
  result.metrics_points = history.size();

  SPAR_ASSIGN_OR_RETURN(std::string html, RenderRunReport(summary_text, history, result.notes));
  json parsed = json::parse(summary_text, nullptr, false);
  if (parsed.is_object() && parsed.contains("iterations") && parsed["iterations"].is_array())
    result.iterations = parsed["iterations"].size();
  SPAR_RETURN_IF_ERROR(WriteFileAtomic(result.path, html).WithContext("report"));
  return result;
}

}  // namespace spar
