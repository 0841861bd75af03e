#include "model/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/files.h"

namespace spar {

namespace fs = std::filesystem;

namespace {

constexpr char kFormatKey[] = "format";
constexpr char kFormatPt[] = "pt";

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string ShapeString(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A unique suffix for temp names: pid + a process-wide counter.
std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  return std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

// Makes renames and unlinks in `dir` durable.
Status SyncDir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Unavailable("cannot open folder '" + dir.string() + "': " + std::strerror(errno));
  }
  int result = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (result != 0) {
    return Unavailable("cannot sync folder '" + dir.string() + "': " + std::strerror(err));
  }
  return Status::Ok();
}

Status Rename(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return Unavailable("cannot rename '" + from.string() + "' to '" + to.string() +
                       "': " + std::strerror(errno));
  }
  return Status::Ok();
}

Status RemoveIfExists(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Unavailable("cannot remove '" + path.string() + "': " + std::strerror(errno));
  }
  return Status::Ok();
}

// model.safetensors or a shard name "model-NNNNN-of-NNNNN.safetensors":
// the files an earlier save may have left. Anything else is not ours.
bool IsWeightsFile(const std::string& name) {
  if (name == kSafetensorsSingleFile) return true;
  const std::string pattern = "model-#####-of-#####.safetensors";
  if (name.size() != pattern.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const bool digit = name[i] >= '0' && name[i] <= '9';
    if (pattern[i] == '#' ? !digit : name[i] != pattern[i]) return false;
  }
  return true;
}

std::string ShardName(size_t index, size_t count) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buffer;
}

// A weight_map value must stay inside the folder.
bool IsSafeRelativePath(const std::string& name) {
  if (name.empty()) return false;
  fs::path p(name);
  if (p.is_absolute()) return false;
  for (const auto& part : p) {
    if (part == "..") return false;
  }
  return true;
}

// The mapped bytes of `entry` as a CPU tensor of `type`, without a copy when
// the data is aligned for its element type; a misaligned tensor (possible in
// files from other writers) is first copied to aligned memory.
torch::Tensor MappedTensor(const TensorEntry& entry, torch::ScalarType type) {
  const size_t element = DTypeSize(entry.dtype);
  auto options = torch::TensorOptions().dtype(type).device(torch::kCPU);
  if (reinterpret_cast<uintptr_t>(entry.data) % element == 0) {
    // Read-only use only: the mapping is PROT_READ.
    return torch::from_blob(const_cast<uint8_t*>(entry.data), entry.shape, options);
  }
  torch::Tensor copy = torch::empty(entry.shape, options);
  if (entry.nbytes > 0) std::memcpy(copy.data_ptr(), entry.data, entry.nbytes);
  return copy;
}

const char* TorchDTypeName(torch::ScalarType type) {
  switch (type) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kFloat:
      return "float32";
    default:
      return nullptr;
  }
}

}  // namespace

Result<torch::ScalarType> ToTorchDType(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return torch::kDouble;
    case DType::kF32:
      return torch::kFloat;
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kI64:
      return torch::kLong;
    case DType::kI32:
      return torch::kInt;
    case DType::kI16:
      return torch::kShort;
    case DType::kI8:
      return torch::kChar;
    case DType::kU8:
      return torch::kByte;
    case DType::kBool:
      return torch::kBool;
    default:
      break;
  }
  return Unimplemented("safetensors dtype " + std::string(DTypeName(dtype)) +
                       " has no LibTorch equivalent here");
}

Result<DType> FromTorchDType(torch::ScalarType type) {
  switch (type) {
    case torch::kDouble:
      return DType::kF64;
    case torch::kFloat:
      return DType::kF32;
    case torch::kHalf:
      return DType::kF16;
    case torch::kBFloat16:
      return DType::kBF16;
    case torch::kLong:
      return DType::kI64;
    case torch::kInt:
      return DType::kI32;
    case torch::kShort:
      return DType::kI16;
    case torch::kChar:
      return DType::kI8;
    case torch::kByte:
      return DType::kU8;
    case torch::kBool:
      return DType::kBool;
    default:
      break;
  }
  return Unimplemented(std::string("LibTorch dtype ") + c10::toString(type) +
                       " cannot be stored in safetensors");
}

// --- CheckpointReader ------------------------------------------------------------

