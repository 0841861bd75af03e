#include "services/weights/nccl_broadcast.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/logging.h"

#if SPAR_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace spar {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t AlignUp(uint64_t n) { return (n + kBucketAlignment - 1) / kBucketAlignment * kBucketAlignment; }

std::string Key(uint64_t version, const std::string& what) {
  return "spar/v" + std::to_string(version) + "/" + what;
}

}  // namespace

// ---- bucket plan -----------------------------------------------------------

uint64_t BucketPlan::largest_bucket() const {
  uint64_t m = 0;
  for (uint64_t b : bucket_bytes) m = std::max(m, b);
  return m;
}

Result<BucketPlan> PlanBuckets(const std::vector<uint64_t>& tensor_nbytes, uint64_t bucket_bytes) {
  if (bucket_bytes == 0) return InvalidArgument("weight broadcast: bucket size must be > 0");
  BucketPlan plan;
  for (size_t i = 0; i < tensor_nbytes.size(); ++i) {
    const uint64_t n = tensor_nbytes[i];
    const bool fits = !plan.buckets.empty() && AlignUp(plan.bucket_bytes.back()) + n <= bucket_bytes;
    if (!fits) {
      plan.buckets.emplace_back();
      plan.bucket_bytes.push_back(0);
    }
    const uint64_t offset = AlignUp(plan.bucket_bytes.back());
    plan.buckets.back().push_back({static_cast<uint32_t>(i), offset, n});
    plan.bucket_bytes.back() = offset + n;
  }
  return plan;
}

// ---- manifest --------------------------------------------------------------

Result<BroadcastManifest> MakeManifest(uint64_t version, const std::vector<WeightTensorView>& tensors,
                                       uint64_t bucket_bytes) {
  if (tensors.empty()) return InvalidArgument("weight broadcast: no tensors");
  BroadcastManifest m;
  m.version = version;
  m.bucket_bytes = bucket_bytes;
  std::vector<uint64_t> sizes;
  std::map<std::string, int> seen;
  for (const auto& t : tensors) {
    const size_t elem = WeightDTypeSize(t.dtype);
    if (elem == 0) return InvalidArgument("weight broadcast: tensor '" + t.name + "' has unknown dtype " + t.dtype);
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return InvalidArgument("weight broadcast: tensor '" + t.name + "' has a negative dimension");
      count *= static_cast<uint64_t>(d);
    }
    if (count * elem != t.nbytes)
      return InvalidArgument("weight broadcast: tensor '" + t.name + "' shape and size disagree");
    if (seen[t.name]++) return InvalidArgument("weight broadcast: tensor '" + t.name + "' given twice");
    m.tensors.push_back({t.name, t.dtype, t.shape, t.nbytes});
    sizes.push_back(t.nbytes);
  }
  SPAR_ASSIGN_OR_RETURN(m.plan, PlanBuckets(sizes, bucket_bytes));
  return m;
}

std::string EncodeManifest(const BroadcastManifest& m) {
  nlohmann::json j;
  j["version"] = m.version;
  j["bucket_bytes"] = m.bucket_bytes;
  auto& tensors = j["tensors"] = nlohmann::json::array();
  for (const auto& t : m.tensors)
    tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"nbytes", t.nbytes}});
  auto& buckets = j["buckets"] = nlohmann::json::array();
  for (const auto& b : m.plan.buckets) {
    auto slots = nlohmann::json::array();
    for (const auto& s : b) slots.push_back({s.tensor, s.offset, s.nbytes});
    buckets.push_back(slots);
  }
  return j.dump();
}

