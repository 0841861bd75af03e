#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <utility>

namespace spar {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; spar copies it without byte swapping");

namespace {

// The reference implementation's limit: a header this large is an attack or
// a corrupt length, not a model.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr std::array<DTypeInfo, 15> kDTypes = {{
    {DType::kF64, "F64", 8},
    {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},
    {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
    {DType::kU16, "U16", 2},
    {DType::kU32, "U32", 4},
    {DType::kU64, "U64", 8},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kF8E5M2, "F8_E5M2", 1},
}};

const DTypeInfo& Info(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  return kDTypes[0];  // unreachable for a valid enum value
}

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string JsonTypeName(const nlohmann::json& j) {
  if (j.is_number_unsigned()) return "non-negative integer";
  if (j.is_number_integer()) return "negative integer";
  if (j.is_number_float()) return "float";
  return j.type_name();
}

// Product of dimensions times element size, or nullopt on overflow (or a
// result that does not fit int64, which LibTorch needs).
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape, size_t element_size) {
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t n = element_size;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    uint64_t ud = static_cast<uint64_t>(d);
    if (ud != 0 && n > kMax / ud) return std::nullopt;
    n *= ud;
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Status WriteAll(int fd, const void* data, uint64_t nbytes, const std::string& path) {
  // Linux caps a single write at ~2 GiB; stay well under it.
  constexpr uint64_t kChunk = 1ull << 30;
  const auto* p = static_cast<const uint8_t*>(data);
  while (nbytes > 0) {
    ssize_t n = ::write(fd, p, static_cast<size_t>(std::min(nbytes, kChunk)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable("cannot write '" + path + "': " + std::strerror(errno));
    }
    p += n;
    nbytes -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// Parsed header entry before the data section is known to be consistent.
struct RawEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

Result<RawEntry> ParseEntry(const std::string& file, const std::string& name,
                            const nlohmann::json& value) {
  auto bad = [&](const std::string& what) {
    return DataLoss("safetensors file '" + file + "': tensor " + Quote(name) + ": " + what);
  };
  if (!value.is_object()) return bad("header entry must be an object, got " + JsonTypeName(value));
  RawEntry entry;
  entry.name = name;

  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return bad("missing 'dtype'");
  if (!dtype_it->is_string()) {
    return bad("'dtype' must be a string, got " + JsonTypeName(*dtype_it));
  }
  Result<DType> dtype = ParseDType(dtype_it->get_ref<const std::string&>());
  if (!dtype.ok()) return bad(dtype.status().message());
  entry.dtype = *dtype;

  auto shape_it = value.find("shape");
  if (shape_it == value.end()) return bad("missing 'shape'");
  if (!shape_it->is_array()) return bad("'shape' must be an array, got " + JsonTypeName(*shape_it));
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned()) {
      return bad("'shape' must hold non-negative integers, got " + dim.dump() + " (" +
                 JsonTypeName(dim) + ")");
    }
    uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad("'shape' dimension " + std::to_string(d) + " is too large");
    }
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) return bad("missing 'data_offsets'");
  const nlohmann::json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return bad("'data_offsets' must be [begin, end] with non-negative integers, got " +
               offsets.dump());
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.begin > entry.end) {
    return bad("'data_offsets' [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
               "] has begin > end");
  }
  std::optional<uint64_t> nbytes = ByteSize(entry.shape, DTypeSize(entry.dtype));
  if (!nbytes) {
    return bad("shape " + ShapeString(entry.shape) + " of " + std::string(DTypeName(entry.dtype)) +
               " overflows the byte size");
  }
  if (*nbytes != entry.end - entry.begin) {
    return bad("byte size mismatch: shape " + ShapeString(entry.shape) + " of " +
               std::string(DTypeName(entry.dtype)) + " needs " + std::to_string(*nbytes) +
               " bytes but data_offsets [" + std::to_string(entry.begin) + ", " +
               std::to_string(entry.end) + "] span " + std::to_string(entry.end - entry.begin));
  }
  return entry;
}

}  // namespace

Result<DType> ParseDType(std::string_view name) {
  for (const auto& info : kDTypes) {
    if (info.name == name) return info.dtype;
  }
  std::string allowed;
  for (const auto& info : kDTypes) {
    if (!allowed.empty()) allowed += ", ";
    allowed += info.name;
  }
  return InvalidArgument("unknown dtype " + Quote(name) + " (allowed: " + allowed + ")");
}

std::string_view DTypeName(DType dtype) { return Info(dtype).name; }

size_t DTypeSize(DType dtype) { return Info(dtype).size; }

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

uint64_t TensorSpec::nbytes() const {
  return ByteSize(shape, DTypeSize(dtype)).value_or(std::numeric_limits<uint64_t>::max());
}

