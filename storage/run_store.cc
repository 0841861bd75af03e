#include "storage/run_store.h"

#include <malloc.h>

#include <chrono>
#include <mutex>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "common/logging.h"
#include "storage/keys.h"

namespace spar {
namespace {

const char* const kFamilyNames[] = {"default", "prompts", "rollouts", "scores", "state", "metrics"};

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The one place RocksDB statuses become spar statuses.
Status FromRocks(const rocksdb::Status& s, const std::string& dir, const char* what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string("run store '") + dir + "': " + what + ": " + s.ToString();
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return FailedPrecondition("run store '" + dir +
                              "' is locked by another process (is another spar process using "
                              "this run folder?): " + s.ToString());
  }
  if (s.IsCorruption()) return DataLoss(msg);
  if (s.IsNotFound()) return NotFound(msg);
  if (s.IsInvalidArgument() && s.ToString().find("does not exist") != std::string::npos) {
    return NotFound("no run store in '" + dir + "' (" + s.ToString() + ")");
  }
  return Unavailable(msg);
}

Status ValidateGroup(const RolloutGroup& g) {
  if (g.rollouts.empty())
    return InvalidArgument("rollout group " + g.prompt_id + " has no rollouts");
  for (size_t i = 0; i < g.rollouts.size(); ++i) {
    const auto& r = g.rollouts[i];
    if (r.sample_index != i)
      return InvalidArgument("rollout group " + g.prompt_id + ": rollout " + std::to_string(i) +
                             " has sample_index " + std::to_string(r.sample_index) +
                             " (must be 0..K-1 in order)");
    if (!r.logprobs.empty() && r.logprobs.size() != r.token_ids.size())
      return InvalidArgument("rollout group " + g.prompt_id + ": rollout " + std::to_string(i) +
                             " has " + std::to_string(r.logprobs.size()) + " logprobs for " +
                             std::to_string(r.token_ids.size()) + " tokens");
  }
  return Status::Ok();
}

// Memtables are filled and freed again and again. By default glibc hands
// their multi-MB arena blocks back to the kernel on free, so every new
// memtable page is a fresh page fault, which on virtual machines costs as
// much as the copy itself. Keeping freed blocks in the heap for reuse made
// rollout writes ~25% faster here (see `spar bench storage`).
void KeepFreedMemtableMemory() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
}

}  // namespace

RunStore::~RunStore() {
  if (db_) {
    for (auto* h : families_) {
      if (h) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    }
    db_->Close().PermitUncheckedError();
  }
}

Result<std::unique_ptr<RunStore>> RunStore::Open(const std::string& dir,
                                                 const RunStoreOptions& options) {
  KeepFreedMemtableMemory();
  std::unique_ptr<RunStore> store(new RunStore());
  store->dir_ = dir;
  store->options_ = options;

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  db_options.IncreaseParallelism(2);
  db_options.max_background_jobs = 2;
  db_options.paranoid_checks = true;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_options.keep_log_file_num = 2;

  rocksdb::ColumnFamilyOptions base;
  base.compression = rocksdb::kLZ4Compression;
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 32 * 1024;
  base.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (int f = 0; f < kFamilyCount; ++f) {
    rocksdb::ColumnFamilyOptions cf = base;
    if (f == kRollouts) {
      // Token ids and log-probs barely compress; spend no CPU on them.
      cf.compression = rocksdb::kNoCompression;
      cf.write_buffer_size = static_cast<size_t>(options.write_buffer_mb) << 20;
      cf.max_write_buffer_number = 4;
      cf.arena_block_size = 8 << 20;
      cf.target_file_size_base = 256ull << 20;
      cf.max_bytes_for_level_base = 1ull << 30;
      // Rollout keys arrive nearly in order, so L0 files rarely overlap and
      // most compactions are trivial moves; start them later regardless.
      cf.level0_file_num_compaction_trigger = 8;
      cf.level0_slowdown_writes_trigger = 32;
      cf.level0_stop_writes_trigger = 48;
    }
    descriptors.emplace_back(kFamilyNames[f], cf);
  }

  rocksdb::DB* raw = nullptr;
  rocksdb::Status s;
  if (options.read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, dir, descriptors, &store->families_, &raw);
  } else {
    s = rocksdb::DB::Open(db_options, dir, descriptors, &store->families_, &raw);
  }
  if (!s.ok()) return FromRocks(s, dir, "open");
  store->db_.reset(raw);
  Logger("storage")->debug("opened run store {}", dir);
  return store;
}

