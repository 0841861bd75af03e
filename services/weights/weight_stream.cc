#include "services/weights/weight_stream.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <new>
#include <set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream.h>
#include <google/protobuf/wire_format_lite.h>
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
                                                      uint64_t bucket_bytes, uint64_t revision) {
  if (tensors.empty()) return InvalidArgument("weight stream: no tensors");
  if (bucket_bytes == 0) return InvalidArgument("weight stream: bucket_bytes must be > 0");
  WeightStreamWriter w;
  w.version_ = version;
  w.revision_ = revision;
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
  h.set_revision(revision_);
  h.set_total_bytes(total_bytes_);
  h.set_bucket_count(bucket_count());
  h.set_tensor_count(static_cast<uint32_t>(tensors_.size()));
  for (const auto& r : relay_to) h.add_relay_to(r);
  return h;
}

void WeightStreamWriter::BucketMetadata(uint32_t index, v1::WeightBucket* out) const {
  out->Clear();
  out->set_version(version_);
  out->set_index(index);
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
    at += p.nbytes;
  }
}

void WeightStreamWriter::FillBucket(uint32_t index, v1::WeightBucket* out) {
  BucketMetadata(index, out);
  uint64_t size = 0;
  for (const auto& p : buckets_[index]) size += p.nbytes;
  std::string* data = out->mutable_data();
  data->resize(size);
  uint64_t at = 0;
  for (const auto& p : buckets_[index]) {
    const auto& t = tensors_[p.tensor];
    if (p.nbytes) std::memcpy(data->data() + at, static_cast<const char*>(t.data) + p.tensor_offset, p.nbytes);
    at += p.nbytes;
  }
  checksums_[index] = Checksum(data->data(), data->size());
  filled_[index] = true;
  out->set_checksum(checksums_[index]);
}

namespace {

using google::protobuf::io::CodedOutputStream;

void AppendVarint(std::string* out, uint64_t v) {
  uint8_t bytes[10];
  const uint8_t* end = CodedOutputStream::WriteVarint64ToArray(v, bytes);
  out->append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(end - bytes));
}

// Tags (field number << 3 | wire type) of the fields framed by hand.
constexpr char kMessageBucketTag = (2 << 3) | 2;  // WeightStreamMessage.bucket
constexpr char kBucketDataTag = (4 << 3) | 2;     // WeightBucket.data
constexpr char kBucketChecksumTag = (5 << 3) | 0; // WeightBucket.checksum

}  // namespace

void WeightStreamWriter::SerializeBucket(uint32_t index, SerializedBucket* out) {
  // Fields are written in field-number order with proto3's rule that zero
  // scalars and empty bytes are left out, as the generated serializer does:
  // metadata (1-3) by protobuf, data (4) and checksum (5) framed here.
  out->data.clear();
  out->data_bytes = 0;
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(), XXH3_freeState);
  if (!state || XXH3_64bits_reset(state.get()) != XXH_OK) throw std::bad_alloc();
  for (const auto& p : buckets_[index]) {
    if (p.nbytes == 0) continue;
    const char* at = static_cast<const char*>(tensors_[p.tensor].data) + p.tensor_offset;
    XXH3_64bits_update(state.get(), at, p.nbytes);
    out->data.emplace_back(at, static_cast<size_t>(p.nbytes));
    out->data_bytes += p.nbytes;
  }
  const uint64_t checksum = XXH3_64bits_digest(state.get());
  checksums_[index] = checksum;
  filled_[index] = true;

  v1::WeightBucket meta;
  BucketMetadata(index, &meta);
  const size_t meta_bytes = meta.ByteSizeLong();
  const uint64_t data_field =
      out->data_bytes ? 1 + CodedOutputStream::VarintSize64(out->data_bytes) + out->data_bytes : 0;
  const uint64_t checksum_field = checksum ? 1 + CodedOutputStream::VarintSize64(checksum) : 0;
  out->head.clear();
  out->head.push_back(kMessageBucketTag);
  AppendVarint(&out->head, meta_bytes + data_field + checksum_field);
  meta.AppendToString(&out->head);
  if (out->data_bytes) {
    out->head.push_back(kBucketDataTag);
    AppendVarint(&out->head, out->data_bytes);
  }
  out->tail.clear();
  if (checksum) {
    out->tail.push_back(kBucketChecksumTag);
    AppendVarint(&out->tail, checksum);
  }
}

Result<v1::WeightStreamCommit> WeightStreamWriter::Commit() const {
  for (size_t i = 0; i < filled_.size(); ++i)
    if (!filled_[i])
      return FailedPrecondition("weight stream: bucket " + std::to_string(i) + " was never sent");
  v1::WeightStreamCommit c;
  c.set_version(version_);
  c.set_revision(revision_);
  c.set_manifest_checksum(Manifest(checksums_));
  c.set_total_bytes(total_bytes_);
  return c;
}

