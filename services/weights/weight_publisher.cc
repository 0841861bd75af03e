#include "services/weights/weight_publisher.h"

#include <condition_variable>
#include <mutex>

#include <grpcpp/impl/rpc_method.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/sync_stream.h>

#include "common/logging.h"
#include "common/policy_version.h"
#include "services/common/grpc_status.h"
#include "services/common/server.h"
#include "spar/v1/generator.grpc.pb.h"

namespace spar {

namespace {

// Counts the tensor slices gRPC still holds. A slice points into a tensor
// the caller owns; its last unref (when the transport has written it, or
// dropped it with a failed call) may come after Finish() returns, so the
// publisher waits for every release before the tensors may go away.
class SliceReleases {
 public:
  grpc::Slice Borrow(const char* data, size_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++held_;
    }
    return grpc::Slice(const_cast<char*>(data), size, &SliceReleases::Release, this);
  }
  void WaitAll() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!released_.wait_for(lock, std::chrono::seconds(10), [&] { return held_ == 0; }))
      Logger("weights")->warn("publish: gRPC still holds {} slices of the weights; waiting", held_);
  }

 private:
  static void Release(void* self) {
    auto* r = static_cast<SliceReleases*>(self);
    std::lock_guard<std::mutex> lock(r->mu_);
    if (--r->held_ == 0) r->released_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable released_;
  int64_t held_ = 0;
};

grpc::ByteBuffer Serialized(const google::protobuf::Message& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

Result<std::pair<uint64_t, uint64_t>> ServingVersion(const std::string& address, std::chrono::milliseconds timeout) {
  auto stub = v1::Generator::NewStub(MakeChannel(address));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::GeneratorInfo info;
  grpc::Status st = stub->Info(&ctx, v1::InfoRequest(), &info);
  if (!st.ok()) return FromGrpcStatus(st).WithContext("asking the generator at " + address + " for its version");
  return std::make_pair(info.policy_version(), info.policy_revision());
}

Status CheckChainApplied(const v1::WeightUpdateResult& r, uint64_t version, uint64_t revision) {
  if (!r.applied() || r.version() != version || r.revision() != revision)
    return Aborted("generator " + r.node() + " did not apply version " + PolicyVersionName(version, revision) +
                   (r.error().empty() ? "" : ": " + r.error()));
  for (const auto& d : r.downstream()) SPAR_RETURN_IF_ERROR(CheckChainApplied(d, version, revision));
  return Status::Ok();
}

Result<PublishResult> PublishWeights(WeightStreamWriter& writer, const std::vector<std::string>& chain,
                                     std::chrono::milliseconds timeout) {
  if (chain.empty()) return InvalidArgument("publish: no generators to send weights to");
  auto start = std::chrono::steady_clock::now();
  auto channel = MakeChannel(chain[0]);
  PublishResult out;
  SliceReleases releases;
  grpc::Status st;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    // Raw bytes on the generated method's wire format: each bucket goes out
    // as its framing plus slices that point into the tensors (no bucket
    // buffer, no serialisation copy); the reply is parsed as usual.
    grpc::internal::RpcMethod method(kUpdateWeightsMethod, grpc::internal::RpcMethod::CLIENT_STREAMING, channel);
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> stream(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(channel.get(), method, &ctx, &out.result));
    v1::WeightStreamMessage msg;
    *msg.mutable_header() = writer.Header(std::vector<std::string>(chain.begin() + 1, chain.end()));
    bool ok = stream->Write(Serialized(msg));
    SerializedBucket bucket;
    std::vector<grpc::Slice> slices;
    for (uint32_t i = 0; ok && i < writer.bucket_count(); ++i) {
      writer.SerializeBucket(i, &bucket);
      slices.clear();
      slices.emplace_back(bucket.head);
      for (const auto& [data, size] : bucket.data) slices.push_back(releases.Borrow(data, size));
      if (!bucket.tail.empty()) slices.emplace_back(bucket.tail);
      ok = stream->Write(grpc::ByteBuffer(slices.data(), slices.size()));
    }
    slices.clear();
    if (ok) {
      auto commit = writer.Commit();
      if (!commit.ok()) {
        ctx.TryCancel();
        grpc::Status cancelled = stream->Finish();  // the commit's error is what matters
        (void)cancelled;
        releases.WaitAll();
        return commit.status();
      }
      msg.Clear();
      *msg.mutable_commit() = *commit;
      ok = stream->Write(Serialized(msg));
    }
    stream->WritesDone();
    st = stream->Finish();
  }
  releases.WaitAll();
  if (!st.ok()) return FromGrpcStatus(st).WithContext("publishing weights to generator at " + chain[0]);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.bytes = writer.total_bytes();
  SPAR_RETURN_IF_ERROR(CheckChainApplied(out.result, writer.version(), writer.revision()));
  return out;
}

}  // namespace spar
