// spar/services/weights/nccl_broadcast.h — one policy version from the
// learner's rank 0 to every generator over an NCCL broadcast group, with a
// version handshake so a version is applied everywhere or nowhere.
//
// The group: rank 0 is the learner, ranks 1..N-1 the generators. It meets
// through a c10d TCPStore (the learner serves it at `rendezvous`): rank 0
// puts the ncclUniqueId there, the others read it and join one NCCL
// communicator, kept for the life of the group.
//
// One version, v:
//   1. rank 0 puts the manifest (version, tensor names / dtypes / shapes,
//      the bucket plan) under "spar/v<v>/manifest";
//   2. every rank broadcasts the buckets: rank 0 packs its tensors into a
//      few large device buffers (bucket_bytes each, tensors 256-byte
//      aligned, a tensor larger than a bucket gets one of its own), NCCL
//      broadcasts them, the receivers unpack into host staging;
//   3. every receiver checks what it got (all bytes, sizes against the
//      manifest) and puts "ok" or "error: why" under "spar/v<v>/ack/<rank>";
//   4. rank 0 waits for every ack; all "ok" -> it puts "commit" under
//      "spar/v<v>/decision", otherwise "abort: <rank>: why";
//   5. receivers hand the staged weights to the caller only on "commit".
// A receiver that fails, or a timeout anywhere, leaves every generator on
// its old version (the decision is "abort", or never comes).
//
// Stopping: with a cancel flag (NcclGroupOptions::cancel, the handshakes'
// `cancel`), every wait — the rendezvous, store keys, a pending NCCL
// operation — looks at it at least every kCancelPoll and ends with
// Cancelled once it is set; a pending NCCL operation is aborted first
// (ncclCommAbort on the waiting thread), so a service can stop and join the
// thread that uses the group instead of leaving it to its timeout.
//
// What runs without a GPU: the bucket plan, the manifest codec and the
// handshake (over any RendezvousStore, the TCPStore included) are plain
// C++ and unit-tested on the CPU. The NCCL transport is compiled when the
// build has NCCL (SPAR_WITH_NCCL; nccl.h + libnccl + the CUDA runtime),
// and Join() says Unimplemented otherwise.
//
// Thread safety: a group is used by one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "services/weights/weight_stream.h"

namespace spar {

// Is the NCCL transport compiled into this build?
bool NcclBroadcastAvailable();

// ---- bucket plan -----------------------------------------------------------

struct BucketSlot {
  uint32_t tensor = 0;   // index into the manifest's tensors
  uint64_t offset = 0;   // byte offset inside the bucket (256-aligned)
  uint64_t nbytes = 0;
};

struct BucketPlan {
  std::vector<std::vector<BucketSlot>> buckets;
  std::vector<uint64_t> bucket_bytes;  // used bytes of each bucket (with padding)
  uint64_t largest_bucket() const;
};

constexpr uint64_t kBucketAlignment = 256;

// Packs tensors in order into buckets of at most `bucket_bytes` (a tensor
// larger than that gets a bucket of its own). InvalidArgument when
// bucket_bytes is 0.
Result<BucketPlan> PlanBuckets(const std::vector<uint64_t>& tensor_nbytes, uint64_t bucket_bytes);

// ---- manifest --------------------------------------------------------------

struct BroadcastTensor {
  std::string name;
  std::string dtype;  // safetensors names: F32, BF16, F16, ...
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
};

struct BroadcastManifest {
  uint64_t version = 0;
  uint64_t bucket_bytes = 0;
  std::vector<BroadcastTensor> tensors;
  BucketPlan plan;
};

Result<BroadcastManifest> MakeManifest(uint64_t version, const std::vector<WeightTensorView>& tensors,
                                       uint64_t bucket_bytes);
std::string EncodeManifest(const BroadcastManifest& manifest);
// Validates everything (dtypes, shapes vs sizes, the plan covering every
// tensor once inside its bucket): DataLoss naming the problem.
Result<BroadcastManifest> DecodeManifest(const std::string& bytes);

// ---- rendezvous store and handshake ------------------------------------------

// The key-value store the group meets through. Implementations: the c10d
// TCPStore (ConnectTcpStore) and an in-memory one for tests.
class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  virtual Status Set(const std::string& key, const std::string& value) = 0;
  // Blocks until `key` exists (DeadlineExceeded after `timeout`).
  virtual Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

// The c10d TCPStore at host:port (served by rank 0, `world_size` members).
Result<std::unique_ptr<RendezvousStore>> ConnectTcpStore(const std::string& address, int rank, int world_size,
                                                         std::chrono::milliseconds timeout);
// A store in this process (threads of one test).
std::unique_ptr<RendezvousStore> NewInMemoryStore();

// How often a cancellable wait looks at its cancel flag.
constexpr std::chrono::milliseconds kCancelPoll{250};

// store->Get in slices of kCancelPoll while `cancel` (may be null) is not
// set: Cancelled once it is, else Get's result for the whole `timeout`.
Result<std::string> GetUnlessCancelled(RendezvousStore* store, const std::string& key,
                                       std::chrono::milliseconds timeout, const std::atomic<bool>* cancel);

// Rank 0's side of one version's handshake.
class HandshakeSender {
 public:
  HandshakeSender(RendezvousStore* store, int world_size, std::chrono::milliseconds timeout,
                  const std::atomic<bool>* cancel = nullptr)
      : store_(store), world_size_(world_size), timeout_(timeout), cancel_(cancel) {}
  Status Announce(const BroadcastManifest& manifest);
  // Waits for every receiver's ack, then writes the decision. OK = commit;
  // Aborted naming the rank that failed (or DeadlineExceeded for a missing
  // ack) = abort, which every receiver is told.
  Status Decide(uint64_t version);