// --- Reading -----------------------------------------------------------------

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const std::string where = "safetensors file '" + path + "'";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFound(where + " does not exist");
    return Unavailable("cannot open " + where + ": " + std::strerror(err));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Unavailable("cannot stat " + where + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Unavailable(where + " is not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return DataLoss(where + " is " + std::to_string(size) +
                    " bytes, shorter than the 8-byte header length");
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) {
    return Unavailable("cannot mmap " + where + ": " + std::strerror(map_err));
  }

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->size_ = size;
  const auto* base = static_cast<const uint8_t*>(mapping);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxHeaderBytes) {
    return DataLoss(where + ": header length " + std::to_string(header_len) + " is absurd (limit " +
                    std::to_string(kMaxHeaderBytes) + " bytes)");
  }
  if (header_len > size - 8) {
    return DataLoss(where + ": header length " + std::to_string(header_len) +
                    " runs past the end of the file (" + std::to_string(size) +
                    " bytes): truncated or not a safetensors file");
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  const char* header_end = header_begin + header_len;

  // Duplicate top-level keys would silently collapse to the last one in a
  // DOM parse, so the parser callback records each key as it is read.
  std::set<std::string> seen_keys;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_end, on_event);
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(where + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) {
    return DataLoss(where + ": header must be a JSON object, got " + JsonTypeName(header));
  }
  if (!duplicate.empty()) {
    return DataLoss(where + ": tensor " + Quote(duplicate) + " appears twice in the header");
  }

  std::vector<RawEntry> raw;
  raw.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (it->is_null()) continue;
      if (!it->is_object()) {
        return DataLoss(where + ": __metadata__ must be an object of strings, got " +
                        JsonTypeName(*it));
      }
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return DataLoss(where + ": __metadata__ value " + Quote(m.key()) +
                          " must be a string, got " + JsonTypeName(*m));
        }
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SPAR_ASSIGN_OR_RETURN(RawEntry entry, ParseEntry(path, it.key(), *it));
    raw.push_back(std::move(entry));
  }

  // Tensors must tile the data section exactly, as the reference reader
  // demands: sorted by offset, each starts where the previous ends, the last
  // ends at the end of the file.
  const uint64_t data_size = size - 8 - header_len;
  std::sort(raw.begin(), raw.end(), [](const RawEntry& a, const RawEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  for (const auto& entry : raw) {
    if (entry.end > data_size) {
      return DataLoss(where + ": tensor " + Quote(entry.name) + " ends at data byte " +
                      std::to_string(entry.end) + ", beyond the data section (" +
                      std::to_string(data_size) + " bytes): the file is truncated");
    }
  }
  uint64_t expected_begin = 0;
  const RawEntry* previous = nullptr;
  for (const auto& entry : raw) {
    if (entry.begin < expected_begin) {
      return DataLoss(where + ": tensor " + Quote(entry.name) + " (data bytes " +
                      std::to_string(entry.begin) + ".." + std::to_string(entry.end) +
                      ") overlaps tensor " + Quote(previous->name) + " (ending at " +
                      std::to_string(expected_begin) + ")");
    }
    if (entry.begin > expected_begin) {
      return DataLoss(where + ": gap in the data section: tensor " + Quote(entry.name) +
                      " begins at data byte " + std::to_string(entry.begin) + " but " +
                      (previous ? "tensor " + Quote(previous->name) + " ends"
                                : std::string("the data section starts")) +
                      " at " + std::to_string(expected_begin));
    }
    expected_begin = entry.end;
    previous = &entry;
  }
  if (expected_begin != data_size) {
    return DataLoss(where + ": the tensors cover " + std::to_string(expected_begin) +
                    " bytes of the " + std::to_string(data_size) +
                    "-byte data section (trailing bytes)");
  }

  const uint8_t* data_base = base + 8 + header_len;
  file->tensors_.reserve(raw.size());
  for (auto& entry : raw) {
    file->tensors_.push_back(TensorEntry{std::move(entry.name), entry.dtype, std::move(entry.shape),
                                         data_base + entry.begin, entry.end - entry.begin});
  }
  // tensors_ no longer grows, so views of its names stay valid.
  for (size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_.emplace(file->tensors_[i].name, i);
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

const TensorEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::Advise(const TensorEntry& entry, int advice) const {
  const auto* base = static_cast<const uint8_t*>(mapping_);
  if (entry.nbytes == 0 || entry.data < base || entry.data + entry.nbytes > base + size_) return;
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(entry.data) & ~(kPage - 1);
  uintptr_t end = reinterpret_cast<uintptr_t>(entry.data + entry.nbytes);
  // Hints only: a failure changes nothing a caller can observe.
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, advice);
}

void SafetensorsFile::Prefetch(const TensorEntry& entry) const { Advise(entry, MADV_WILLNEED); }

void SafetensorsFile::Release(const TensorEntry& entry) const { Advise(entry, MADV_DONTNEED); }

// --- Writing -----------------------------------------------------------------

Result<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs,
    const std::map<std::string, std::string>& metadata) {
  const std::string where = "writing '" + path + "'";
  // An ordered_json keeps the declared order in the header, so readers that
  // list tensors in header order see the caller's order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string_view> names;
  std::vector<uint64_t> ends;
  ends.reserve(specs.size());
  uint64_t offset = 0;
  for (const auto& spec : specs) {
    if (spec.name.empty()) return InvalidArgument(where + ": a tensor has an empty name");
    if (spec.name == kMetadataKey) {
      return InvalidArgument(where + ": '__metadata__' is reserved and cannot name a tensor");
    }
    if (!names.insert(spec.name).second) {
      return InvalidArgument(where + ": tensor " + Quote(spec.name) + " is given twice");
    }
    std::optional<uint64_t> nbytes = ByteSize(spec.shape, DTypeSize(spec.dtype));
    if (!nbytes) {
      return InvalidArgument(where + ": tensor " + Quote(spec.name) + " has a bad shape " +
                             ShapeString(spec.shape));
    }
    if (offset > std::numeric_limits<uint64_t>::max() - *nbytes) {
      return InvalidArgument(where + ": total size overflows");
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(DTypeName(spec.dtype));
    entry["shape"] = spec.shape;
    entry["data_offsets"] = {offset, offset + *nbytes};
    header[spec.name] = std::move(entry);
    offset += *nbytes;
    ends.push_back(offset);
  }
  std::string header_text = header.dump();
  // Pad with spaces to a multiple of 8 so the data section, and every tensor
  // whose offset is a multiple of its element size, is aligned in a mapping.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter());
  writer->path_ = path;
  // pid + counter: unique across processes and across writers in this one.
  static std::atomic<uint64_t> counter{0};
  writer->tmp_path_ =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  writer->specs_ = std::move(specs);
  writer->ends_ = std::move(ends);
  writer->header_size_ = header_text.size();
  writer->data_size_ = offset;
  writer->fd_ = ::open(writer->tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (writer->fd_ < 0) {
    return Unavailable("cannot create '" + writer->tmp_path_ + "': " + std::strerror(errno));
  }
  std::array<uint8_t, 8> length;
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));
  Status status = WriteAll(writer->fd_, length.data(), length.size(), writer->tmp_path_);
  if (status.ok()) {
    status = WriteAll(writer->fd_, header_text.data(), header_text.size(), writer->tmp_path_);
  }
  if (!status.ok()) return status;  // the destructor removes the temp file
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) Abandon();
}