Result<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& dir) {
  std::unique_ptr<CheckpointReader> reader(new CheckpointReader());
  reader->dir_ = dir;
  const fs::path root(dir);
  const fs::path single = root / kSafetensorsSingleFile;
  const fs::path index = root / kSafetensorsIndexFile;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return NotFound("model folder '" + dir + "' does not exist or is not a folder");
  }

  if (fs::exists(single, ec)) {
    SPAR_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single.string()));
    for (const auto& entry : file->tensors()) {
      reader->tensors_[entry.name] = Location{file.get(), &entry};
    }
    reader->files_.push_back(std::move(file));
    return reader;
  }
  if (!fs::exists(index, ec)) {
    return NotFound("model folder '" + dir + "' has neither " + kSafetensorsSingleFile + " nor " +
                    kSafetensorsIndexFile);
  }

  const std::string where = "index '" + index.string() + "'";
  SPAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index.string()));
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(where + " is not valid JSON: " + e.what());
  }
  if (!json.is_object()) return InvalidArgument(where + " must be a JSON object");
  auto map_it = json.find("weight_map");
  if (map_it == json.end() || !map_it->is_object()) {
    return InvalidArgument(where + ": 'weight_map' must be an object of tensor name -> file");
  }

  std::map<std::string, const SafetensorsFile*> opened;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    const std::string& name = it.key();
    if (!it->is_string()) {
      return InvalidArgument(where + ": weight_map[" + Quote(name) + "] must be a file name, got " +
                             it->dump());
    }
    const std::string shard = it->get<std::string>();
    if (!IsSafeRelativePath(shard)) {
      return InvalidArgument(where + ": weight_map[" + Quote(name) + "] = " + Quote(shard) +
                             " is not a file inside the model folder");
    }
    auto shard_it = opened.find(shard);
    if (shard_it == opened.end()) {
      const fs::path shard_path = root / shard;
      if (!fs::exists(shard_path, ec)) {
        return NotFound(where + " maps tensor " + Quote(name) + " to shard " + Quote(shard) +
                        ", which does not exist");
      }
      SPAR_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(shard_path.string()));
      shard_it = opened.emplace(shard, file.get()).first;
      reader->files_.push_back(std::move(file));
    }
    const TensorEntry* entry = shard_it->second->Find(name);
    if (entry == nullptr) {
      return DataLoss(where + " maps tensor " + Quote(name) + " to shard " + Quote(shard) +
                      ", which does not contain it");
    }
    reader->tensors_[name] = Location{shard_it->second, entry};
  }
  return reader;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, location] : tensors_) out.push_back(name);
  return out;  // std::map order: sorted
}

const TensorEntry* CheckpointReader::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.entry;
}

std::string CheckpointReader::FileOf(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return "";
  return fs::path(it->second.file->path()).filename().string();
}

uint64_t CheckpointReader::total_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, location] : tensors_) total += location.entry->nbytes;
  return total;
}

std::vector<std::string> CheckpointReader::files() const {
  std::vector<std::string> out;
  for (const auto& file : files_) out.push_back(fs::path(file->path()).filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

Result<CheckpointReader::Location> CheckpointReader::Locate(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return NotFound("tensor " + Quote(name) + " is not in the checkpoint at '" + dir_ + "'");
  }
  return it->second;
}

Result<torch::Tensor> CheckpointReader::Load(const std::string& name,
                                             std::optional<torch::ScalarType> dtype) const {
  SPAR_ASSIGN_OR_RETURN(Location location, Locate(name));
  const TensorEntry& entry = *location.entry;
  Result<torch::ScalarType> type = ToTorchDType(entry.dtype);
  if (!type.ok()) return type.status().WithContext("tensor " + Quote(name) + " in '" + dir_ + "'");
  torch::NoGradGuard no_grad;
  location.file->Prefetch(entry);
  torch::Tensor mapped = MappedTensor(entry, *type);
  // clone()/to() give the result its own memory; nothing aliases the mapping.
  torch::Tensor result =
      (dtype && *dtype != *type) ? mapped.to(*dtype) : mapped.clone(at::MemoryFormat::Contiguous);
  location.file->Release(entry);
  return result;
}

Status CheckpointReader::LoadInto(const std::string& name, torch::Tensor& destination) const {
  SPAR_ASSIGN_OR_RETURN(Location location, Locate(name));
  const TensorEntry& entry = *location.entry;
  if (!destination.defined()) {
    return InvalidArgument("loading tensor " + Quote(name) + ": the destination is undefined");
  }
  if (!destination.sizes().equals(entry.shape)) {
    return InvalidArgument("loading tensor " + Quote(name) + " from '" + dir_ + "': shape " +
                           ShapeString(entry.shape) + " in the checkpoint, " +
                           ShapeString(destination.sizes()) + " in the destination");
  }
  Result<torch::ScalarType> type = ToTorchDType(entry.dtype);
  if (!type.ok()) return type.status().WithContext("tensor " + Quote(name) + " in '" + dir_ + "'");
  torch::NoGradGuard no_grad;
  location.file->Prefetch(entry);
  destination.copy_(MappedTensor(entry, *type));
  location.file->Release(entry);
  return Status::Ok();
}

// --- Writing -------------------------------------------------------------------

namespace {

struct PlannedTensor {
  const std::string* name;
  const torch::Tensor* tensor;
  torch::ScalarType type;  // on disk
  TensorSpec spec;
};

struct Shard {
  std::string name;
  std::vector<const PlannedTensor*> tensors;
  uint64_t bytes = 0;
};

// Converts and writes one shard into `path` (atomically, via the writer).
Status WriteShard(const fs::path& path, const Shard& shard) {
  std::vector<TensorSpec> specs;
  specs.reserve(shard.tensors.size());
  for (const PlannedTensor* t : shard.tensors) specs.push_back(t->spec);
  SPAR_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path.string(), std::move(specs),
                                                               {{kFormatKey, kFormatPt}}));
  torch::NoGradGuard no_grad;
  for (const PlannedTensor* t : shard.tensors) {
    torch::Tensor data = t->tensor->detach();
    // Convert where the tensor lives (cheaper on a GPU, and halves the
    // transfer for bf16), then bring it over; one tensor at a time.
    if (data.scalar_type() != t->type) data = data.to(t->type);
    data = data.to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(data.numel()) * data.element_size();
    if (nbytes != t->spec.nbytes()) {
      return Internal("tensor " + Quote(*t->name) + ": " + std::to_string(nbytes) +
                      " bytes after conversion, expected " + std::to_string(t->spec.nbytes()));
    }
    if (nbytes > 0) SPAR_RETURN_IF_ERROR(writer->Append(data.data_ptr(), nbytes));
  }
  return writer->Finish();
}

}  // namespace