 private:
  RendezvousStore* store_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  const std::atomic<bool>* cancel_;
};

// A receiver's side.
class HandshakeReceiver {
 public:
  HandshakeReceiver(RendezvousStore* store, int rank, std::chrono::milliseconds timeout,
                    const std::atomic<bool>* cancel = nullptr)
      : store_(store), rank_(rank), timeout_(timeout), cancel_(cancel) {}
  Result<BroadcastManifest> AwaitManifest(uint64_t version);
  // Reports this rank's outcome, then waits for the decision: OK = apply;
  // otherwise keep the old version: Aborted (with rank 0's reason), or this
  // rank's own error when it was the one that refused.
  Status AckAndAwaitDecision(uint64_t version, const Status& received);

 private:
  RendezvousStore* store_;
  int rank_;
  std::chrono::milliseconds timeout_;
  const std::atomic<bool>* cancel_;
};

// ---- the group -------------------------------------------------------------

struct NcclGroupOptions {
  std::string rendezvous = "127.0.0.1:29600";  // TCPStore, served by rank 0
  int rank = 0;                                  // 0 = the learner
  int world_size = 2;                            // 1 + generators
  int cuda_device = 0;
  uint64_t bucket_bytes = 256ull << 20;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  // Optional, owned by the caller and outliving the group: once true, every
  // wait of Join / Send / Receive / NextVersion ends with Cancelled within
  // about kCancelPoll (see "Stopping" above).
  const std::atomic<bool>* cancel = nullptr;
};

struct BroadcastStats {
  uint64_t version = 0;
  uint64_t bytes = 0;
  uint32_t buckets = 0;
  double seconds = 0;
};

class NcclWeightGroup {
 public:
  // Joins (blocks until all ranks have, or the timeout). Unimplemented in
  // a build without NCCL; FailedPrecondition when the CUDA device cannot be
  // used (no GPU, driver); Unavailable for a failed rendezvous or NCCL
  // error; InvalidArgument for bad options; Cancelled when options.cancel
  // was set meanwhile.
  static Result<std::unique_ptr<NcclWeightGroup>> Join(const NcclGroupOptions& options);
  ~NcclWeightGroup();

  // Rank 0: sends `tensors` (host or device pointers, any mix) as `version`
  // and runs the handshake. OK only when every receiver applied it.
  Result<BroadcastStats> Send(uint64_t version, const std::vector<WeightTensorView>& tensors);
  // Ranks > 0: receives the next version (the caller names which it
  // expects next: `version`), returns the staged weights once rank 0
  // committed. Aborted when the version was abandoned.
  Result<StagedWeights> Receive(uint64_t version);
  // The version a receiver should wait for next, as rank 0 announced it
  // (blocks up to the timeout for "spar/latest").
  Result<uint64_t> NextVersion(uint64_t after, std::chrono::milliseconds timeout);

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }

 private:
  explicit NcclWeightGroup(NcclGroupOptions options);
  struct Transport;  // NCCL communicator, stream and device buffer
  NcclGroupOptions options_;
  std::unique_ptr<RendezvousStore> store_;
  std::unique_ptr<Transport> transport_;
};

// Copies the received bucket bytes of `plan` into host staging (the
// receiver's unpack, without the device), checking sizes. Exposed for the
// CPU tests of the packing.
Status UnpackBucket(const BroadcastManifest& manifest, uint32_t bucket, const uint8_t* data, uint64_t size,
                    StagedWeights* staged);
// Rank 0's pack on the host (the device path does the same with
// cudaMemcpyAsync): `out` gets bucket `bucket` of the plan.
Status PackBucket(const BroadcastManifest& manifest, const std::vector<WeightTensorView>& tensors, uint32_t bucket,
                  std::vector<uint8_t>* out);
// A new staging area with every tensor sized and nothing filled.
StagedWeights NewStaging(const BroadcastManifest& manifest);
// Every tensor filled completely: else DataLoss naming the first that is not.
Status CheckComplete(const StagedWeights& staged);

}  // namespace spar