Result<BroadcastManifest> DecodeManifest(const std::string& bytes) {
  BroadcastManifest m;
  try {
    auto j = nlohmann::json::parse(bytes);
    m.version = j.at("version").get<uint64_t>();
    m.bucket_bytes = j.at("bucket_bytes").get<uint64_t>();
    for (const auto& t : j.at("tensors")) {
      BroadcastTensor bt{t.at("name").get<std::string>(), t.at("dtype").get<std::string>(),
                         t.at("shape").get<std::vector<int64_t>>(), t.at("nbytes").get<uint64_t>()};
      m.tensors.push_back(std::move(bt));
    }
    for (const auto& b : j.at("buckets")) {
      std::vector<BucketSlot> slots;
      uint64_t used = 0;
      for (const auto& s : b) {
        if (!s.is_array() || s.size() != 3) return DataLoss("weight broadcast manifest: a bucket slot is not [tensor, offset, nbytes]");
        slots.push_back({s[0].get<uint32_t>(), s[1].get<uint64_t>(), s[2].get<uint64_t>()});
        used = std::max(used, slots.back().offset + slots.back().nbytes);
      }
      m.plan.buckets.push_back(std::move(slots));
      m.plan.bucket_bytes.push_back(used);
    }
  } catch (const std::exception& e) {
    return DataLoss(std::string("weight broadcast manifest is malformed: ") + e.what());
  }
  if (m.tensors.empty()) return DataLoss("weight broadcast manifest has no tensors");
  std::vector<int> covered(m.tensors.size(), 0);
  std::map<std::string, int> names;
  for (const auto& t : m.tensors) {
    const size_t elem = WeightDTypeSize(t.dtype);
    if (elem == 0) return DataLoss("weight broadcast manifest: tensor '" + t.name + "' has unknown dtype " + t.dtype);
    uint64_t count = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return DataLoss("weight broadcast manifest: tensor '" + t.name + "' has a negative dimension");
      count *= static_cast<uint64_t>(d);
    }
    if (count * elem != t.nbytes) return DataLoss("weight broadcast manifest: tensor '" + t.name + "' shape and size disagree");
    if (names[t.name]++) return DataLoss("weight broadcast manifest: tensor '" + t.name + "' appears twice");
  }
  for (size_t b = 0; b < m.plan.buckets.size(); ++b) {
    uint64_t end = 0;
    for (const auto& s : m.plan.buckets[b]) {
      if (s.tensor >= m.tensors.size())
        return DataLoss("weight broadcast manifest: bucket " + std::to_string(b) + " names tensor " +
                        std::to_string(s.tensor) + " of " + std::to_string(m.tensors.size()));
      if (s.nbytes != m.tensors[s.tensor].nbytes || s.offset < end || s.offset % kBucketAlignment != 0)
        return DataLoss("weight broadcast manifest: bucket " + std::to_string(b) + " slot of '" +
                        m.tensors[s.tensor].name + "' is misplaced");
      end = s.offset + s.nbytes;
      ++covered[s.tensor];
    }
    if (end > std::max(m.bucket_bytes, m.plan.buckets[b].size() == 1 ? end : 0))
      return DataLoss("weight broadcast manifest: bucket " + std::to_string(b) + " exceeds the bucket size");
  }
  for (size_t i = 0; i < covered.size(); ++i)
    if (covered[i] != 1)
      return DataLoss("weight broadcast manifest: tensor '" + m.tensors[i].name + "' is in " +
                      std::to_string(covered[i]) + " buckets");
  return m;
}

StagedWeights NewStaging(const BroadcastManifest& m) {
  StagedWeights staged;
  staged.version = m.version;
  for (const auto& t : m.tensors) {
    StagedTensor& st = staged.tensors[t.name];
    st.dtype = t.dtype;
    st.shape = t.shape;
    st.bytes.resize(t.nbytes);
    staged.total_bytes += t.nbytes;
  }
  return staged;
}

Status UnpackBucket(const BroadcastManifest& m, uint32_t bucket, const uint8_t* data, uint64_t size,
                    StagedWeights* staged) {
  if (bucket >= m.plan.buckets.size()) return DataLoss("weight broadcast: bucket " + std::to_string(bucket) + " is not in the plan");
  if (size < m.plan.bucket_bytes[bucket])
    return DataLoss("weight broadcast: bucket " + std::to_string(bucket) + " has " + std::to_string(size) +
                    " bytes, the plan needs " + std::to_string(m.plan.bucket_bytes[bucket]));
  for (const auto& s : m.plan.buckets[bucket]) {
    auto it = staged->tensors.find(m.tensors[s.tensor].name);
    if (it == staged->tensors.end() || it->second.bytes.size() != s.nbytes)
      return DataLoss("weight broadcast: staging has no room for '" + m.tensors[s.tensor].name + "'");
    if (it->second.filled != 0) return DataLoss("weight broadcast: '" + it->first + "' received twice");
    if (s.nbytes > 0) std::memcpy(it->second.bytes.data(), data + s.offset, s.nbytes);
    it->second.filled = s.nbytes;
  }
  return Status::Ok();
}