Status WriteCheckpoint(const std::string& dir,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const CheckpointWriteOptions& options) {
  const std::string where = "writing checkpoint '" + dir + "'";
  if (tensors.empty()) return InvalidArgument(where + ": no tensors");
  if (options.max_shard_bytes == 0) return InvalidArgument(where + ": max_shard_bytes is 0");
  if (options.dtype && !c10::isFloatingType(*options.dtype)) {
    return InvalidArgument(where + ": the conversion dtype must be floating point, got " +
                           c10::toString(*options.dtype));
  }

  std::vector<PlannedTensor> planned;
  planned.reserve(tensors.size());
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty()) return InvalidArgument(where + ": a tensor has an empty name");
    if (!names.insert(name).second) {
      return InvalidArgument(where + ": tensor " + Quote(name) + " is given twice");
    }
    if (!tensor.defined()) {
      return InvalidArgument(where + ": tensor " + Quote(name) + " is undefined");
    }
    if (tensor.layout() != torch::kStrided) {
      return InvalidArgument(where + ": tensor " + Quote(name) + " is not a dense tensor");
    }
    torch::ScalarType type = tensor.scalar_type();
    if (options.dtype && c10::isFloatingType(type)) type = *options.dtype;
    Result<DType> dtype = FromTorchDType(type);
    if (!dtype.ok()) return dtype.status().WithContext(where + ": tensor " + Quote(name));
    std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    planned.push_back(
        PlannedTensor{&name, &tensor, type, TensorSpec{name, *dtype, std::move(shape)}});
  }

  // Greedy in the given order, like save_pretrained's splitting.
  std::vector<Shard> shards(1);
  for (const auto& t : planned) {
    const uint64_t bytes = t.spec.nbytes();
    if (!shards.back().tensors.empty() && shards.back().bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
    }
    shards.back().tensors.push_back(&t);
    shards.back().bytes += bytes;
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    shards[i].name = shards.size() == 1 ? kSafetensorsSingleFile : ShardName(i, shards.size());
  }

  const fs::path root(dir);
  SPAR_RETURN_IF_ERROR(EnsureDir(dir));

  // 1. Every shard complete and synced under a staging name.
  const std::string suffix = UniqueSuffix();
  std::vector<fs::path> staged;
  auto discard_staged = [&staged]() {
    for (const auto& path : staged) RemoveIfExists(path).IgnoreError();
  };
  for (const auto& shard : shards) {
    fs::path path = root / ("." + shard.name + ".staged-" + suffix);
    staged.push_back(path);
    Status status = WriteShard(path, shard);
    if (!status.ok()) {
      discard_staged();
      return status.WithContext(where);
    }
  }

  // 2. Retire the old markers so the folder never looks complete while old
  // and new shards mix, 3. move the shards in, 4. drop stale shards of an
  // earlier save, 5. publish the new marker last.
  std::set<std::string> new_files;
  for (const auto& shard : shards) new_files.insert(shard.name);
  Status status = RemoveIfExists(root / kSafetensorsIndexFile);
  if (status.ok() && shards.size() > 1) status = RemoveIfExists(root / kSafetensorsSingleFile);
  for (size_t i = 0; status.ok() && i < shards.size(); ++i) {
    status = Rename(staged[i], root / shards[i].name);
  }
  if (!status.ok()) {
    discard_staged();
    return status.WithContext(where);
  }
  std::error_code ec;
  for (const auto& item : fs::directory_iterator(root, ec)) {
    const std::string name = item.path().filename().string();
    if (IsWeightsFile(name) && new_files.count(name) == 0) {
      SPAR_RETURN_IF_ERROR(RemoveIfExists(item.path()).WithContext(where));
    }
  }
  SPAR_RETURN_IF_ERROR(SyncDir(root).WithContext(where));

  if (shards.size() > 1) {
    nlohmann::json weight_map = nlohmann::json::object();
    uint64_t total = 0;
    for (const auto& shard : shards) {
      total += shard.bytes;
      for (const PlannedTensor* t : shard.tensors) weight_map[*t->name] = shard.name;
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    SPAR_RETURN_IF_ERROR(
        WriteFileAtomic((root / kSafetensorsIndexFile).string(), index.dump(2) + "\n")
            .WithContext(where));
    SPAR_RETURN_IF_ERROR(SyncDir(root).WithContext(where));
  }
  return Status::Ok();
}