void WeightStreamAssembler::Reset() {
  active_ = false;
  header_.Clear();
  open_ = OpenBucket();
  for (auto& [name, t] : staged_.tensors) spare_[name] = std::move(t);
  staged_ = StagedWeights();
  checksums_.clear();
  bytes_received_ = 0;
  staged_bytes_ = 0;
}

void WeightStreamAssembler::Recycle(StagedWeights&& used) {
  for (auto& [name, t] : used.tensors) spare_[name] = std::move(t);
  used.tensors.clear();
}

StagedTensor WeightStreamAssembler::TakeBuffer(const std::string& name, uint64_t nbytes) {
  StagedTensor t;
  auto it = spare_.find(name);
  if (it != spare_.end() && it->second.bytes.size() == nbytes) {
    t.bytes = std::move(it->second.bytes);
    spare_.erase(it);
  } else {
    if (it != spare_.end()) spare_.erase(it);
    t.bytes.resize(nbytes);
  }
  return t;
}

Status WeightStreamAssembler::Begin(const v1::WeightStreamHeader& header) {
  if (header.resume_from_bucket() > 0) {
    if (!active_ || header.version() != staged_.version || header.revision() != staged_.revision ||
        header.resume_from_bucket() != buckets_received() ||
        header.total_bytes() != header_.total_bytes() || header.bucket_count() != header_.bucket_count())
      return FailedPrecondition(
          "weight stream: cannot resume version " + std::to_string(header.version()) + " revision " +
          std::to_string(header.revision()) + " at bucket " + std::to_string(header.resume_from_bucket()) +
          " (have " +
          (active_ ? "version " + std::to_string(staged_.version) + " revision " +
                         std::to_string(staged_.revision) + ", " +
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
  staged_.revision = header.revision();
  staged_.total_bytes = header.total_bytes();
  active_ = true;
  return Status::Ok();
}

Status WeightStreamAssembler::BeginBucket(uint64_t version, uint32_t index,
                                          const google::protobuf::RepeatedPtrField<v1::TensorSlice>& slices,
                                          uint64_t data_size) {
  open_ = OpenBucket();
  open_.where = "weight bucket " + std::to_string(index);
  const std::string& where = open_.where;
  if (!active_) return FailedPrecondition(where + ": no stream header before it");
  if (version != staged_.version)
    return InvalidArgument(where + ": version " + std::to_string(version) + " in a stream of version " +
                           std::to_string(staged_.version));
  if (index != buckets_received())
    return InvalidArgument(where + ": out of order, expected bucket " + std::to_string(buckets_received()));
  if (index >= header_.bucket_count())
    return InvalidArgument(where + ": beyond the announced " + std::to_string(header_.bucket_count()) + " buckets");
  if (data_size > header_.total_bytes() - bytes_received_)
    return InvalidArgument(where + ": " + std::to_string(data_size) +
                           " bytes of data, more than the announced total_bytes leaves");
  open_.index = index;
  open_.size = data_size;
  for (int i = 0; i < slices.size(); ++i) {
    const auto& s = slices.Get(i);
    const std::string at = where + " slice " + std::to_string(i) + " ('" + s.name() + "')";
    Status bad;
    if (s.offset() > data_size || s.nbytes() > data_size - s.offset())
      bad = InvalidArgument(at + ": outside the bucket's data");
    auto it = staged_.tensors.find(s.name());
    if (bad.ok() && it == staged_.tensors.end()) {
      if (staged_.tensors.size() >= header_.tensor_count()) {
        bad = InvalidArgument(at + ": more tensors than the announced " + std::to_string(header_.tensor_count()));
      } else {
        std::vector<int64_t> shape(s.shape().begin(), s.shape().end());
        bad = CheckShape(at, s.dtype(), shape, s.tensor_nbytes());
        if (bad.ok() && staged_bytes_ + s.tensor_nbytes() > header_.total_bytes())
          bad = InvalidArgument(at + ": tensors add up to more than the announced total_bytes");
        if (bad.ok()) {
          StagedTensor t = TakeBuffer(s.name(), s.tensor_nbytes());
          t.dtype = s.dtype();
          t.shape = std::move(shape);
          t.filled = 0;
          staged_bytes_ += s.tensor_nbytes();
          it = staged_.tensors.emplace(s.name(), std::move(t)).first;
        }
      }
    }
    if (bad.ok()) {
      StagedTensor& t = it->second;
      if (t.dtype != s.dtype() || s.tensor_nbytes() != t.bytes.size() ||
          !std::equal(t.shape.begin(), t.shape.end(), s.shape().begin(), s.shape().end()))
        bad = InvalidArgument(at + ": dtype or shape differs from its earlier pieces");
      else if (s.tensor_offset() != t.filled || s.nbytes() > t.bytes.size() - t.filled)
        bad = InvalidArgument(at + ": piece at byte " + std::to_string(s.tensor_offset()) +
                              " does not continue the tensor (have " + std::to_string(t.filled) + " bytes)");
      if (bad.ok()) {
        open_.undo.emplace_back(&t, t.filled);
        if (s.nbytes()) open_.pieces.push_back({s.offset(), s.nbytes(), t.bytes.data() + t.filled});
        t.filled += s.nbytes();
      }
    }
    if (!bad.ok()) {
      RollBack();
      return bad;
    }
  }
  std::sort(open_.pieces.begin(), open_.pieces.end(),
            [](const CopyPiece& a, const CopyPiece& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < open_.pieces.size(); ++i)
    if (open_.pieces[i - 1].offset + open_.pieces[i - 1].nbytes > open_.pieces[i].offset) {
      RollBack();
      return InvalidArgument(where + ": slices overlap in the bucket's data");
    }
  XXH3_state_t* state = XXH3_createState();
  if (!state || XXH3_64bits_reset(state) != XXH_OK) {
    if (state) XXH3_freeState(state);
    RollBack();
    return Internal(where + ": cannot start a checksum");
  }
  open_.hash = std::shared_ptr<void>(state, [](void* p) { XXH3_freeState(static_cast<XXH3_state_t*>(p)); });
  return Status::Ok();
}

void WeightStreamAssembler::BucketData(const char* data, size_t size) {
  // Bytes arrive in order; each chunk is hashed and copied while in cache.
  if (size > open_.size - open_.consumed) size = open_.size - open_.consumed;  // caller guarantees; be safe
  XXH3_64bits_update(static_cast<XXH3_state_t*>(open_.hash.get()), data, size);
  const uint64_t begin = open_.consumed, end = begin + size;
  while (open_.next_piece < open_.pieces.size()) {
    const CopyPiece& p = open_.pieces[open_.next_piece];
    if (p.offset >= end) break;
    const uint64_t from = std::max(p.offset, begin);
    const uint64_t to = std::min(p.offset + p.nbytes, end);
    if (to > from) std::memcpy(p.dest + (from - p.offset), data + (from - begin), to - from);
    if (p.offset + p.nbytes > end) break;
    ++open_.next_piece;
  }
  open_.consumed = end;
}

Status WeightStreamAssembler::EndBucket(uint64_t checksum) {
  if (open_.consumed != open_.size) {
    RollBack();
    return DataLoss(open_.where + ": data ended after " + std::to_string(open_.consumed) + " of " +
                    std::to_string(open_.size) + " bytes");
  }
  if (XXH3_64bits_digest(static_cast<XXH3_state_t*>(open_.hash.get())) != checksum) {
    const std::string where = open_.where;
    RollBack();
    return DataLoss(where + ": checksum mismatch (corrupted in transit?)");
  }
  checksums_.push_back(checksum);
  bytes_received_ += open_.size;
  open_ = OpenBucket();
  return Status::Ok();
}

void WeightStreamAssembler::RollBack() {
  for (auto it = open_.undo.rbegin(); it != open_.undo.rend(); ++it) it->first->filled = it->second;
  open_ = OpenBucket();
}

Status WeightStreamAssembler::AddBucket(const v1::WeightBucket& bucket) {
  SPAR_RETURN_IF_ERROR(BeginBucket(bucket.version(), bucket.index(), bucket.tensors(), bucket.data().size()));
  BucketData(bucket.data().data(), bucket.data().size());
  return EndBucket(bucket.checksum());
}

namespace {

using google::protobuf::internal::WireFormatLite;

Status Malformed(const std::string& what) {
  return InvalidArgument("weight stream message: " + what + " (not a spar.v1.WeightStreamMessage?)");
}

}  // namespace

Result<v1::WeightStreamMessage::KindCase> WeightStreamAssembler::ReadMessage(
    google::protobuf::io::ZeroCopyInputStream* in, v1::WeightStreamMessage* small) {
  namespace io = google::protobuf::io;
  small->Clear();
  io::CodedInputStream cis(in);
  cis.SetTotalBytesLimit(INT_MAX);
  auto kind = v1::WeightStreamMessage::KIND_NOT_SET;
  std::string scratch;
  while (true) {
    const uint32_t tag = cis.ReadTag();
    if (tag == 0) break;
    const int field = WireFormatLite::GetTagFieldNumber(tag);
    const bool length_delimited =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (field < 1 || field > 3 || !length_delimited) {
      if (!WireFormatLite::SkipField(&cis, tag)) return Malformed("truncated unknown field");
      continue;
    }
    if (kind != v1::WeightStreamMessage::KIND_NOT_SET) return Malformed("more than one of header, bucket, commit");
    uint32_t length = 0;
    if (!cis.ReadVarint32(&length)) return Malformed("truncated length");
    if (field != 2) {
      if (!cis.ReadString(&scratch, static_cast<int>(length))) return Malformed("truncated header or commit");
      const bool parsed = field == 1 ? small->mutable_header()->ParseFromString(scratch)
                                     : small->mutable_commit()->ParseFromString(scratch);
      if (!parsed) return Malformed(field == 1 ? "unreadable header" : "unreadable commit");
      kind = field == 1 ? v1::WeightStreamMessage::kHeader : v1::WeightStreamMessage::kCommit;
      continue;
    }
    // A bucket: metadata first (the writer's order), then the data is staged
    // from the input's own buffers. Data that comes before its slices (legal
    // protobuf, never what WeightStreamWriter sends) is read aside first.
    kind = v1::WeightStreamMessage::kBucket;
    const auto limit = cis.PushLimit(static_cast<int>(length));
    v1::WeightBucket meta;
    bool have_data = false, streamed = false;
    std::string aside;
    auto fail = [&](const std::string& what) {
      if (streamed) RollBack();
      return Malformed(what);
    };
    while (true) {
      const uint32_t t = cis.ReadTag();
      if (t == 0) break;
      const int f = WireFormatLite::GetTagFieldNumber(t);
      const auto wire = WireFormatLite::GetTagWireType(t);
      if ((f == 1 || f == 2 || f == 3) && streamed) return fail("bucket metadata after its data");
      if ((f == 1 || f == 2 || f == 5) && wire == WireFormatLite::WIRETYPE_VARINT) {
        uint64_t v = 0;
        if (!cis.ReadVarint64(&v)) return fail("truncated bucket field");
        if (f == 1) meta.set_version(v);
        if (f == 2) meta.set_index(static_cast<uint32_t>(v));
        if (f == 5) meta.set_checksum(v);
      } else if (f == 3 && wire == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        if (!WireFormatLite::ReadMessage(&cis, meta.add_tensors())) return fail("unreadable tensor slice");
      } else if (f == 4 && wire == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
        if (have_data) return fail("bucket data given twice");
        have_data = true;
        uint32_t size = 0;
        if (!cis.ReadVarint32(&size)) return fail("truncated bucket data");
        if (meta.tensors_size() == 0) {
          if (!cis.ReadString(&aside, static_cast<int>(size))) return fail("truncated bucket data");
          continue;
        }
        SPAR_RETURN_IF_ERROR(BeginBucket(meta.version(), meta.index(), meta.tensors(), size));
        streamed = true;
        uint64_t left = size;
        while (left > 0) {
          const void* p = nullptr;
          int avail = 0;
          if (!cis.GetDirectBufferPointer(&p, &avail) || avail <= 0) return fail("truncated bucket data");
          const size_t take = static_cast<size_t>(std::min<uint64_t>(left, static_cast<uint64_t>(avail)));
          BucketData(static_cast<const char*>(p), take);
          if (!cis.Skip(static_cast<int>(take))) return fail("truncated bucket data");
          left -= take;
        }
      } else if (!WireFormatLite::SkipField(&cis, t)) {
        return fail("truncated bucket field");
      }
    }
    if (!cis.ConsumedEntireMessage()) return fail("bucket ends inside a field");
    cis.PopLimit(limit);
    if (streamed) {
      SPAR_RETURN_IF_ERROR(EndBucket(meta.checksum()));
    } else {
      SPAR_RETURN_IF_ERROR(BeginBucket(meta.version(), meta.index(), meta.tensors(), aside.size()));
      BucketData(aside.data(), aside.size());
      SPAR_RETURN_IF_ERROR(EndBucket(meta.checksum()));
    }
  }
  if (kind == v1::WeightStreamMessage::KIND_NOT_SET) return Malformed("neither header, bucket nor commit");
  return kind;
}

Result<StagedWeights> WeightStreamAssembler::Commit(const v1::WeightStreamCommit& commit) {
  if (!active_) return FailedPrecondition("weight stream commit: no stream in progress");
  if (commit.version() != staged_.version)
    return InvalidArgument("weight stream commit: version " + std::to_string(commit.version()) +
                           " for a stream of version " + std::to_string(staged_.version));
  if (commit.revision() != staged_.revision)
    return InvalidArgument("weight stream commit: revision " + std::to_string(commit.revision()) +
                           " for a stream of revision " + std::to_string(staged_.revision));
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
