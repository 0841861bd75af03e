// `spar report`: a synthetic run folder (summary.json + a real RocksDB run
// store with metrics history) -> one self-contained HTML page.
#include "orchestrator/report.h"

#include <gtest/gtest.h>

#include "storage/run_store.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000'000;

std::string IterationJson(int t, double tokens_per_second, double win_rate, double loss, double sync) {
  return "{\"iteration\": " + std::to_string(t) +
         ", \"prompts\": 64, \"rollouts\": 256, \"rollout_tokens\": 51200, \"generation_seconds\": 20.5"
         ", \"tokens_per_second\": " + std::to_string(tokens_per_second) +
         ", \"rollouts_per_second\": 12.5, \"scoring_busy_seconds\": 4.25, \"training_busy_seconds\": 9.75"
         ", \"finish_seconds\": 1.5, \"weight_sync_seconds\": " + std::to_string(sync) +
         ", \"wall_seconds\": 36.0, \"policy_version\": " + std::to_string(t + 1) +
         ", \"checkpoint_dir\": \"/runs/x/checkpoints/iter-" + std::to_string(t) +
         "\", \"mean_chosen_win_rate\": " + std::to_string(win_rate) +
         ", \"learner_step\": " + std::to_string(8 * (t + 1)) + ", \"learner_loss\": " + std::to_string(loss) +
         ", \"learner_grad_norm\": 1.25, \"learner_tokens_per_second\": 3000}";
}

std::string SummaryJson() {
  return "{\"run_dir\": \"/runs/x <demo>\", \"final_model\": \"/runs/x/final\", \"iterations_done\": 3, "
         "\"rollouts\": 768, \"rollout_tokens\": 153600, \"rollout_tokens_per_second\": 2497.5, "
         "\"wall_seconds\": 108.0, \"iterations\": [" +
         IterationJson(0, 2450.5, 0.625, 0.6931, 2.5) + "," + IterationJson(1, 2500.25, 0.6875, 0.5125, 2.75) + "," +
         IterationJson(2, 2541.75, 0.71875, 0.4375, 3.125) + "]}";
}

void WriteStore(const std::string& dir, bool with_states) {
  auto store = RunStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int i = 0; i < 5; ++i) {
    v1::MetricsSnapshot snap;
    auto* m = snap.add_metrics();
    m->set_name("spar_generator_tokens_total");
    m->set_type(v1::Metric::COUNTER);
    m->set_value(1000.0 * i);
    (*m->mutable_labels())["generator"] = "generator-0";
    auto* h = snap.add_metrics();
    h->set_name("spar_weight_sync_seconds");
    h->set_type(v1::Metric::HISTOGRAM);
    h->set_value(2.5 * i);
    h->set_count(static_cast<uint64_t>(i));
    ASSERT_TRUE((*store)->AppendMetrics(MetricsPointFromSnapshot("generator-0", kT0 + i * 2'000'000, snap)).ok());
    MetricsPoint loss;
    loss.source = "learner";
    loss.unix_micros = kT0 + i * 2'000'000 + 1;
    loss.values = {{"spar_learner_loss{}", 0.7 - 0.05 * i}};
    ASSERT_TRUE((*store)->AppendMetrics(loss).ok());
  }
  if (with_states) {
    ASSERT_TRUE((*store)->PutIterationState(0, IterationJson(0, 2450.5, 0.625, 0.6931, 2.5)).ok());
    ASSERT_TRUE((*store)->PutIterationState(1, IterationJson(1, 2500.25, 0.6875, 0.5125, 2.75)).ok());
  }
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

TEST(ReportTest, MetricsPointNamesSeriesByLabels) {
  v1::MetricsSnapshot snap;
  auto* c = snap.add_metrics();
  c->set_name("spar_scorer_groups_total");
  c->set_type(v1::Metric::COUNTER);
  c->set_value(3);
  (*c->mutable_labels())["scorer"] = "s0";
  (*c->mutable_labels())["a"] = "b";
  auto* h = snap.add_metrics();
  h->set_name("spar_scorer_latency_seconds");
  h->set_type(v1::Metric::HISTOGRAM);
  h->set_value(1.5);
  h->set_count(4);
  const MetricsPoint p = MetricsPointFromSnapshot("scorer-0", 42, snap);
  EXPECT_EQ(p.source, "scorer-0");
  EXPECT_EQ(p.unix_micros, 42);
  ASSERT_EQ(p.values.size(), 3u);
  EXPECT_EQ(p.values[0].first, "spar_scorer_groups_total{a=b,scorer=s0}");
  EXPECT_EQ(p.values[1].first, "spar_scorer_latency_seconds_sum{}");
  EXPECT_EQ(p.values[2].first, "spar_scorer_latency_seconds_count{}");
  EXPECT_EQ(p.values[2].second, 4);
}