Status RunStore::Write(void* batch_ptr) {
  auto* batch = static_cast<rocksdb::WriteBatch*>(batch_ptr);
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync_writes;
  wo.disableWAL = false;
  return FromRocks(db_->Write(wo, batch), dir_, "write");
}

Result<std::optional<std::string>> RunStore::GetRaw(Family family, const std::string& key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), families_[family], key, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, dir_, "read");
  return std::optional<std::string>(std::move(value));
}

Status RunStore::Scan(Family family, const std::string& prefix,
                      const std::function<bool(const char*, size_t, const char*, size_t)>& fn) const {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  ro.readahead_size = 2 << 20;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, families_[family]));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (!k.starts_with(prefix)) break;
    rocksdb::Slice v = it->value();
    if (!fn(k.data(), k.size(), v.data(), v.size())) break;
  }
  return FromRocks(it->status(), dir_, "scan");
}

// ---- prompts ----

Status RunStore::PutPrompts(const std::vector<PromptRecord>& prompts) {
  rocksdb::WriteBatch batch;
  for (const auto& p : prompts) {
    batch.Put(families_[kPrompts], keys::Group(p.iteration, p.prompt_index), EncodePrompt(p));
  }
  return Write(&batch);
}

Result<std::optional<PromptRecord>> RunStore::GetPrompt(uint32_t iteration,
                                                       uint64_t prompt_index) const {
  SPAR_ASSIGN_OR_RETURN(auto raw, GetRaw(kPrompts, keys::Group(iteration, prompt_index)));
  if (!raw) return std::optional<PromptRecord>();
  PromptRecord p;
  SPAR_RETURN_IF_ERROR(DecodePrompt(*raw, &p));
  return std::optional<PromptRecord>(std::move(p));
}

Status RunStore::ForEachPrompt(uint32_t iteration,
                               const std::function<bool(const PromptRecord&)>& fn) const {
  Status inner;
  SPAR_RETURN_IF_ERROR(Scan(kPrompts, keys::Iteration(iteration),
                            [&](const char*, size_t, const char* v, size_t n) {
                              PromptRecord p;
                              inner = DecodePrompt(std::string_view(v, n), &p);
                              if (!inner.ok()) return false;
                              return fn(p);
                            }));
  return inner;
}

// ---- rollouts ----

namespace {
void AddGroupToBatch(rocksdb::WriteBatch* batch, rocksdb::ColumnFamilyHandle* cf,
                     const RolloutGroup& g) {
  int64_t created = g.created_micros != 0 ? g.created_micros : NowMicros();
  batch->Put(cf, keys::Group(g.iteration, g.prompt_index), EncodeGroupHeader(g, created));
  std::string scratch;
  std::string_view views[kRolloutParts];
  rocksdb::Slice slices[kRolloutParts];
  for (const auto& r : g.rollouts) {
    EncodeRolloutParts(r, &scratch, views);
    for (int i = 0; i < kRolloutParts; ++i) slices[i] = rocksdb::Slice(views[i].data(), views[i].size());
    std::string key = keys::Sample(g.iteration, g.prompt_index, r.sample_index);
    rocksdb::Slice key_slice(key);
    batch->Put(cf, rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(slices, kRolloutParts));
  }
}

size_t ApproximateGroupBytes(const RolloutGroup& g) {
  size_t bytes = 128 + g.prompt_id.size() + 4 * g.prompt_token_ids.size();
  for (const auto& r : g.rollouts)
    bytes += 96 + r.text.size() + r.generator_id.size() + 4 * (r.token_ids.size() + r.logprobs.size());
  return bytes;
}
}  // namespace

Status RunStore::PutGroup(const RolloutGroup& group) {
  SPAR_RETURN_IF_ERROR(ValidateGroup(group));
  rocksdb::WriteBatch batch(ApproximateGroupBytes(group));
  AddGroupToBatch(&batch, families_[kRollouts], group);
  return Write(&batch);
}