Status PackBucket(const BroadcastManifest& m, const std::vector<WeightTensorView>& tensors, uint32_t bucket,
                  std::vector<uint8_t>* out) {
  if (bucket >= m.plan.buckets.size()) return InvalidArgument("weight broadcast: no bucket " + std::to_string(bucket));
  if (tensors.size() != m.tensors.size()) return InvalidArgument("weight broadcast: tensors do not match the manifest");
  out->assign(m.plan.bucket_bytes[bucket], 0);
  for (const auto& s : m.plan.buckets[bucket]) {
    if (tensors[s.tensor].nbytes != s.nbytes) return InvalidArgument("weight broadcast: '" + tensors[s.tensor].name + "' changed size");
    if (s.nbytes > 0) std::memcpy(out->data() + s.offset, tensors[s.tensor].data, s.nbytes);
  }
  return Status::Ok();
}

Status CheckComplete(const StagedWeights& staged) {
  for (const auto& [name, t] : staged.tensors)
    if (t.filled != t.bytes.size())
      return DataLoss("weight broadcast: tensor '" + name + "' got " + std::to_string(t.filled) + " of " +
                      std::to_string(t.bytes.size()) + " bytes");
  return Status::Ok();
}

// ---- stores ----------------------------------------------------------------

namespace {

class TcpRendezvousStore final : public RendezvousStore {
 public:
  explicit TcpRendezvousStore(c10::intrusive_ptr<c10d::TCPStore> store) : store_(std::move(store)) {}
  Status Set(const std::string& key, const std::string& value) override {
    try {
      store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
    } catch (const std::exception& e) {
      return Unavailable("weight broadcast store: set " + key + ": " + e.what());
    }
    return Status::Ok();
  }
  Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    try {
      store_->wait({key}, timeout);
      auto v = store_->get(key);
      return std::string(v.begin(), v.end());
    } catch (const std::exception& e) {
      return DeadlineExceeded("weight broadcast store: no '" + key + "' within " + std::to_string(timeout.count()) +
                              " ms: " + e.what());
    }
  }

 private:
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

class InMemoryStore final : public RendezvousStore {
 public:
  Status Set(const std::string& key, const std::string& value) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      values_[key] = value;
    }
    cv_.notify_all();
    return Status::Ok();
  }
  Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return values_.count(key) > 0; }))
      return DeadlineExceeded("weight broadcast store: no '" + key + "' within " + std::to_string(timeout.count()) + " ms");
    return values_[key];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> values_;
};

}  // namespace

Result<std::unique_ptr<RendezvousStore>> ConnectTcpStore(const std::string& address, int rank, int world_size,
                                                         std::chrono::milliseconds timeout) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return InvalidArgument("weight broadcast rendezvous '" + address + "' must be host:port");
  int port = 0;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port <= 0 || port > 65535) return InvalidArgument("weight broadcast rendezvous '" + address + "' has a bad port");
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = world_size;
    o.waitWorkers = false;
    o.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(address.substr(0, colon), o);
    return std::unique_ptr<RendezvousStore>(new TcpRendezvousStore(std::move(store)));
  } catch (const std::exception& e) {
    return Unavailable("weight broadcast rank " + std::to_string(rank) + ": rendezvous at " + address +
                       " failed: " + e.what());
  }
}

std::unique_ptr<RendezvousStore> NewInMemoryStore() { return std::make_unique<InMemoryStore>(); }

Result<std::string> GetUnlessCancelled(RendezvousStore* store, const std::string& key,
                                       std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
  if (!cancel) return store->Get(key, timeout);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (cancel->load()) return Cancelled("weight broadcast: stopped while waiting for '" + key + "'");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto got = store->Get(key, std::max(std::chrono::milliseconds(1), std::min(left, kCancelPoll)));
    if (got.ok() || got.status().code() != StatusCode::kDeadlineExceeded || Clock::now() >= deadline) return got;
  }
}

// ---- handshake -------------------------------------------------------------

Status HandshakeSender::Announce(const BroadcastManifest& manifest) {
  SPAR_RETURN_IF_ERROR(store_->Set(Key(manifest.version, "manifest"), EncodeManifest(manifest)));
  return store_->Set("spar/latest/" + std::to_string(manifest.version), "1");
}

