#include "services/weights/weight_publisher.h"

#include "services/common/grpc_status.h"
#include "services/common/server.h"
#include "spar/v1/generator.grpc.pb.h"

namespace spar {

Status CheckChainApplied(const v1::WeightUpdateResult& r, uint64_t version) {
  if (!r.applied() || r.version() != version)
    return Aborted("generator " + r.node() + " did not apply version " + std::to_string(version) +
                   (r.error().empty() ? "" : ": " + r.error()));
  for (const auto& d : r.downstream()) SPAR_RETURN_IF_ERROR(CheckChainApplied(d, version));
  return Status::Ok();
}

Result<PublishResult> PublishWeights(WeightStreamWriter& writer, const std::vector<std::string>& chain,
                                     std::chrono::milliseconds timeout) {
  if (chain.empty()) return InvalidArgument("publish: no generators to send weights to");
  auto start = std::chrono::steady_clock::now();
  auto stub = v1::Generator::NewStub(MakeChannel(chain[0]));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  PublishResult out;
  auto stream = stub->UpdateWeights(&ctx, &out.result);
  const std::string who = "generator at " + chain[0];
  v1::WeightStreamMessage msg;
  *msg.mutable_header() = writer.Header(std::vector<std::string>(chain.begin() + 1, chain.end()));
  bool ok = stream->Write(msg);
  for (uint32_t i = 0; ok && i < writer.bucket_count(); ++i) {
    msg.Clear();
    writer.FillBucket(i, msg.mutable_bucket());
    ok = stream->Write(msg);
  }
  if (ok) {
    auto commit = writer.Commit();
    if (!commit.ok()) return commit.status();
    msg.Clear();
    *msg.mutable_commit() = *commit;
    ok = stream->Write(msg);
  }
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  if (!st.ok()) return FromGrpcStatus(st).WithContext("publishing weights to " + who);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.bytes = writer.total_bytes();
  SPAR_RETURN_IF_ERROR(CheckChainApplied(out.result, writer.Header().version()));
  return out;
}

}  // namespace spar