void SafetensorsWriter::Abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  finished_ = true;
}

std::string SafetensorsWriter::next_tensor() const {
  auto it = std::upper_bound(ends_.begin(), ends_.end(), written_);
  // Zero-byte tensors end where they begin; skip past them to the one that
  // will actually receive bytes.
  if (it == ends_.end()) return "";
  return specs_[static_cast<size_t>(it - ends_.begin())].name;
}

Status SafetensorsWriter::Append(const void* data, uint64_t nbytes) {
  if (finished_) return FailedPrecondition("writing '" + path_ + "': the writer is finished");
  if (nbytes > data_size_ - written_) {
    return OutOfRange("writing '" + path_ + "': " + std::to_string(nbytes) +
                      " more bytes would exceed the declared " + std::to_string(data_size_) +
                      " (already " + std::to_string(written_) + ")");
  }
  Status status = WriteAll(fd_, data, nbytes, tmp_path_);
  if (!status.ok()) {
    Abandon();
    return status;
  }
  written_ += nbytes;
  return Status::Ok();
}

Status SafetensorsWriter::Finish() {
  if (finished_) return FailedPrecondition("writing '" + path_ + "': the writer is finished");
  if (written_ != data_size_) {
    std::string missing = next_tensor();
    Abandon();
    return FailedPrecondition("writing '" + path_ + "': only " + std::to_string(written_) + " of " +
                              std::to_string(data_size_) + " data bytes were appended (tensor " +
                              Quote(missing) + " is incomplete)");
  }
  if (::fsync(fd_) != 0) {
    int err = errno;
    Abandon();
    return Unavailable("cannot flush '" + tmp_path_ + "': " + std::strerror(err));
  }
  int close_result = ::close(fd_);
  fd_ = -1;
  if (close_result != 0) {
    int err = errno;
    Abandon();
    return Unavailable("cannot close '" + tmp_path_ + "': " + std::strerror(err));
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    Abandon();
    return Unavailable("cannot rename '" + tmp_path_ + "' to '" + path_ +
                       "': " + std::strerror(err));
  }
  finished_ = true;
  return Status::Ok();
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& view : tensors) {
    std::optional<uint64_t> expected = ByteSize(view.shape, DTypeSize(view.dtype));
    if (expected && *expected != view.nbytes) {
      return InvalidArgument("writing '" + path + "': tensor " + Quote(view.name) + " has " +
                             std::to_string(view.nbytes) + " bytes but shape " +
                             ShapeString(view.shape) + " of " + std::string(DTypeName(view.dtype)) +
                             " needs " + std::to_string(*expected));
    }
    if (view.nbytes > 0 && view.data == nullptr) {
      return InvalidArgument("writing '" + path + "': tensor " + Quote(view.name) + " has no data");
    }
    specs.push_back(TensorSpec{view.name, view.dtype, view.shape});
  }
  SPAR_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, std::move(specs), metadata));
  for (const auto& view : tensors) {
    if (view.nbytes > 0) SPAR_RETURN_IF_ERROR(writer->Append(view.data, view.nbytes));
  }
  return writer->Finish();
}

}  // namespace spar