Status HandshakeSender::Decide(uint64_t version) {
  Status verdict;
  const auto deadline = Clock::now() + timeout_;
  for (int r = 1; r < world_size_ && verdict.ok(); ++r) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto ack = GetUnlessCancelled(store_, Key(version, "ack/" + std::to_string(r)),
                                  std::max(left, std::chrono::milliseconds(1)), cancel_);
    if (!ack.ok() && ack.status().code() == StatusCode::kCancelled) {
      verdict = ack.status();
    } else if (!ack.ok()) {
      verdict = DeadlineExceeded("weight broadcast: rank " + std::to_string(r) + " did not confirm version " +
                                 std::to_string(version));
    } else if (*ack != "ok") {
      const std::string why = ack->rfind("error: ", 0) == 0 ? ack->substr(7) : *ack;
      verdict = Aborted("weight broadcast: rank " + std::to_string(r) + " refused version " + std::to_string(version) +
                        ": " + why);
    }
  }
  SPAR_RETURN_IF_ERROR(store_->Set(Key(version, "decision"), verdict.ok() ? "commit" : "abort: " + verdict.message()));
  return verdict;
}

Result<BroadcastManifest> HandshakeReceiver::AwaitManifest(uint64_t version) {
  SPAR_ASSIGN_OR_RETURN(std::string bytes, GetUnlessCancelled(store_, Key(version, "manifest"), timeout_, cancel_));
  SPAR_ASSIGN_OR_RETURN(BroadcastManifest m, DecodeManifest(bytes));
  if (m.version != version)
    return DataLoss("weight broadcast: manifest of version " + std::to_string(m.version) + " under version " +
                    std::to_string(version));
  return m;
}

Status HandshakeReceiver::AckAndAwaitDecision(uint64_t version, const Status& received) {
  SPAR_RETURN_IF_ERROR(store_->Set(Key(version, "ack/" + std::to_string(rank_)),
                                   received.ok() ? "ok" : "error: " + received.message()));
  SPAR_ASSIGN_OR_RETURN(std::string decision, GetUnlessCancelled(store_, Key(version, "decision"), timeout_, cancel_));
  if (decision == "commit" || !received.ok()) return received;  // a refusing rank never applies
  return Aborted("weight broadcast: version " + std::to_string(version) + " abandoned (" + decision + ")");
}

// ---- the group -------------------------------------------------------------

#if SPAR_HAVE_NCCL

bool NcclBroadcastAvailable() { return true; }

namespace {

// The TCPStore rendezvous; with a cancel flag, in attempts of about a
// second (a generator may wait here for the learner for minutes).
Result<std::unique_ptr<RendezvousStore>> ConnectStoreUnlessCancelled(const NcclGroupOptions& o) {
  if (!o.cancel || o.rank == 0) return ConnectTcpStore(o.rendezvous, o.rank, o.world_size, o.timeout);
  const auto deadline = Clock::now() + o.timeout;
  for (;;) {
    if (o.cancel->load()) return Cancelled("weight broadcast: stopped while joining at " + o.rendezvous);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    auto store = ConnectTcpStore(o.rendezvous, o.rank, o.world_size,
                                 std::max(std::chrono::milliseconds(1), std::min(left, std::chrono::milliseconds(1000))));
    if (store.ok() || store.status().code() != StatusCode::kUnavailable || Clock::now() >= deadline) return store;
  }
}

}  // namespace

struct NcclWeightGroup::Transport {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  void* buffer = nullptr;
  uint64_t capacity = 0;
  std::chrono::milliseconds timeout{0};
  const std::atomic<bool>* cancel = nullptr;

  ~Transport() {
    if (buffer) cudaFree(buffer);
    if (stream) cudaStreamDestroy(stream);
    if (comm) ncclCommDestroy(comm);
  }

  static Status Cuda(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return Status::Ok();
    return Unavailable(std::string("weight broadcast: ") + what + ": " + cudaGetErrorString(e));
  }

  // Stopped (the cancel flag): aborts the communicator, whose pending
  // operation then never completes; the group must be joined again.
  Status AbortIfCancelled(const char* what) {
    if (!cancel || !cancel->load()) return Status::Ok();
    ncclCommAbort(comm);
    comm = nullptr;
    return Cancelled(std::string("weight broadcast: stopped during ") + what + "; communicator aborted");
  }