Status WriteHfFolder(const std::string& dir, const ModelConfig& config,
                     const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                     const std::string& tokenizer_dir, const CheckpointWriteOptions& options) {
  const std::string where = "writing model folder '" + dir + "'";
  SPAR_RETURN_IF_ERROR(config.Validate().WithContext(where + ": config"));
  fs::path target(dir);
  if (!target.has_filename()) target = target.parent_path();  // "out/" -> "out"
  if (target.empty()) return InvalidArgument("writing model folder: empty path");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  SPAR_RETURN_IF_ERROR(EnsureDir(parent.string()));

  const std::string suffix = UniqueSuffix();
  const fs::path staging = parent / (target.filename().string() + ".partial-" + suffix);
  std::error_code ec;
  fs::remove_all(staging, ec);
  auto fail = [&](const Status& status) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    return status.WithContext(where);
  };
  SPAR_RETURN_IF_ERROR(EnsureDir(staging.string()));

  ModelConfig saved = config;
  if (options.dtype) {
    if (const char* name = TorchDTypeName(*options.dtype)) saved.torch_dtype = name;
  }
  Status status =
      WriteFileAtomic((staging / "config.json").string(), saved.ToJson().dump(2) + "\n");
  if (status.ok()) {
    status = WriteFileAtomic((staging / "generation_config.json").string(),
                             saved.GenerationConfigJson().dump(2) + "\n");
  }
  if (status.ok()) status = WriteCheckpoint(staging.string(), tensors, options);
  if (status.ok() && !tokenizer_dir.empty()) {
    const fs::path from(tokenizer_dir);
    struct TokenizerFile {
      const char* name;
      bool required;
    };
    const TokenizerFile kFiles[] = {{"tokenizer.json", true},
                                    {"tokenizer_config.json", true},
                                    {"special_tokens_map.json", false},
                                    {"tokenizer.model", false},
                                    {"chat_template.jinja", false}};
    for (const auto& file : kFiles) {
      const fs::path source = from / file.name;
      if (!fs::exists(source, ec)) {
        if (!file.required) continue;
        status = NotFound("tokenizer folder '" + tokenizer_dir + "' has no " + file.name);
        break;
      }
      Result<std::string> text = ReadFileToString(source.string());
      status = text.ok() ? WriteFileAtomic((staging / file.name).string(), *text) : text.status();
      if (!status.ok()) break;
    }
  }
  if (status.ok()) status = SyncDir(staging);
  if (!status.ok()) return fail(status);

  // Swap: the old folder steps aside, the new one takes its name.
  fs::path old;
  if (fs::exists(target, ec)) {
    old = parent / (target.filename().string() + ".old-" + suffix);
    status = Rename(target, old);
    if (!status.ok()) return fail(status);
  }
  status = Rename(staging, target);
  if (!status.ok()) {
    if (!old.empty()) Rename(old, target).IgnoreError();  // put the old one back
    return fail(status);
  }
  SPAR_RETURN_IF_ERROR(SyncDir(parent).WithContext(where));
  if (!old.empty()) fs::remove_all(old, ec);
  return Status::Ok();
}

}  // namespace spar
