// spar/storage/run_store.h — the run store: one RocksDB database per run.
//
// Everything a run does is kept here so it can be inspected, exported and
// resumed after a crash: prompts, rollout groups, preference matrices and
// win rates, run and iteration state, and metrics history.
//
// Layout: one column family per kind of record. Keys are fixed-width
// big-endian integers, so RocksDB's byte order is numeric order:
//   prompts   iteration(4) | prompt_index(8)                -> PromptRecord
//   rollouts  iteration(4) | prompt_index(8)                -> group header
//             iteration(4) | prompt_index(8) | sample(4)    -> RolloutRecord
//   scores    iteration(4) | prompt_index(8)                -> ScoreRecord
//   state     "run" | "iter/" iteration(4)                  -> JSON text
//   metrics   unix_micros(8) | sequence(4)                  -> MetricsPoint
// so one prompt group, one iteration, or the whole run scans in order with a
// prefix. Values use a small versioned binary codec (storage/records.h);
// decoding validates every length and reports DataLoss on a bad record.
//
// Atomicity and durability: a group (its header and K rollouts, or its score
// record together with its iteration counters) is one WriteBatch. Every
// write goes through RocksDB's write-ahead log, so a write that returned OK
// survives a kill -9 of this process. `sync_writes` additionally fsyncs the
// log on every write, for power-loss durability at a cost in throughput.
//
// Errors: Open() reports FailedPrecondition when another process holds the
// database ("locked"), NotFound when `create_if_missing` is false and there
// is no database, DataLoss when RocksDB finds corruption, Unavailable for
// other I/O failures. No call throws.
//
// Thread safety: all methods may be called concurrently from any thread
// (RocksDB serialises writers internally).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/records.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace spar {

struct RunStoreOptions {
  bool create_if_missing = true;
  bool sync_writes = false;      // fsync the WAL on every write (power loss)
  bool read_only = false;        // open without taking the lock (inspection)
  int64_t write_buffer_mb = 128;  // memtable size for the rollouts family
};

class RunStore {
 public:
  // Opens (or creates) the store in folder `dir`.
  static Result<std::unique_ptr<RunStore>> Open(const std::string& dir,
                                                const RunStoreOptions& options = {});
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;

  const std::string& dir() const { return dir_; }

  // ---- prompts ----
  // Writes all prompts of one shard in one batch (replacing same keys).
  Status PutPrompts(const std::vector<PromptRecord>& prompts);
  Result<std::optional<PromptRecord>> GetPrompt(uint32_t iteration, uint64_t prompt_index) const;
  // Visits an iteration's prompts in index order; `fn` returns false to stop.
  Status ForEachPrompt(uint32_t iteration, const std::function<bool(const PromptRecord&)>& fn) const;

  // ---- rollouts ----
  // Writes a group header and its K rollouts atomically. InvalidArgument if
  // the group is empty or its sample indices are not 0..K-1.
  Status PutGroup(const RolloutGroup& group);
  // Writes several groups in one batch (each group stays whole).
  Status PutGroups(const std::vector<RolloutGroup>& groups);
  Result<std::optional<RolloutGroup>> GetGroup(uint32_t iteration, uint64_t prompt_index) const;
  Result<bool> HasGroup(uint32_t iteration, uint64_t prompt_index) const;
  // Visits whole groups in (iteration, prompt_index) order. With an
  // iteration, only that iteration. `fn` returns false to stop.
  Status ForEachGroup(std::optional<uint32_t> iteration,
                      const std::function<bool(const RolloutGroup&)>& fn) const;
  // Visits rollouts without copying their arrays: the view points into the
  // iterator's memory and is valid only during the call.
  Status ForEachRolloutView(std::optional<uint32_t> iteration,
                            const std::function<bool(const RolloutView&)>& fn) const;

  // ---- scores ----
  Status PutScore(const ScoreRecord& score);
  Result<std::optional<ScoreRecord>> GetScore(uint32_t iteration, uint64_t prompt_index) const;
  Status ForEachScore(std::optional<uint32_t> iteration,
                      const std::function<bool(const ScoreRecord&)>& fn) const;

  // ---- run / iteration state (JSON documents) ----
  Status PutRunState(const std::string& json);
  Result<std::optional<std::string>> GetRunState() const;
  Status PutIterationState(uint32_t iteration, const std::string& json);
  Result<std::optional<std::string>> GetIterationState(uint32_t iteration) const;
  // Other named documents (e.g. "eval/baseline", the held-out responses of
  // pi_0). Names are non-empty, without NUL bytes, and not "run" or "iter/...".
  Status PutDocument(const std::string& name, const std::string& json);
  Result<std::optional<std::string>> GetDocument(const std::string& name) const;

  // ---- metrics history ----
  Status AppendMetrics(const MetricsPoint& point);
  // Points with since_micros <= time < until_micros, in time order.
  Status ForEachMetrics(int64_t since_micros, int64_t until_micros,
                        const std::function<bool(const MetricsPoint&)>& fn) const;

  // Flushes memtables to SST files (tests, before a backup).
  Status Flush();

 private:
  RunStore() = default;
  enum Family { kDefault = 0, kPrompts, kRollouts, kScores, kState, kMetrics, kFamilyCount };
  Status Write(void* batch);  // rocksdb::WriteBatch*
  Result<std::optional<std::string>> GetRaw(Family family, const std::string& key) const;
  Status ScanGroups(const std::string& prefix,
                    const std::function<bool(const RolloutGroup&)>& fn) const;
  Status Scan(Family family, const std::string& prefix,
              const std::function<bool(const char* key, size_t key_size, const char* value,
                                       size_t value_size)>& fn) const;

  std::string dir_;
  RunStoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> families_;
  mutable std::atomic<uint32_t> metrics_sequence_{0};
};

}  // namespace spar
