#include "services/weights/weight_stream.h"

#include <cstring>
#include <set>

#include <xxhash.h>

namespace spar {

size_t WeightDTypeSize(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

uint64_t Checksum(const void* data, size_t size) { return XXH3_64bits(data, size); }

namespace {

Status CheckShape(const std::string& where, const std::string& dtype,
                  const std::vector<int64_t>& shape, uint64_t nbytes) {
  size_t elem = WeightDTypeSize(dtype);
  if (elem == 0) return InvalidArgument(where + ": unknown dtype '" + dtype + "'");
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument(where + ": negative dimension in shape");
    if (d != 0 && count > (UINT64_MAX / static_cast<uint64_t>(d)))
      return InvalidArgument(where + ": shape overflows");
    count *= static_cast<uint64_t>(d);
  }
  if (count > UINT64_MAX / elem || count * elem != nbytes)
    return InvalidArgument(where + ": shape and dtype give " + std::to_string(count * elem) +
                           " bytes, but it has " + std::to_string(nbytes));
  return Status::Ok();
}

uint64_t Manifest(const std::vector<uint64_t>& checksums) {
  return XXH3_64bits(checksums.data(), checksums.size() * sizeof(uint64_t));
}

}  // namespace

Result<WeightStreamWriter> WeightStreamWriter::Create(uint64_t version,
                                                      std::vector<WeightTensorView> tensors,
                                                      uint64_t bucket_bytes) {
  if (tensors.empty()) return InvalidArgument("weight stream: no tensors");
  if (bucket_bytes == 0) return InvalidArgument("weight stream: bucket_bytes must be > 0");
  WeightStreamWriter w;
  w.version_ = version;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second)
      return InvalidArgument("weight stream: tensor '" + t.name + "' appears twice");
    SPAR_RETURN_IF_ERROR(CheckShape("weight stream: tensor '" + t.name + "'", t.dtype, t.shape, t.nbytes));
    if (t.nbytes > 0 && t.data == nullptr)
      return InvalidArgument("weight stream: tensor '" + t.name + "' has no data");
    w.total_bytes_ += t.nbytes;
  }
  w.tensors_ = std::move(tensors);
  // Greedy packing in the given order; big tensors are split.
  std::vector<Piece> current;
  uint64_t used = 0;
  for (size_t i = 0; i < w.tensors_.size(); ++i) {
    uint64_t offset = 0;
    const uint64_t n = w.tensors_[i].nbytes;
    do {
      uint64_t take = std::min(n - offset, bucket_bytes - used);
      current.push_back({i, offset, take});
      used += take;
      offset += take;
      if (used == bucket_bytes) {
        w.buckets_.push_back(std::move(current));
        current.clear();
        used = 0;
      }
    } while (offset < n);
  }
  if (!current.empty()) w.buckets_.push_back(std::move(current));
  w.checksums_.assign(w.buckets_.size(), 0);
  w.filled_.assign(w.buckets_.size(), false);
  return w;
}

v1::WeightStreamHeader WeightStreamWriter::Header(const std::vector<std::string>& relay_to) const {
  v1::WeightStreamHeader h;
  h.set_version(version_);
  h.set_total_bytes(total_bytes_);
  h.set_bucket_count(bucket_count());
  h.set_tensor_count(static_cast<uint32_t>(tensors_.size()));
  for (const auto& r : relay_to) h.add_relay_to(r);
  return h;
}

void WeightStreamWriter::FillBucket(uint32_t index, v1::WeightBucket* out) {
  out->Clear();
  out->set_version(version_);
  out->set_index(index);
  uint64_t size = 0;
  for (const auto& p : buckets_[index]) size += p.nbytes;
  std::string* data = out->mutable_data();
  data->resize(size);
  uint64_t at = 0;
  for (const auto& p : buckets_[index]) {
    const auto& t = tensors_[p.tensor];
    auto* slice = out->add_tensors();
    slice->set_name(t.name);
    slice->set_dtype(t.dtype);
    for (int64_t d : t.shape) slice->add_shape(d);
    slice->set_offset(at);
    slice->set_nbytes(p.nbytes);
    slice->set_tensor_offset(p.tensor_offset);
    slice->set_tensor_nbytes(t.nbytes);
    if (p.nbytes) std::memcpy(data->data() + at, static_cast<const char*>(t.data) + p.tensor_offset, p.nbytes);
    at += p.nbytes;
  }
  checksums_[index] = Checksum(data->data(), data->size());
  filled_[index] = true;
  out->set_checksum(checksums_[index]);
}

Result<v1::WeightStreamCommit> WeightStreamWriter::Commit() const {
  for (size_t i = 0; i < filled_.size(); ++i)
    if (!filled_[i])
      return FailedPrecondition("weight stream: bucket " + std::to_string(i) + " was never sent");
  v1::WeightStreamCommit c;
  c.set_version(version_);
  c.set_manifest_checksum(Manifest(checksums_));
  c.set_total_bytes(total_bytes_);
  return c;
}

void WeightStreamAssembler::Reset() {
  active_ = false;
  header_.Clear();
  staged_ = StagedWeights();
  checksums_.clear();
  bytes_received_ = 0;
  staged_bytes_ = 0;
}