  // Waits for the communicator's pending operation (non-blocking NCCL), so
  // a dead peer is an error after the timeout, never a hang.
  Status WaitComm(const char* what) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      SPAR_RETURN_IF_ERROR(AbortIfCancelled(what));
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm, &state);
      if (state == ncclSuccess) return Status::Ok();
      if (state != ncclInProgress) {
        return Unavailable(std::string("weight broadcast: ") + what + ": " + ncclGetErrorString(state));
      }
      if (Clock::now() > deadline) {
        ncclCommAbort(comm);
        comm = nullptr;
        return DeadlineExceeded(std::string("weight broadcast: ") + what + " timed out; communicator aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  Status WaitStream(const char* what) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      SPAR_RETURN_IF_ERROR(AbortIfCancelled(what));
      cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) return Cuda(e, what);
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm, &state);
      if (state != ncclSuccess && state != ncclInProgress)
        return Unavailable(std::string("weight broadcast: ") + what + ": " + ncclGetErrorString(state));
      if (Clock::now() > deadline) {
        ncclCommAbort(comm);
        comm = nullptr;
        return DeadlineExceeded(std::string("weight broadcast: ") + what + " timed out (a peer died?); communicator aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  Status Reserve(uint64_t bytes) {
    if (bytes <= capacity) return Status::Ok();
    if (buffer) cudaFree(buffer);
    buffer = nullptr;
    capacity = 0;
    SPAR_RETURN_IF_ERROR(Cuda(cudaMalloc(&buffer, std::max<uint64_t>(bytes, 1)), "device buffer"));
    capacity = bytes;
    return Status::Ok();
  }

  Status Broadcast(uint64_t bytes) {
    if (!comm) return Unavailable("weight broadcast: the communicator was aborted; rejoin the group");
    ncclResult_t r = ncclBroadcast(buffer, buffer, bytes, ncclUint8, 0, comm, stream);
    if (r != ncclSuccess && r != ncclInProgress)
      return Unavailable(std::string("weight broadcast: ncclBroadcast: ") + ncclGetErrorString(r));
    return WaitStream("bucket broadcast");
  }
};

Result<std::unique_ptr<NcclWeightGroup>> NcclWeightGroup::Join(const NcclGroupOptions& options) {
  if (options.world_size < 2) return InvalidArgument("weight broadcast group needs the learner and >= 1 generator");
  if (options.rank < 0 || options.rank >= options.world_size)
    return InvalidArgument("weight broadcast rank " + std::to_string(options.rank) + " is outside [0, " +
                           std::to_string(options.world_size) + ")");
  if (options.bucket_bytes == 0) return InvalidArgument("weight broadcast bucket size must be > 0");
  std::unique_ptr<NcclWeightGroup> group(new NcclWeightGroup(options));
  SPAR_ASSIGN_OR_RETURN(group->store_, ConnectStoreUnlessCancelled(options));
  auto t = std::make_unique<Transport>();
  t->timeout = options.timeout;
  t->cancel = options.cancel;
  // A device that cannot be used will not become usable by retrying.
  auto set_device = [&]() -> Status {
    const cudaError_t e = cudaSetDevice(options.cuda_device);
    if (e == cudaSuccess) return Status::Ok();
    return FailedPrecondition("weight broadcast: cuda:" + std::to_string(options.cuda_device) +
                              " is not usable: " + cudaGetErrorString(e));
  };
  ncclUniqueId id;
  if (options.rank == 0) {
    SPAR_RETURN_IF_ERROR(set_device());
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return Unavailable(std::string("weight broadcast: ncclGetUniqueId: ") + ncclGetErrorString(r));
    SPAR_RETURN_IF_ERROR(group->store_->Set("spar/nccl_unique_id", std::string(id.internal, sizeof(id.internal))));
  } else {
    SPAR_ASSIGN_OR_RETURN(std::string bytes, GetUnlessCancelled(group->store_.get(), "spar/nccl_unique_id",
                                                                options.timeout, options.cancel));
    if (bytes.size() != sizeof(id.internal)) return DataLoss("weight broadcast: malformed ncclUniqueId in the store");
    std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
    // Only now the GPU: a generator may wait above for the learner for long.
    SPAR_RETURN_IF_ERROR(set_device());
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&t->comm, options.world_size, id, options.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress)
    return Unavailable(std::string("weight broadcast: ncclCommInitRank: ") + ncclGetErrorString(r));
  SPAR_RETURN_IF_ERROR(t->WaitComm("joining the NCCL group"));
  SPAR_RETURN_IF_ERROR(Transport::Cuda(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking), "stream"));
  group->transport_ = std::move(t);
  Logger("weights")->info("weight broadcast rank {}/{} joined at {} (cuda:{})", options.rank, options.world_size,
                          options.rendezvous, options.cuda_device);
  return group;
}

