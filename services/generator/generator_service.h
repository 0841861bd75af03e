// spar/services/generator/generator_service.h — the Generator gRPC endpoint:
// converts spar.v1 messages to GeneratorCore calls and back. Handler threads
// never run the model: Generate starts a job and waits on it, streaming
// rollouts as they finish; UpdateWeights assembles (and relays) a weight
// stream and hands the verified version to the core.
//
// Generate: INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED when the
// engine's queue is full, DEADLINE_EXCEEDED past the client's deadline,
// CANCELLED when the client goes away (the job is cancelled and its slots
// freed in every one of these cases).
//
// UpdateWeights: the header's relay_to chain is forwarded while receiving
// (relay_to[0] gets every message, with relay_to[1:] in its header). A
// malformed, out-of-order or corrupt stream is refused with its error code
// (DATA_LOSS for a bad checksum) and the old weights keep serving; the
// downstream stream is cancelled then. Buckets are relayed as soon as they
// arrive (each node verifies every byte itself; the commit is forwarded once
// verified here), so a chain is pipelined bucket by bucket. A stream cut
// between buckets (ABORTED / CANCELLED) keeps what arrived: the sender may
// resume it with header.resume_from_bucket = result's buckets_received. Otherwise the reply is OK and carries
// this node's result with the next node's (and so the whole chain's) inside
// `downstream`; a downstream failure shows there, not in the status. One
// update at a time: a second concurrent stream is ABORTED.
#pragma once

#include <memory>
#include <mutex>

#include "services/generator/generator_core.h"
#include "spar/v1/generator.grpc.pb.h"

namespace spar {

class GeneratorService final : public v1::Generator::Service {
 public:
  // `core` must outlive the service. `max_message_bytes` is used for the
  // relay channel.
  explicit GeneratorService(GeneratorCore* core, int64_t max_message_bytes = 512ll << 20);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::GeneratorInfo* response) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;

 private:
  // UpdateWeights on raw bytes (registered in the constructor in place of
  // the generated handler; same wire format, one response message).
  grpc::Status UpdateWeightsRaw(grpc::ServerContext* context,
                                grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>* stream);

  GeneratorCore* core_;
  int64_t max_message_bytes_;
  std::mutex update_mu_;  // one weight stream at a time
  // Kept across streams (guarded by update_mu_): an interrupted stream can be
  // resumed, and staging buffers are reused version after version.
  WeightStreamAssembler assembler_;
};

// Proto <-> core conversions (public for tests). Errors name the field.
// A request without `sampling` gets `defaults`; top_p 0 reads as 1. Fields
// this server does not know (a client built against another contract) are
// refused, never silently ignored: InvalidArgument naming where they are
// ("request.sampling: unknown field number(s) 42 ...").
Status RejectUnknownFields(const google::protobuf::Message& message, const std::string& path);
Result<GenerateInput> FromProto(const v1::GenerateRequest& request, const SamplingOptions& defaults);
void ToProto(const GeneratedRollout& r, const std::string& generator_id, bool with_logprobs,
             v1::Rollout* out);

}  // namespace spar