Status WeightStreamAssembler::Begin(const v1::WeightStreamHeader& header) {
  if (header.resume_from_bucket() > 0) {
    if (!active_ || header.version() != staged_.version ||
        header.resume_from_bucket() != buckets_received() ||
        header.total_bytes() != header_.total_bytes() || header.bucket_count() != header_.bucket_count())
      return FailedPrecondition(
          "weight stream: cannot resume version " + std::to_string(header.version()) +
          " at bucket " + std::to_string(header.resume_from_bucket()) + " (have " +
          (active_ ? "version " + std::to_string(staged_.version) + ", " +
                         std::to_string(buckets_received()) + " buckets"
                   : std::string("nothing")) +
          "); restart from bucket 0");
    header_.mutable_relay_to()->CopyFrom(header.relay_to());
    return Status::Ok();
  }
  Reset();
  if (header.bucket_count() == 0 || header.tensor_count() == 0)
    return InvalidArgument("weight stream header: bucket_count and tensor_count must be > 0");
  if (header.total_bytes() > max_total_bytes_)
    return ResourceExhausted("weight stream header: " + std::to_string(header.total_bytes()) +
                             " bytes exceed this receiver's limit of " + std::to_string(max_total_bytes_));
  header_ = header;
  staged_.version = header.version();
  staged_.total_bytes = header.total_bytes();
  active_ = true;
  return Status::Ok();
}

Status WeightStreamAssembler::AddBucket(const v1::WeightBucket& bucket) {
  const std::string where = "weight bucket " + std::to_string(bucket.index());
  if (!active_) return FailedPrecondition(where + ": no stream header before it");
  if (bucket.version() != staged_.version)
    return InvalidArgument(where + ": version " + std::to_string(bucket.version()) +
                           " in a stream of version " + std::to_string(staged_.version));
  if (bucket.index() != buckets_received())
    return InvalidArgument(where + ": out of order, expected bucket " + std::to_string(buckets_received()));
  if (bucket.index() >= header_.bucket_count())
    return InvalidArgument(where + ": beyond the announced " + std::to_string(header_.bucket_count()) + " buckets");
  const std::string& data = bucket.data();
  if (Checksum(data.data(), data.size()) != bucket.checksum())
    return DataLoss(where + ": checksum mismatch (corrupted in transit?)");
  for (int i = 0; i < bucket.tensors_size(); ++i) {
    const auto& s = bucket.tensors(i);
    const std::string at = where + " slice " + std::to_string(i) + " ('" + s.name() + "')";
    if (s.offset() > data.size() || s.nbytes() > data.size() - s.offset())
      return InvalidArgument(at + ": outside the bucket's data");
    auto it = staged_.tensors.find(s.name());
    if (it == staged_.tensors.end()) {
      if (staged_.tensors.size() >= header_.tensor_count())
        return InvalidArgument(at + ": more tensors than the announced " + std::to_string(header_.tensor_count()));
      std::vector<int64_t> shape(s.shape().begin(), s.shape().end());
      SPAR_RETURN_IF_ERROR(CheckShape(at, s.dtype(), shape, s.tensor_nbytes()));
      if (staged_bytes_ + s.tensor_nbytes() > header_.total_bytes())
        return InvalidArgument(at + ": tensors add up to more than the announced total_bytes");
      StagedTensor t;
      t.dtype = s.dtype();
      t.shape = std::move(shape);
      t.bytes.resize(s.tensor_nbytes());
      staged_bytes_ += s.tensor_nbytes();
      it = staged_.tensors.emplace(s.name(), std::move(t)).first;
    }
    StagedTensor& t = it->second;
    if (t.dtype != s.dtype() || s.tensor_nbytes() != t.bytes.size() ||
        !std::equal(t.shape.begin(), t.shape.end(), s.shape().begin(), s.shape().end()))
      return InvalidArgument(at + ": dtype or shape differs from its earlier pieces");
    if (s.tensor_offset() != t.filled || s.nbytes() > t.bytes.size() - t.filled)
      return InvalidArgument(at + ": piece at byte " + std::to_string(s.tensor_offset()) +
                             " does not continue the tensor (have " + std::to_string(t.filled) + " bytes)");
    if (s.nbytes()) std::memcpy(t.bytes.data() + t.filled, data.data() + s.offset(), s.nbytes());
    t.filled += s.nbytes();
  }
  checksums_.push_back(bucket.checksum());
  bytes_received_ += data.size();
  return Status::Ok();
}

Result<StagedWeights> WeightStreamAssembler::Commit(const v1::WeightStreamCommit& commit) {
  if (!active_) return FailedPrecondition("weight stream commit: no stream in progress");
  if (commit.version() != staged_.version)
    return InvalidArgument("weight stream commit: version " + std::to_string(commit.version()) +
                           " for a stream of version " + std::to_string(staged_.version));
  if (buckets_received() != header_.bucket_count())
    return DataLoss("weight stream commit: " + std::to_string(buckets_received()) + " of " +
                    std::to_string(header_.bucket_count()) + " buckets arrived");
  if (Manifest(checksums_) != commit.manifest_checksum())
    return DataLoss("weight stream commit: manifest checksum mismatch");
  if (staged_.tensors.size() != header_.tensor_count())
    return DataLoss("weight stream commit: " + std::to_string(staged_.tensors.size()) + " of " +
                    std::to_string(header_.tensor_count()) + " tensors arrived");
  for (const auto& [name, t] : staged_.tensors)
    if (t.filled != t.bytes.size())
      return DataLoss("weight stream commit: tensor '" + name + "' is incomplete (" +
                      std::to_string(t.filled) + " of " + std::to_string(t.bytes.size()) + " bytes)");
  if (bytes_received_ != header_.total_bytes())
    return DataLoss("weight stream commit: received " + std::to_string(bytes_received_) +
                    " bytes, header announced " + std::to_string(header_.total_bytes()));
  StagedWeights out = std::move(staged_);
  Reset();
  return out;
}

}  // namespace spar