Result<BroadcastStats> NcclWeightGroup::Send(uint64_t version, const std::vector<WeightTensorView>& tensors) {
  if (options_.rank != 0) return FailedPrecondition("weight broadcast: only rank 0 sends");
  const auto start = Clock::now();
  SPAR_ASSIGN_OR_RETURN(BroadcastManifest m, MakeManifest(version, tensors, options_.bucket_bytes));
  HandshakeSender handshake(store_.get(), options_.world_size, options_.timeout, options_.cancel);
  SPAR_RETURN_IF_ERROR(handshake.Announce(m));
  auto& t = *transport_;
  SPAR_RETURN_IF_ERROR(t.Reserve(m.plan.largest_bucket()));
  for (size_t b = 0; b < m.plan.buckets.size(); ++b) {
    // cudaMemcpyDefault: the views may be host or device memory (UVA).
    for (const auto& s : m.plan.buckets[b]) {
      if (s.nbytes == 0) continue;
      SPAR_RETURN_IF_ERROR(Transport::Cuda(cudaMemcpyAsync(static_cast<uint8_t*>(t.buffer) + s.offset,
                                                           tensors[s.tensor].data, s.nbytes, cudaMemcpyDefault,
                                                           t.stream),
                                           "packing a bucket"));
    }
    SPAR_RETURN_IF_ERROR(t.Broadcast(m.plan.bucket_bytes[b]));
  }
  SPAR_RETURN_IF_ERROR(handshake.Decide(version));
  BroadcastStats stats;
  stats.version = version;
  stats.buckets = static_cast<uint32_t>(m.plan.buckets.size());
  for (const auto& tensor : m.tensors) stats.bytes += tensor.nbytes;
  stats.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return stats;
}

Result<StagedWeights> NcclWeightGroup::Receive(uint64_t version) {
  if (options_.rank == 0) return FailedPrecondition("weight broadcast: rank 0 sends, it does not receive");
  HandshakeReceiver handshake(store_.get(), options_.rank, options_.timeout, options_.cancel);
  SPAR_ASSIGN_OR_RETURN(BroadcastManifest m, handshake.AwaitManifest(version));
  auto& t = *transport_;
  // Every rank takes part in every bucket's broadcast (a collective), even
  // after a local failure, so rank 0 and the others never hang on it.
  Status received = t.Reserve(m.plan.largest_bucket());
  if (!received.ok()) return received;
  StagedWeights staged = NewStaging(m);
  std::vector<uint8_t> host;
  for (uint32_t b = 0; b < m.plan.buckets.size(); ++b) {
    SPAR_RETURN_IF_ERROR(t.Broadcast(m.plan.bucket_bytes[b]));
    if (!received.ok()) continue;
    host.resize(m.plan.bucket_bytes[b]);
    received = Transport::Cuda(cudaMemcpy(host.data(), t.buffer, host.size(), cudaMemcpyDeviceToHost), "unpacking");
    if (received.ok()) received = UnpackBucket(m, b, host.data(), host.size(), &staged);
  }
  if (received.ok()) received = CheckComplete(staged);
  SPAR_RETURN_IF_ERROR(handshake.AckAndAwaitDecision(version, received));
  return staged;
}

#else  // no NCCL in this build

bool NcclBroadcastAvailable() { return false; }

struct NcclWeightGroup::Transport {};

Result<std::unique_ptr<NcclWeightGroup>> NcclWeightGroup::Join(const NcclGroupOptions&) {
  return Unimplemented("weight broadcast over NCCL is not in this build (configure with SPAR_WITH_NCCL=ON and "
                       "NCCL + the CUDA runtime installed)");
}

Result<BroadcastStats> NcclWeightGroup::Send(uint64_t, const std::vector<WeightTensorView>&) {
  return Unimplemented("weight broadcast over NCCL is not in this build");
}

Result<StagedWeights> NcclWeightGroup::Receive(uint64_t) {
  return Unimplemented("weight broadcast over NCCL is not in this build");
}

#endif

Result<uint64_t> NcclWeightGroup::NextVersion(uint64_t after, std::chrono::milliseconds timeout) {
  // Rank 0 announces each version under its own key before broadcasting it.
  SPAR_RETURN_IF_ERROR(
      GetUnlessCancelled(store_.get(), "spar/latest/" + std::to_string(after + 1), timeout, options_.cancel).status());
  return after + 1;
}

NcclWeightGroup::NcclWeightGroup(NcclGroupOptions options) : options_(std::move(options)) {}
NcclWeightGroup::~NcclWeightGroup() = default;

}  // namespace spar
