// spar/model/safetensors.h — the .safetensors file format, read and written
// without LibTorch.
//
// Format (github.com/huggingface/safetensors): 8 bytes little-endian u64 N,
// N bytes of UTF-8 JSON header, then the data section. The header is an
// object mapping each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (byte offsets relative to the data section) plus an optional
// "__metadata__" object of string -> string. Tensors are row-major and
// little-endian; together they cover the data section exactly, with no gap
// and no overlap (the reference implementation rejects anything else, and so
// do we).
//
// Reading memory-maps the file (read-only, MAP_PRIVATE): Open() costs one
// header parse, whatever the size of the file, and tensor bytes are paged in
// only when touched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace spar {

// Element types of the safetensors format. The first ten map to LibTorch
// scalar types (model/checkpoint.h); the unsigned wide ints and the fp8 types
// are parsed so files holding them open, but LibTorch 1.13 cannot load them.
enum class DType {
  kF64,
  kF32,
  kF16,
  kBF16,
  kI64,
  kI32,
  kI16,
  kI8,
  kU8,
  kBool,
  kU16,
  kU32,
  kU64,
  kF8E4M3,
  kF8E5M2,
};

// "F32" -> kF32 etc. (the names the format uses, upper case). InvalidArgument
// naming the allowed values for anything else.
Result<DType> ParseDType(std::string_view name);
// kF32 -> "F32".
std::string_view DTypeName(DType dtype);
// Bytes per element.
size_t DTypeSize(DType dtype);

// One tensor of an open file. `data` points into the file's mapping and is
// valid while the SafetensorsFile lives; it is read-only (writing through it
// faults) and only as aligned as the file makes it (files spar writes align
// every tensor to its element size when tensors are given largest dtype
// first; files from elsewhere may not). `nbytes` == product(shape) *
// DTypeSize(dtype).
struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;
  uint64_t nbytes;

  int64_t numel() const;
};

// A memory-mapped, validated .safetensors file.
//
// Ownership: the object owns the mapping; every TensorEntry (and its data
// pointer) it hands out lives as long as the object.
// Thread safety: immutable after Open(); every const method may be called
// from any number of threads at once.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Never crashes on a bad file; errors name the
  // file and, where one is at fault, the tensor:
  //   NotFound      the file does not exist;
  //   Unavailable   it cannot be opened or mapped;
  //   DataLoss      anything wrong with its contents: shorter than 8 bytes,
  //                 header length over 100 MB or past the end of the file,
  //                 header not UTF-8 JSON or not an object, a bad entry
  //                 (unknown dtype, shape not non-negative integers,
  //                 data_offsets not [begin, end] with begin <= end, byte
  //                 size != product(shape) * dtype size, size overflow), a
  //                 tensor ending past the data section (a truncated file),
  //                 overlapping tensors, gaps or trailing bytes in the data
  //                 section, duplicate names, a non-string __metadata__ value.
  static Result<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Every tensor, in file (data offset) order.
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  // The tensor called `name`, or nullptr.
  const TensorEntry* Find(std::string_view name) const;
  // The header's "__metadata__" (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  // Size of the whole file in bytes.
  uint64_t file_size() const { return size_; }

  // Paging hints for one tensor of this file (no-ops for others): Prefetch
  // asks the kernel to start reading its pages (MADV_WILLNEED) before a copy;
  // Release drops them from this process (MADV_DONTNEED) after one, so
  // loading a large model does not keep two copies resident. Both are safe
  // at any time: a released page is read again from the file if touched.
  void Prefetch(const TensorEntry& entry) const;
  void Release(const TensorEntry& entry) const;

 private:
  SafetensorsFile() = default;
  void Advise(const TensorEntry& entry, int advice) const;

  std::string path_;
  void* mapping_ = nullptr;
  uint64_t size_ = 0;
  std::vector<TensorEntry> tensors_;
  std::unordered_map<std::string_view, size_t> index_;  // views into tensors_
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: `nbytes` bytes at `data`, row-major, little-endian.
// The caller keeps `data` alive until the write returns.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  uint64_t nbytes;
};

// What a writer needs to know about a tensor before its bytes: the header
// holds every offset, so all tensors are declared up front.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;  // product(shape) * DTypeSize(dtype)
};

// Streams one .safetensors file to disk, tensor by tensor, so a writer never
// needs every tensor in memory at once (a checkpoint converts one tensor,
// writes it, frees it).
//
// The header (8-byte length + JSON padded with spaces to a multiple of 8, as
// the reference writer does) lists the tensors in the declared order and the
// data follows in that order. Bytes go to "<path>.tmp.<pid>.<n>"; Finish()
// fsyncs and renames it to `path`, so `path` is either absent/old or complete.
// Destroying an unfinished writer removes the temp file.
//
// Thread safety: none; one thread drives a writer.
class SafetensorsWriter {
 public:
  // InvalidArgument for an empty or duplicate name, "__metadata__" as a
  // name, a negative dimension or a size overflow; Unavailable if the temp
  // file cannot be created or written.
  static Result<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends bytes of the tensors in declared order; a tensor may arrive in
  // several pieces. OutOfRange if this would write past the last tensor.
  Status Append(const void* data, uint64_t nbytes);
  // Name of the tensor the next Append() continues (empty when all are done).
  std::string next_tensor() const;
  // FailedPrecondition unless exactly the declared bytes were appended;
  // Unavailable on an fsync/rename failure. The writer is spent afterwards.
  Status Finish();

  const std::string& path() const { return path_; }
  // Total file size once finished: 8 + header + data.
  uint64_t file_size() const { return 8 + header_size_ + data_size_; }

 private:
  SafetensorsWriter() = default;
  void Abandon();

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> ends_;  // data offset where each tensor ends
  uint64_t header_size_ = 0;
  uint64_t data_size_ = 0;
  uint64_t written_ = 0;  // data bytes appended so far
  bool finished_ = false;
};

// Writes `tensors` (in the given order) and `metadata` into one .safetensors
// file at `path`, atomically (temp file + fsync + rename). InvalidArgument
// if a view's nbytes != product(shape) * dtype size, plus the errors of
// SafetensorsWriter.
Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace spar