Status RunStore::PutGroups(const std::vector<RolloutGroup>& groups) {
  size_t bytes = 0;
  for (const auto& g : groups) bytes += ApproximateGroupBytes(g);
  rocksdb::WriteBatch batch(bytes);
  for (const auto& g : groups) {
    SPAR_RETURN_IF_ERROR(ValidateGroup(g));
    AddGroupToBatch(&batch, families_[kRollouts], g);
  }
  return Write(&batch);
}

Result<bool> RunStore::HasGroup(uint32_t iteration, uint64_t prompt_index) const {
  SPAR_ASSIGN_OR_RETURN(auto raw, GetRaw(kRollouts, keys::Group(iteration, prompt_index)));
  return raw.has_value();
}

Status RunStore::ScanGroups(const std::string& prefix,
                            const std::function<bool(const RolloutGroup&)>& fn) const {
  Status inner;
  std::optional<RolloutGroup> current;
  auto finish_current = [&]() -> bool {
    if (!current) return true;
    RolloutGroup done = std::move(*current);
    current.reset();
    for (size_t i = 0; i < done.rollouts.size(); ++i) {
      if (done.rollouts[i].sample_index != i) {
        inner = DataLoss("run store '" + dir_ + "': rollout group " + done.prompt_id +
                         " is incomplete (sample " + std::to_string(i) + " missing)");
        return false;
      }
    }
    return fn(done);
  };
  SPAR_RETURN_IF_ERROR(Scan(kRollouts, prefix, [&](const char* k, size_t kn, const char* v, size_t vn) {
    std::string_view value(v, vn);
    if (kn == keys::kGroupKeySize) {
      if (!finish_current()) return false;
      RolloutGroup g;
      inner = DecodeGroupHeader(value, &g);
      if (!inner.ok()) return false;
      // Mark every slot missing until its rollout is read.
      for (auto& r : g.rollouts) r.sample_index = UINT32_MAX;
      current = std::move(g);
      return true;
    }
    if (kn != keys::kSampleKeySize || !current) {
      inner = DataLoss("run store '" + dir_ + "': rollout without its group header");
      return false;
    }
    uint32_t sample = keys::ReadU32(k + keys::kGroupKeySize);
    if (sample >= current->rollouts.size()) {
      inner = DataLoss("run store '" + dir_ + "': rollout group " + current->prompt_id +
                       " has sample " + std::to_string(sample) + " beyond its K");
      return false;
    }
    inner = DecodeRollout(value, &current->rollouts[sample]);
    return inner.ok();
  }));
  SPAR_RETURN_IF_ERROR(inner);
  finish_current();
  return inner;
}

Result<std::optional<RolloutGroup>> RunStore::GetGroup(uint32_t iteration,
                                                      uint64_t prompt_index) const {
  std::optional<RolloutGroup> found;
  SPAR_RETURN_IF_ERROR(ScanGroups(keys::Group(iteration, prompt_index), [&](const RolloutGroup& g) {
    found = g;
    return false;
  }));
  return found;
}

Status RunStore::ForEachGroup(std::optional<uint32_t> iteration,
                              const std::function<bool(const RolloutGroup&)>& fn) const {
  return ScanGroups(iteration ? keys::Iteration(*iteration) : std::string(), fn);
}

Status RunStore::ForEachRolloutView(std::optional<uint32_t> iteration,
                                    const std::function<bool(const RolloutView&)>& fn) const {
  Status inner;
  SPAR_RETURN_IF_ERROR(Scan(kRollouts, iteration ? keys::Iteration(*iteration) : std::string(),
                            [&](const char* k, size_t kn, const char* v, size_t vn) {
                              if (kn != keys::kSampleKeySize) return true;  // group header
                              RolloutView view;
                              inner = DecodeRolloutView(std::string_view(v, vn), &view);
                              if (!inner.ok()) return false;
                              view.iteration = keys::ReadU32(k);
                              view.prompt_index = keys::ReadU64(k + 4);
                              return fn(view);
                            }));
  return inner;
}

// ---- scores ----

