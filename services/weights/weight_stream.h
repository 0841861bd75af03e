// spar/services/weights/weight_stream.h — cutting a policy's weights into
// versioned, checksummed buckets, and assembling them back, checking
// everything, before a single byte is applied.
//
// A stream is: header (version, revision, sizes, relay chain), buckets
// 0..n-1 in order, commit (manifest checksum). Buckets pack many tensors up to
// `bucket_bytes` (hundreds of MB in production); a tensor larger than a
// bucket is split across consecutive buckets. Each bucket carries the
// XXH3-64 of its data; the commit carries XXH3-64 over the bucket checksums.
//
// Copies: SerializeBucket() copies nothing: it frames a bucket as the bytes
// of a serialized message whose data are views of the tensors (the sender
// hands them to gRPC as slices, so the only copy on the sending side is the
// kernel's), hashing them where they lie; FillBucket() (a WeightBucket
// message, for tests and callers that want one) copies each byte once. The
// assembler copies each byte once (bucket -> staging buffer), hashing it
// while it is in cache. ReadMessage() stages a bucket straight from the
// receive buffers of a serialized message (gRPC slices), so the bucket's data
// is never materialised as a std::string on the receiving side. The staging
// buffers are kept across streams (Recycle(), and Reset() of a failed one):
// the next version is written into memory that is already mapped, which on a
// VM with expensive page faults is most of the cost of a fresh buffer.
// Applying the staged weights to a model is the service's job.
//
// Thread safety: neither class is thread-safe; each serves one stream.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "spar/v1/common.pb.h"

namespace google::protobuf::io {
class ZeroCopyInputStream;
}

namespace spar {

// A borrowed view of one tensor's bytes (row-major, contiguous).
struct WeightTensorView {
  std::string name;
  std::string dtype;            // "F32" | "F16" | "BF16" | "I64" | ...
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;
};

// One bucket as the serialized bytes of its WeightStreamMessage, the data
// left where it lies: `head` (message and bucket framing, version, index,
// slices, the data field's tag and length), the `data` pieces (views of the
// tensors, in order, none empty), then `tail` (the checksum field).
// Concatenated they are exactly WeightStreamMessage{bucket: FillBucket(i)}
// serialized. The views are the writer's tensors': valid as long as they are.
struct SerializedBucket {
  std::string head;
  std::vector<std::pair<const char*, size_t>> data;
  std::string tail;
  uint64_t data_bytes = 0;
};

// Byte size of one element of a safetensors dtype name, 0 if unknown.
size_t WeightDTypeSize(const std::string& dtype);

uint64_t Checksum(const void* data, size_t size);

class WeightStreamWriter {
 public:
  // The views must stay valid (and unchanged) while the writer is used.
  // InvalidArgument for an empty set, duplicate names, unknown dtypes or a
  // shape that disagrees with nbytes; bucket_bytes must be > 0. `revision`
  // marks an intermediate publication within `version` (common.proto).
  static Result<WeightStreamWriter> Create(uint64_t version, std::vector<WeightTensorView> tensors,
                                           uint64_t bucket_bytes, uint64_t revision = 0);

  v1::WeightStreamHeader Header(const std::vector<std::string>& relay_to = {}) const;
  uint32_t bucket_count() const { return static_cast<uint32_t>(buckets_.size()); }
  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t version() const { return version_; }
  uint64_t revision() const { return revision_; }
  // Fills bucket `index` (one copy of its bytes) and records its checksum.
  void FillBucket(uint32_t index, v1::WeightBucket* out);
  // Frames bucket `index` without copying its data (see SerializedBucket)
  // and records its checksum. `out`'s buffers are reused across calls.
  void SerializeBucket(uint32_t index, SerializedBucket* out);
  // The commit; FailedPrecondition until every bucket has been filled once.
  Result<v1::WeightStreamCommit> Commit() const;

 private:
  struct Piece {
    size_t tensor;
    uint64_t tensor_offset;
    uint64_t nbytes;
  };
  WeightStreamWriter() = default;
  // The bucket's version, index and slices (no data, no checksum).
  void BucketMetadata(uint32_t index, v1::WeightBucket* out) const;
  uint64_t version_ = 0;
  uint64_t revision_ = 0;
  uint64_t total_bytes_ = 0;
  std::vector<WeightTensorView> tensors_;
  std::vector<std::vector<Piece>> buckets_;
  std::vector<uint64_t> checksums_;
  std::vector<bool> filled_;
};

struct StagedTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;            // the whole tensor
  uint64_t filled = 0;          // bytes received so far
};

