// spar/model/checkpoint.h — Hugging Face model folders: safetensors weights
// (one file or shards + index) in and out as LibTorch tensors, and whole
// folders (config.json, generation_config.json, tokenizer files, weights)
// written the way transformers' save_pretrained writes them.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/hf_config.h"
#include "model/safetensors.h"

namespace spar {

// File names of the Hugging Face layout.
inline constexpr char kSafetensorsSingleFile[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

// DType <-> LibTorch scalar type. Unimplemented for the safetensors types
// LibTorch 1.13 lacks (U16, U32, U64, F8_*) and for scalar types the format
// lacks (complex, quantized).
Result<torch::ScalarType> ToTorchDType(DType dtype);
Result<DType> FromTorchDType(torch::ScalarType type);

// Read access to the weights of an HF folder: `model.safetensors`, or the
// shards named by `model.safetensors.index.json` ("weight_map": tensor name ->
// shard file). When both exist the single file wins, as in transformers.
//
// Ownership: the reader owns the memory maps of its files; TensorEntry
// pointers it returns live as long as the reader. Tensors from Load/LoadInto
// own their memory and outlive it.
// Thread safety: immutable after Open(); all const methods may run
// concurrently (e.g. several threads loading different tensors).
class CheckpointReader {
 public:
  // Opens and validates every file (SafetensorsFile::Open's checks for
  // each). Errors name the folder and the file at fault:
  //   NotFound         `dir` is not a folder, or has neither
  //                    model.safetensors nor the index;
  //                    the index names a shard that does not exist;
  //   InvalidArgument  the index is not JSON, has no "weight_map" object, a
  //                    value is not a plain file name inside `dir`;
  //   DataLoss         the index maps a tensor to a shard that lacks it, or
  //                    a file is corrupt.
  // A tensor present in a shard but absent from the weight_map is ignored,
  // as transformers ignores it.
  static Result<std::unique_ptr<CheckpointReader>> Open(const std::string& dir);

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  // Header entry of `name`, or nullptr.
  const TensorEntry* Find(const std::string& name) const;
  bool Contains(const std::string& name) const { return Find(name) != nullptr; }
  // The file holding `name` (its basename), or "" if none does.
  std::string FileOf(const std::string& name) const;

  // Copies tensor `name` into a new contiguous CPU tensor, converted to
  // `dtype` if given. NotFound naming the tensor and folder if absent;
  // Unimplemented for a dtype LibTorch cannot hold.
  Result<torch::Tensor> Load(const std::string& name,
                             std::optional<torch::ScalarType> dtype = std::nullopt) const;
  // Copies tensor `name` into an existing tensor (any device and dtype,
  // e.g. a module parameter), converting as needed, without an intermediate
  // full-size copy on the CPU when the dtypes match. InvalidArgument if the
  // shapes differ (the message gives both). Not differentiable: call it
  // under torch::NoGradGuard for parameters that require grad.
  Status LoadInto(const std::string& name, torch::Tensor& destination) const;

  // Total bytes of all tensors in the weight map.
  uint64_t total_bytes() const;
  const std::string& dir() const { return dir_; }
  // The files in use (basenames), sorted.
  std::vector<std::string> files() const;

 private:
  CheckpointReader() = default;
  struct Location {
    const SafetensorsFile* file;
    const TensorEntry* entry;
  };
  Result<Location> Locate(const std::string& name) const;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> tensors_;
};

struct CheckpointWriteOptions {
  // A new shard starts when the next tensor would take the current one past
  // this size (a tensor larger than the limit gets a shard of its own), as in
  // transformers' save_pretrained (its default there is 5 GB).
  uint64_t max_shard_bytes = 5ull << 30;
  // Convert floating-point tensors to this type on write (e.g. kBFloat16);
  // integer and bool tensors keep their type.
  std::optional<torch::ScalarType> dtype;
};

// Writes the weights of an HF folder into `dir` (created if missing):
// `model.safetensors` if everything fits one shard, else
// `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
// ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}). Every
// file carries __metadata__ {"format": "pt"} (transformers requires it).
// Tensors (any device, any strided layout) are converted, brought to the
// CPU and written one at a time, in the given order, so peak extra memory is
// one tensor. Names must be unique; like save_pretrained, leave out tensors
// that are tied to others (lm_head.weight when tie_word_embeddings).
//
// Atomicity: shards are written under temp names and fsynced; then the
// previous save's marker files (model.safetensors, the index) are removed,
// the shards renamed into place, stale shards of an earlier save removed,
// and the index (or model.safetensors) appears last. A crash at any point
// leaves either the old complete checkpoint or a folder without a weights
// marker, never one that looks complete with mixed or partial shards. Other
// files in `dir` are left alone.
//
// Errors: InvalidArgument for an empty list, duplicate or empty names,
// undefined or sparse tensors, a zero max_shard_bytes or a non-floating
// options.dtype; Unimplemented for a scalar type safetensors lacks;
// Unavailable for I/O errors. On error no new weights file is published.
//
// Thread safety: any number of concurrent calls on different folders; one
// writer per folder at a time.
Status WriteCheckpoint(const std::string& dir,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const CheckpointWriteOptions& options = {});

// Writes a complete HF model folder: config.json (config.ToJson(), with
// torch_dtype set to options.dtype when given), generation_config.json
// (bos/eos/pad), the weights (WriteCheckpoint), and, if `tokenizer_dir` is
// not empty, its tokenizer.json and tokenizer_config.json (required:
// NotFound if missing) and special_tokens_map.json, tokenizer.model,
// chat_template.jinja when present.
//
// Atomicity: everything is written into a sibling "<dir>.partial-<pid>-<n>"
// folder which is then renamed to `dir`; an existing `dir` is first renamed
// aside and removed after the swap. Readers see the old folder, no folder,
// or the complete new one.
//
// Errors: config.Validate()'s (InvalidArgument), NotFound for missing
// tokenizer files, WriteCheckpoint's, Unavailable for I/O errors.
Status WriteHfFolder(const std::string& dir, const ModelConfig& config,
                     const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     const std::string& tokenizer_dir, const CheckpointWriteOptions& options = {});

}  // namespace spar
