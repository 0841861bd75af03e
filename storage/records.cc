#include "storage/records.h"

#include <cmath>

namespace spar {
namespace {

constexpr uint8_t kFormatVersion = 1;
enum RecordType : uint8_t {
  kPromptType = 1,
  kGroupHeaderType = 2,
  kRolloutType = 3,
  kScoreType = 4,
  kMetricsType = 5,
};

class Writer {
 public:
  // Framing only, no record header (for scatter-gather pieces).
  Writer() = default;
  explicit Writer(RecordType type, size_t reserve = 64) {
    out_.reserve(reserve);
    out_.push_back(static_cast<char>(kFormatVersion));
    out_.push_back(static_cast<char>(type));
  }
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void Fixed64(uint64_t v) {
    char buf[8];
    std::memcpy(buf, &v, 8);  // little-endian hosts only (x86_64, aarch64)
    out_.append(buf, 8);
  }
  void Bytes(std::string_view s) {
    Varint(s.size());
    out_.append(s.data(), s.size());
  }
  template <typename T>
  void Array(const std::vector<T>& v) {
    Varint(v.size());
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  size_t size() const { return out_.size(); }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Introduces the optional policy_revision at the end of a rollout record.
constexpr uint8_t kRevisionTag = 0x52;  // 'R'

class Reader {
 public:
  Reader(std::string_view bytes, const char* what) : data_(bytes), what_(what) {}

  Status Header(RecordType type) {
    uint8_t version = 0, tag = 0;
    if (!U8(&version) || !U8(&tag)) return Fail("record too short");
    if (version != kFormatVersion)
      return Fail("unknown format version " + std::to_string(version));
    if (tag != type) return Fail("wrong record type " + std::to_string(tag));
    return Status::Ok();
  }
  bool U8(uint8_t* v) {
    if (pos_ >= data_.size()) return false;
    *v = static_cast<uint8_t>(data_[pos_++]);
    return true;
  }
  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift <= 63; shift += 7) {
      if (pos_ >= data_.size()) return false;
      uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Fixed64(uint64_t* v) {
    if (data_.size() - pos_ < 8) return false;
    std::memcpy(v, data_.data() + pos_, 8);
    pos_ += 8;
    return true;
  }
  bool Bytes(std::string_view* s) {
    uint64_t n;
    if (!Varint(&n) || n > data_.size() - pos_) return false;
    *s = data_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool String(std::string* s) {
    std::string_view v;
    if (!Bytes(&v)) return false;
    s->assign(v.data(), v.size());
    return true;
  }
  // Raw array: returns a pointer into the record and the element count.
  bool ArrayView(size_t elem_size, const char** ptr, size_t* count) {
    uint64_t n;
    if (!Varint(&n) || n > (data_.size() - pos_) / elem_size) return false;
    *ptr = data_.data() + pos_;
    *count = n;
    pos_ += n * elem_size;
    return true;
  }
  template <typename T>
  bool Array(std::vector<T>* v) {
    const char* ptr;
    size_t n;
    if (!ArrayView(sizeof(T), &ptr, &n)) return false;
    v->resize(n);
    if (n) std::memcpy(v->data(), ptr, n * sizeof(T));
    return true;
  }
  Status Fail(const std::string& field) const {
    return DataLoss(std::string("corrupt ") + what_ + " record: " + field);
  }
  bool AtEnd() const { return pos_ == data_.size(); }
  Status Done() const {
    if (pos_ != data_.size())
      return Fail(std::to_string(data_.size() - pos_) + " trailing bytes");
    return Status::Ok();
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  const char* what_;
};

bool AllFinite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

std::string_view FinishReasonName(FinishReasonCode code) {
  switch (code) {
    case FinishReasonCode::kStop: return "stop";
    case FinishReasonCode::kLength: return "length";
    case FinishReasonCode::kCancelled: return "cancelled";
    case FinishReasonCode::kError: return "error";
    case FinishReasonCode::kUnspecified: break;
  }
  return "unspecified";
}

Status ValidateScore(const ScoreRecord& s) {
  if (s.k < 2) return InvalidArgument("score record: k must be >= 2, got " + std::to_string(s.k));
  const size_t kk = static_cast<size_t>(s.k) * s.k;
  if (s.probabilities.size() != kk)
    return InvalidArgument("score record: probabilities must have k*k = " + std::to_string(kk) +
                           " values, got " + std::to_string(s.probabilities.size()));
  if (!s.scores.empty() && s.scores.size() != kk)
    return InvalidArgument("score record: scores must be empty or have k*k values, got " +
                           std::to_string(s.scores.size()));
  if (s.win_rates.size() != s.k)
    return InvalidArgument("score record: win_rates must have k = " + std::to_string(s.k) +
                           " values, got " + std::to_string(s.win_rates.size()));
  if (!s.mean_scores.empty() && s.mean_scores.size() != s.k)
    return InvalidArgument("score record: mean_scores must be empty or have k values");
  if (!AllFinite(s.probabilities) || !AllFinite(s.scores) || !AllFinite(s.win_rates) ||
      !AllFinite(s.mean_scores))
    return InvalidArgument("score record: values must be finite (NaN or Inf found)");
  return Status::Ok();
}

std::string EncodePrompt(const PromptRecord& r) {
  Writer w(kPromptType, 32 + r.text.size());
  w.Varint(r.iteration);
  w.Varint(r.prompt_index);
  w.Bytes(r.prompt_id);
  w.Bytes(r.text);
  w.Varint(r.messages.size());
  for (const auto& m : r.messages) {
    w.Bytes(m.role);
    w.Bytes(m.content);
  }
  return w.Take();
}

Status DecodePrompt(std::string_view bytes, PromptRecord* out) {
  Reader r(bytes, "prompt");
  SPAR_RETURN_IF_ERROR(r.Header(kPromptType));
  uint64_t iteration, index, count;
  if (!r.Varint(&iteration) || !r.Varint(&index)) return r.Fail("iteration/prompt_index");
  out->iteration = static_cast<uint32_t>(iteration);
  out->prompt_index = index;
  if (!r.String(&out->prompt_id)) return r.Fail("prompt_id");
  if (!r.String(&out->text)) return r.Fail("text");
  if (!r.Varint(&count) || count > bytes.size()) return r.Fail("message count");
  out->messages.resize(count);
  for (auto& m : out->messages) {
    if (!r.String(&m.role) || !r.String(&m.content)) return r.Fail("messages");
  }
  return r.Done();
}

std::string EncodeGroupHeader(const RolloutGroup& g, int64_t created_micros) {
  Writer w(kGroupHeaderType, 32 + g.prompt_id.size() + 4 * g.prompt_token_ids.size());
  w.Varint(g.iteration);
  w.Varint(g.prompt_index);
  w.Bytes(g.prompt_id);
  w.Array(g.prompt_token_ids);
  w.Fixed64(static_cast<uint64_t>(created_micros));
  w.Varint(g.rollouts.size());
  return w.Take();
}

Status DecodeGroupHeader(std::string_view bytes, RolloutGroup* out) {
  Reader r(bytes, "rollout group header");
  SPAR_RETURN_IF_ERROR(r.Header(kGroupHeaderType));
  uint64_t iteration, index, created, k;
  if (!r.Varint(&iteration) || !r.Varint(&index)) return r.Fail("iteration/prompt_index");
  out->iteration = static_cast<uint32_t>(iteration);
  out->prompt_index = index;
  if (!r.String(&out->prompt_id)) return r.Fail("prompt_id");
  if (!r.Array(&out->prompt_token_ids)) return r.Fail("prompt_token_ids");
  if (!r.Fixed64(&created)) return r.Fail("created_micros");
  out->created_micros = static_cast<int64_t>(created);
  if (!r.Varint(&k) || k > (1u << 20)) return r.Fail("rollout count");
  out->rollouts.clear();
  out->rollouts.resize(k);
  return r.Done();
}

std::string EncodeRollout(const RolloutRecord& x) {
  Writer w(kRolloutType, 48 + x.text.size() + 4 * (x.token_ids.size() + x.logprobs.size()));
  w.Varint(x.sample_index);
  w.Bytes(x.text);
  w.Array(x.token_ids);
  w.Array(x.logprobs);
  w.U8(static_cast<uint8_t>(x.finish_reason));
  w.Varint(x.policy_version);
  w.Bytes(x.generator_id);
  if (x.policy_revision != 0) {  // revision 0: the original layout
    w.U8(kRevisionTag);
    w.Varint(x.policy_revision);
  }
  return w.Take();
}

void EncodeRolloutParts(const RolloutRecord& x, std::string* scratch,
                        std::string_view parts[kRolloutParts]) {
  Writer w(kRolloutType, 48 + x.generator_id.size());
  w.Varint(x.sample_index);
  w.Varint(x.text.size());
  const size_t a = w.size();
  w.Varint(x.token_ids.size());
  const size_t b = w.size();
  w.Varint(x.logprobs.size());
  const size_t c = w.size();
  w.U8(static_cast<uint8_t>(x.finish_reason));
  w.Varint(x.policy_version);
  w.Bytes(x.generator_id);
  if (x.policy_revision != 0) {
    w.U8(kRevisionTag);
    w.Varint(x.policy_revision);
  }
  *scratch = w.Take();
  const char* base = scratch->data();
  parts[0] = std::string_view(base, a);
  parts[1] = x.text;
  parts[2] = std::string_view(base + a, b - a);
  parts[3] = std::string_view(reinterpret_cast<const char*>(x.token_ids.data()), 4 * x.token_ids.size());
  parts[4] = std::string_view(base + b, c - b);
  parts[5] = std::string_view(reinterpret_cast<const char*>(x.logprobs.data()), 4 * x.logprobs.size());
  parts[6] = std::string_view(base + c, scratch->size() - c);
}

Status DecodeRolloutView(std::string_view bytes, RolloutView* out) {
  Reader r(bytes, "rollout");
  SPAR_RETURN_IF_ERROR(r.Header(kRolloutType));
  uint64_t sample, version;
  uint8_t finish;
  if (!r.Varint(&sample)) return r.Fail("sample_index");
  out->sample_index = static_cast<uint32_t>(sample);
  if (!r.Bytes(&out->text)) return r.Fail("text");
  if (!r.ArrayView(4, &out->token_bytes, &out->num_tokens)) return r.Fail("token_ids");
  if (!r.ArrayView(4, &out->logprob_bytes, &out->num_logprobs)) return r.Fail("logprobs");
  if (!r.U8(&finish) || finish > static_cast<uint8_t>(FinishReasonCode::kError))
    return r.Fail("finish_reason");
  out->finish_reason = static_cast<FinishReasonCode>(finish);
  if (!r.Varint(&version)) return r.Fail("policy_version");
  out->policy_version = version;
  if (!r.Bytes(&out->generator_id)) return r.Fail("generator_id");
  // Optional trailing field: absent for revision 0 (and in records written
  // before revisions existed), so those bytes are unchanged.
  out->policy_revision = 0;
  if (!r.AtEnd()) {
    uint8_t tag = 0;
    if (!r.U8(&tag) || tag != kRevisionTag || !r.Varint(&out->policy_revision) || out->policy_revision == 0)
      return r.Fail("policy_revision");
  }
  return r.Done();
}

Status DecodeRollout(std::string_view bytes, RolloutRecord* out) {
  RolloutView v;
  SPAR_RETURN_IF_ERROR(DecodeRolloutView(bytes, &v));
  out->sample_index = v.sample_index;
  out->text.assign(v.text.data(), v.text.size());
  out->token_ids.resize(v.num_tokens);
  if (v.num_tokens) std::memcpy(out->token_ids.data(), v.token_bytes, 4 * v.num_tokens);
  out->logprobs.resize(v.num_logprobs);
  if (v.num_logprobs) std::memcpy(out->logprobs.data(), v.logprob_bytes, 4 * v.num_logprobs);
  out->finish_reason = v.finish_reason;
  out->policy_version = v.policy_version;
  out->generator_id.assign(v.generator_id.data(), v.generator_id.size());
  out->policy_revision = v.policy_revision;
  return Status::Ok();
}

std::string EncodeScore(const ScoreRecord& s) {
  Writer w(kScoreType, 64 + 8 * (s.probabilities.size() * 2 + s.k * 2));
  w.Varint(s.iteration);
  w.Varint(s.prompt_index);
  w.Bytes(s.prompt_id);
  w.Varint(s.k);
  w.Array(s.probabilities);
  w.Array(s.scores);
  w.Array(s.win_rates);
  w.Array(s.mean_scores);
  w.Bytes(s.model);
  w.Fixed64(static_cast<uint64_t>(s.created_micros));
  return w.Take();
}

Status DecodeScore(std::string_view bytes, ScoreRecord* out) {
  Reader r(bytes, "score");
  SPAR_RETURN_IF_ERROR(r.Header(kScoreType));
  uint64_t iteration, index, k, created;
  if (!r.Varint(&iteration) || !r.Varint(&index)) return r.Fail("iteration/prompt_index");
  out->iteration = static_cast<uint32_t>(iteration);
  out->prompt_index = index;
  if (!r.String(&out->prompt_id)) return r.Fail("prompt_id");
  if (!r.Varint(&k) || k > (1u << 16)) return r.Fail("k");
  out->k = static_cast<uint32_t>(k);
  if (!r.Array(&out->probabilities)) return r.Fail("probabilities");
  if (!r.Array(&out->scores)) return r.Fail("scores");
  if (!r.Array(&out->win_rates)) return r.Fail("win_rates");
  if (!r.Array(&out->mean_scores)) return r.Fail("mean_scores");
  if (!r.String(&out->model)) return r.Fail("model");
  if (!r.Fixed64(&created)) return r.Fail("created_micros");
  out->created_micros = static_cast<int64_t>(created);
  SPAR_RETURN_IF_ERROR(r.Done());
  Status valid = ValidateScore(*out);
  if (!valid.ok()) return r.Fail(valid.message());
  return Status::Ok();
}

std::string EncodeMetrics(const MetricsPoint& p) {
  Writer w(kMetricsType, 32 + p.values.size() * 40);
  w.Fixed64(static_cast<uint64_t>(p.unix_micros));
  w.Bytes(p.source);
  w.Varint(p.values.size());
  for (const auto& [name, value] : p.values) {
    w.Bytes(name);
    uint64_t bits;
    std::memcpy(&bits, &value, 8);
    w.Fixed64(bits);
  }
  return w.Take();
}

Status DecodeMetrics(std::string_view bytes, MetricsPoint* out) {
  Reader r(bytes, "metrics");
  SPAR_RETURN_IF_ERROR(r.Header(kMetricsType));
  uint64_t micros, count;
  if (!r.Fixed64(&micros)) return r.Fail("unix_micros");
  out->unix_micros = static_cast<int64_t>(micros);
  if (!r.String(&out->source)) return r.Fail("source");
  if (!r.Varint(&count) || count > bytes.size()) return r.Fail("value count");
  out->values.resize(count);
  for (auto& [name, value] : out->values) {
    uint64_t bits;
    if (!r.String(&name) || !r.Fixed64(&bits)) return r.Fail("values");
    std::memcpy(&value, &bits, 8);
  }
  return r.Done();
}

}  // namespace spar