Status RunStore::PutScore(const ScoreRecord& score) {
  SPAR_RETURN_IF_ERROR(ValidateScore(score));
  ScoreRecord stamped = score;
  if (stamped.created_micros == 0) stamped.created_micros = NowMicros();
  rocksdb::WriteBatch batch;
  batch.Put(families_[kScores], keys::Group(score.iteration, score.prompt_index),
            EncodeScore(stamped));
  return Write(&batch);
}

Result<std::optional<ScoreRecord>> RunStore::GetScore(uint32_t iteration,
                                                     uint64_t prompt_index) const {
  SPAR_ASSIGN_OR_RETURN(auto raw, GetRaw(kScores, keys::Group(iteration, prompt_index)));
  if (!raw) return std::optional<ScoreRecord>();
  ScoreRecord s;
  SPAR_RETURN_IF_ERROR(DecodeScore(*raw, &s));
  return std::optional<ScoreRecord>(std::move(s));
}

Status RunStore::ForEachScore(std::optional<uint32_t> iteration,
                              const std::function<bool(const ScoreRecord&)>& fn) const {
  Status inner;
  SPAR_RETURN_IF_ERROR(Scan(kScores, iteration ? keys::Iteration(*iteration) : std::string(),
                            [&](const char*, size_t, const char* v, size_t n) {
                              ScoreRecord s;
                              inner = DecodeScore(std::string_view(v, n), &s);
                              if (!inner.ok()) return false;
                              return fn(s);
                            }));
  return inner;
}

// ---- state ----

Status RunStore::PutRunState(const std::string& json) {
  rocksdb::WriteBatch batch;
  batch.Put(families_[kState], "run", json);
  return Write(&batch);
}

Result<std::optional<std::string>> RunStore::GetRunState() const { return GetRaw(kState, "run"); }

Status RunStore::PutIterationState(uint32_t iteration, const std::string& json) {
  rocksdb::WriteBatch batch;
  batch.Put(families_[kState], "iter/" + keys::Iteration(iteration), json);
  return Write(&batch);
}

Result<std::optional<std::string>> RunStore::GetIterationState(uint32_t iteration) const {
  return GetRaw(kState, "iter/" + keys::Iteration(iteration));
}

namespace {
Status CheckDocumentName(const std::string& name) {
  if (name.empty() || name.find('\0') != std::string::npos || name == "run" || name.rfind("iter/", 0) == 0)
    return InvalidArgument("run store: bad document name '" + name + "' (non-empty, no NUL, not run or iter/...)");
  return Status::Ok();
}
}  // namespace

Status RunStore::PutDocument(const std::string& name, const std::string& json) {
  SPAR_RETURN_IF_ERROR(CheckDocumentName(name));
  rocksdb::WriteBatch batch;
  batch.Put(families_[kState], "doc/" + name, json);
  return Write(&batch);
}

Result<std::optional<std::string>> RunStore::GetDocument(const std::string& name) const {
  SPAR_RETURN_IF_ERROR(CheckDocumentName(name));
  return GetRaw(kState, "doc/" + name);
}

// ---- metrics ----

Status RunStore::AppendMetrics(const MetricsPoint& point) {
  MetricsPoint stamped = point;
  if (stamped.unix_micros == 0) stamped.unix_micros = NowMicros();
  rocksdb::WriteBatch batch;
  batch.Put(families_[kMetrics], keys::Metrics(stamped.unix_micros, metrics_sequence_++),
            EncodeMetrics(stamped));
  return Write(&batch);
}

Status RunStore::ForEachMetrics(int64_t since_micros, int64_t until_micros,
                                const std::function<bool(const MetricsPoint&)>& fn) const {
  rocksdb::ReadOptions ro;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, families_[kMetrics]));
  const std::string end = keys::Metrics(until_micros, 0);
  for (it->Seek(keys::Metrics(since_micros, 0)); it->Valid(); it->Next()) {
    if (it->key().compare(end) >= 0) break;
    MetricsPoint p;
    SPAR_RETURN_IF_ERROR(DecodeMetrics(std::string_view(it->value().data(), it->value().size()), &p));
    if (!fn(p)) break;
  }
  return FromRocks(it->status(), dir_, "scan metrics");
}

Status RunStore::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo, families_), dir_, "flush");
}

}  // namespace spar