struct StagedWeights {
  uint64_t version = 0;
  uint64_t revision = 0;
  uint64_t total_bytes = 0;
  std::map<std::string, StagedTensor> tensors;
};

class WeightStreamAssembler {
 public:
  explicit WeightStreamAssembler(uint64_t max_total_bytes = 1ull << 40)
      : max_total_bytes_(max_total_bytes) {}

  // Starts (or, with header.resume_from_bucket == buckets_received() for
  // the same version and revision, resumes) a stream. InvalidArgument for a malformed
  // header; FailedPrecondition for a resume that does not line up.
  Status Begin(const v1::WeightStreamHeader& header);
  // Checks and stages one bucket: right version, next index, checksum,
  // slices inside the data and not overlapping, consistent
  // names/dtypes/shapes, no byte of a tensor written twice. DataLoss for a
  // checksum mismatch. A refused bucket leaves the stream where it was (it
  // can be sent again, e.g. on a resumed stream).
  Status AddBucket(const v1::WeightBucket& bucket);
  // Reads one serialized WeightStreamMessage from `in` (to its end). A
  // header or commit is parsed into *small and its kind returned (the caller
  // passes it to Begin / Commit); a bucket is checked and staged here as
  // AddBucket would, its data copied straight from the input's buffers into
  // the staging tensors (kBucket is returned). InvalidArgument for bytes that
  // are not a WeightStreamMessage; AddBucket's errors for a bad bucket.
  Result<v1::WeightStreamMessage::KindCase> ReadMessage(google::protobuf::io::ZeroCopyInputStream* in,
                                                        v1::WeightStreamMessage* small);
  // Gives staged weights (already applied or dropped) back, so their buffers
  // serve the next stream instead of fresh allocations.
  void Recycle(StagedWeights&& used);
  // Verifies the manifest and that every tensor is complete; hands over the
  // staged weights and resets. Nothing is returned unless all of it holds.
  Result<StagedWeights> Commit(const v1::WeightStreamCommit& commit);

  // Drops the stream in progress (its buffers are kept for the next one).
  void Reset();
  bool active() const { return active_; }
  uint64_t version() const { return staged_.version; }
  uint64_t revision() const { return staged_.revision; }
  uint32_t buckets_received() const { return static_cast<uint32_t>(checksums_.size()); }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  // One copy of bucket bytes into a staging tensor.
  struct CopyPiece {
    uint64_t offset;  // in the bucket's data
    uint64_t nbytes;
    char* dest;
  };
  // The bucket being staged: its copy plan, hash and what to undo if refused.
  struct OpenBucket {
    std::string where;
    uint32_t index = 0;
    uint64_t size = 0;
    uint64_t consumed = 0;
    size_t next_piece = 0;
    std::vector<CopyPiece> pieces;  // sorted by offset
    std::vector<std::pair<StagedTensor*, uint64_t>> undo;  // tensor, filled before
    std::shared_ptr<void> hash;     // XXH3 state
  };
  // Validates the bucket's metadata and plans its copies (BeginBucket),
  // copies and hashes data in pieces (BucketData), checks the checksum and
  // records the bucket (EndBucket). On any error the bucket is rolled back.
  Status BeginBucket(uint64_t version, uint32_t index,
                     const google::protobuf::RepeatedPtrField<v1::TensorSlice>& slices, uint64_t data_size);
  void BucketData(const char* data, size_t size);
  Status EndBucket(uint64_t checksum);
  void RollBack();
  StagedTensor TakeBuffer(const std::string& name, uint64_t nbytes);

  uint64_t max_total_bytes_;
  bool active_ = false;
  OpenBucket open_;
  std::map<std::string, StagedTensor> spare_;  // buffers of earlier streams
  v1::WeightStreamHeader header_;
  StagedWeights staged_;
  std::vector<uint64_t> checksums_;
  uint64_t bytes_received_ = 0;
  uint64_t staged_bytes_ = 0;
};

}  // namespace spar
