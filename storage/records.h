// spar/storage/records.h — the records kept in the run store and their
// binary codec.
//
// The codec is a versioned little-endian format (one version byte, one
// record-type byte, then fields: varint lengths, raw arrays for token ids
// and log-probs so they encode and decode at memcpy speed). Decode* checks
// every length against the bytes that remain and returns DataLoss naming
// the record and field on any mismatch; it never reads out of bounds.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace spar {

// Mirrors spar.v1.FinishReason.
enum class FinishReasonCode : uint8_t {
  kUnspecified = 0,
  kStop = 1,
  kLength = 2,
  kCancelled = 3,
  kError = 4,
};
std::string_view FinishReasonName(FinishReasonCode code);

struct ChatMessageRecord {
  std::string role;
  std::string content;
};

struct PromptRecord {
  uint32_t iteration = 0;
  uint64_t prompt_index = 0;  // position in its shard
  std::string prompt_id;
  std::string text;                          // raw prompt, or empty
  std::vector<ChatMessageRecord> messages;   // conversation, or empty
};

struct RolloutRecord {
  uint32_t sample_index = 0;
  std::string text;
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  FinishReasonCode finish_reason = FinishReasonCode::kUnspecified;
  uint64_t policy_version = 0;
  std::string generator_id;
  // Intermediate publications within an iteration (learner.publish_every_steps):
  // the weights were version `policy_version`, revision `policy_revision`.
  // Records written before revisions existed read back as 0.
  uint64_t policy_revision = 0;
};

struct RolloutGroup {
  uint32_t iteration = 0;
  uint64_t prompt_index = 0;
  std::string prompt_id;
  std::vector<int32_t> prompt_token_ids;
  int64_t created_micros = 0;
  std::vector<RolloutRecord> rollouts;  // K, sample_index 0..K-1
};

// A rollout decoded in place (no copies); valid only while its source bytes
// live (the duration of a scan callback).
struct RolloutView {
  uint32_t iteration = 0;
  uint64_t prompt_index = 0;
  uint32_t sample_index = 0;
  std::string_view text;
  const char* token_bytes = nullptr;
  size_t num_tokens = 0;
  const char* logprob_bytes = nullptr;
  size_t num_logprobs = 0;
  FinishReasonCode finish_reason = FinishReasonCode::kUnspecified;
  uint64_t policy_version = 0;
  std::string_view generator_id;
  uint64_t policy_revision = 0;

  int32_t token(size_t i) const {
    int32_t v;
    std::memcpy(&v, token_bytes + 4 * i, 4);
    return v;
  }
  float logprob(size_t i) const {
    float v;
    std::memcpy(&v, logprob_bytes + 4 * i, 4);
    return v;
  }
};

struct ScoreRecord {
  uint32_t iteration = 0;
  uint64_t prompt_index = 0;
  std::string prompt_id;
  uint32_t k = 0;
  std::vector<double> probabilities;  // K*K row-major, P(y_i > y_j | x)
  std::vector<double> scores;         // K*K raw scores (may be empty for kinds without)
  std::vector<double> win_rates;      // K
  std::vector<double> mean_scores;    // K (may be empty)
  std::string model;
  int64_t created_micros = 0;
};

struct MetricsPoint {
  int64_t unix_micros = 0;
  std::string source;  // "generator-0", "orchestrator", ...
  std::vector<std::pair<std::string, double>> values;
};

// Checks a score record's shape: k >= 2, K*K matrices, K win rates, finite
// values. InvalidArgument naming the field otherwise.
Status ValidateScore(const ScoreRecord& score);

std::string EncodePrompt(const PromptRecord& record);
Status DecodePrompt(std::string_view bytes, PromptRecord* out);

// A group header carries everything but the rollouts (their count only).
std::string EncodeGroupHeader(const RolloutGroup& group, int64_t created_micros);
Status DecodeGroupHeader(std::string_view bytes, RolloutGroup* out);
std::string EncodeRollout(const RolloutRecord& record);
// The same bytes as EncodeRollout, as 7 slices for a scatter-gather write:
// the large arrays are referenced in place, only small framing goes into
// `scratch`. The slices point into `record` and `scratch`; both must outlive
// them.
constexpr int kRolloutParts = 7;
void EncodeRolloutParts(const RolloutRecord& record, std::string* scratch,
                        std::string_view parts[kRolloutParts]);
Status DecodeRollout(std::string_view bytes, RolloutRecord* out);
Status DecodeRolloutView(std::string_view bytes, RolloutView* out);

std::string EncodeScore(const ScoreRecord& record);
Status DecodeScore(std::string_view bytes, ScoreRecord* out);

std::string EncodeMetrics(const MetricsPoint& point);
Status DecodeMetrics(std::string_view bytes, MetricsPoint* out);

}  // namespace spar