TEST(ReportTest, WritesASelfContainedPageWithChartsAndNumbers) {
  testing::TempDir run;
  testing::WriteFile(run.path() / "summary.json", SummaryJson());
  WriteStore(run.str() + "/store", /*with_states=*/false);

  auto result = WriteRunReport({run.str(), ""});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->path, run.str() + "/report.html");
  EXPECT_TRUE(result->from_summary);
  EXPECT_EQ(result->iterations, 3u);
  EXPECT_EQ(result->metrics_points, 10u);
  EXPECT_TRUE(result->notes.empty());

  const std::string html = testing::ReadFile(result->path);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(Count(html, "<svg"), 6u);  // 4 per iteration + 2 over time
  for (const char* id : {"tokens-per-iteration", "win-rate", "loss", "weight-sync", "tokens-over-time",
                         "loss-over-time"})
    EXPECT_NE(html.find("id=\"" + std::string(id) + "\""), std::string::npos) << id;
  // Self-contained: no scripts, nothing fetched.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  // Escaped and present: the run folder, the table's numbers.
  EXPECT_NE(html.find("/runs/x &lt;demo&gt;"), std::string::npos);
  for (const char* number : {"2450.5", "2500.25", "2541.75", "0.71875", "0.6931", "3.125", "153600", "2497.5"})
    EXPECT_NE(html.find(number), std::string::npos) << number;
  EXPECT_EQ(Count(html, "<tr>"), 4u);  // header + 3 iterations
  // Weight sync drawn as bars, one per iteration.
  EXPECT_GE(Count(html, "<rect x="), 3u);
  // Tokens over time: 1000 tokens per 2 s = 500 tokens/s at every step.
  EXPECT_NE(html.find("generator-0 generator=generator-0 2: 500"), std::string::npos);
  EXPECT_EQ(html.find("no data"), std::string::npos);
}

TEST(ReportTest, ARunInProgressIsReportedFromTheStore) {
  testing::TempDir run;
  WriteStore(run.str() + "/store", /*with_states=*/true);
  // `spar run` still holds the store: the report opens it read-only.
  RunStoreOptions locked;
  locked.create_if_missing = false;
  auto holder = RunStore::Open(run.str() + "/store", locked);
  ASSERT_TRUE(holder.ok()) << holder.status().ToString();

  const std::string out = run.str() + "/elsewhere.html";
  auto result = WriteRunReport({run.str(), out});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->path, out);
  EXPECT_FALSE(result->from_summary);
  EXPECT_EQ(result->iterations, 2u);
  ASSERT_FALSE(result->notes.empty());
  const std::string html = testing::ReadFile(out);
  EXPECT_NE(html.find("no summary.json yet"), std::string::npos);
  EXPECT_NE(html.find("2500.25"), std::string::npos);
  EXPECT_EQ(Count(html, "<svg"), 6u);
}

TEST(ReportTest, WithoutTheStoreTheSummaryIsEnoughAndTheNoteSaysSo) {
  testing::TempDir run;
  testing::WriteFile(run.path() / "summary.json", SummaryJson());
  auto result = WriteRunReport({run.str(), ""});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->notes.size(), 1u);
  EXPECT_NE(result->notes[0].find("run store unavailable"), std::string::npos);
  const std::string html = testing::ReadFile(result->path);
  EXPECT_NE(html.find("run store unavailable"), std::string::npos);
  EXPECT_NE(html.find("no data"), std::string::npos);  // the over-time charts
  EXPECT_NE(html.find("0.71875"), std::string::npos);
}

TEST(ReportTest, MissingOrBrokenInputsAreClearErrors) {
  testing::TempDir empty;
  auto none = WriteRunReport({empty.str(), ""});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);

  testing::TempDir broken;
  testing::WriteFile(broken.path() / "summary.json", "{not json");
  auto bad = WriteRunReport({broken.str(), ""});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace spar
