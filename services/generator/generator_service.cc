#include "services/generator/generator_service.h"

#include <condition_variable>
#include <deque>
#include <thread>

#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "common/logging.h"
#include "common/policy_version.h"
#include "services/common/grpc_status.h"
#include "services/common/server.h"
#include "services/weights/weight_publisher.h"

namespace spar {

Status RejectUnknownFields(const google::protobuf::Message& message, const std::string& path) {
  const auto* reflection = message.GetReflection();
  const auto& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    std::string numbers;
    for (int i = 0; i < unknown.field_count(); ++i)
      numbers += (i ? ", " : "") + std::to_string(unknown.field(i).number());
    return InvalidArgument(path + ": unknown field number(s) " + numbers + " in " +
                           message.GetDescriptor()->full_name() +
                           " (a client built against another contract? this server speaks spar.v1)");
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const auto* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, f); ++i)
        SPAR_RETURN_IF_ERROR(RejectUnknownFields(reflection->GetRepeatedMessage(message, f, i),
                                                 path + "." + f->name() + "[" + std::to_string(i) + "]"));
    } else {
      SPAR_RETURN_IF_ERROR(RejectUnknownFields(reflection->GetMessage(message, f), path + "." + f->name()));
    }
  }
  return Status::Ok();
}

Result<GenerateInput> FromProto(const v1::GenerateRequest& request, const SamplingOptions& defaults) {
  SPAR_RETURN_IF_ERROR(RejectUnknownFields(request, "request"));
  GenerateInput in;
  in.prompts.reserve(request.prompts_size());
  for (int i = 0; i < request.prompts_size(); ++i) {
    const auto& p = request.prompts(i);
    PromptInput prompt;
    prompt.prompt_id = p.prompt_id();
    switch (p.body_case()) {
      case v1::Prompt::kText:
        prompt.text = p.text();
        break;
      case v1::Prompt::kConversation:
        prompt.is_conversation = true;
        for (const auto& m : p.conversation().messages()) prompt.messages.push_back({m.role(), m.content()});
        break;
      default:
        return InvalidArgument("prompts[" + std::to_string(i) + "]" +
                               (p.prompt_id().empty() ? "" : " ('" + p.prompt_id() + "')") +
                               ": set text or conversation");
    }
    in.prompts.push_back(std::move(prompt));
  }
  in.num_samples = request.num_samples();
  if (!request.has_sampling()) {
    in.sampling = defaults;
    return in;
  }
  const auto& s = request.sampling();
  in.sampling.temperature = s.temperature();
  in.sampling.top_p = s.top_p() == 0.0f ? 1.0f : s.top_p();
  in.sampling.top_k = s.top_k();
  in.sampling.max_new_tokens = s.max_new_tokens();
  in.sampling.seed = s.seed();
  in.sampling.stop.assign(s.stop().begin(), s.stop().end());
  in.sampling.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  return in;
}

namespace {

v1::FinishReason FinishReasonToProto(const std::string& reason) {
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  if (reason == "cancelled") return v1::FINISH_REASON_CANCELLED;
  return v1::FINISH_REASON_ERROR;
}

std::chrono::steady_clock::time_point SteadyDeadline(const grpc::ServerContext* context) {
  auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return std::chrono::steady_clock::time_point::max();
  auto left = d - std::chrono::system_clock::now();
  return std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
}

}  // namespace

void ToProto(const GeneratedRollout& r, const std::string& generator_id, bool with_logprobs,
             v1::Rollout* out) {
  out->set_prompt_id(r.prompt_id);
  out->set_sample_index(r.sample_index);
  out->set_text(r.text);
  out->mutable_token_ids()->Add(r.token_ids.begin(), r.token_ids.end());
  if (with_logprobs) out->mutable_logprobs()->Add(r.logprobs.begin(), r.logprobs.end());
  out->set_finish_reason(FinishReasonToProto(r.finish_reason));
  out->set_policy_version(r.policy_version);
  out->set_policy_revision(r.policy_revision);
  out->set_generator_id(generator_id);
  if (r.prompt_token_ids)
    out->mutable_prompt_token_ids()->Add(r.prompt_token_ids->begin(), r.prompt_token_ids->end());
}

grpc::Status GeneratorService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  auto input = FromProto(*request, core_->options().default_sampling);
  if (!input.ok()) return ToGrpcStatus(input.status());
  const bool with_logprobs = !request->has_sampling() || request->sampling().return_logprobs();
  auto job = core_->Start(std::move(*input));
  if (!job.ok()) return ToGrpcStatus(job.status());
  const auto deadline = SteadyDeadline(context);
  const std::string& id = core_->description().generator_id;
  // The sync API has no cancellation callback: poll often enough that a
  // vanished client frees its slots quickly, rarely enough that handler
  // wake-ups do not steal the model's cores (rollouts wake it at once).
  constexpr auto kPoll = std::chrono::milliseconds(100);
  while (true) {
    if (context->IsCancelled()) {
      (*job)->Cancel();
      return ToGrpcStatus(Cancelled("generate: the client cancelled request '" + request->request_id() + "'"));
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      (*job)->Cancel();
      return ToGrpcStatus(DeadlineExceeded("generate: request '" + request->request_id() +
                                           "' passed its deadline"));
    }
    JobUpdate u = (*job)->Next(std::min(deadline, now + kPoll));
    if (!u.rollouts.empty()) {
      v1::GenerateResponse resp;
      for (const auto& r : u.rollouts) ToProto(r, id, with_logprobs, resp.add_rollouts());
      if (!writer->Write(resp)) {
        (*job)->Cancel();
        return ToGrpcStatus(Cancelled("generate: the client of request '" + request->request_id() +
                                      "' went away"));
      }
    }
    if (u.finished) return ToGrpcStatus(u.status);
  }
}

namespace {

// The stream to the next generator of the chain. Messages are forwarded as
// the raw bytes that arrived (the ByteBuffer shares their slices: no copy,
// no re-serialisation) by a writer thread, so receiving bucket i+1 overlaps
// with sending bucket i downstream. At most kInFlight messages wait.
class Relay {
 public:
  Relay(const std::string& address, int64_t max_message_bytes,
        std::chrono::system_clock::time_point deadline)
      : address_(address), channel_(MakeChannel(address, max_message_bytes)) {
    if (deadline != std::chrono::system_clock::time_point::max()) context_.set_deadline(deadline);
    // The generated stub would serialise a WeightStreamMessage; this writes
    // the received bytes as they are (same method, same wire format).
    grpc::internal::RpcMethod method(kUpdateWeightsMethod, grpc::internal::RpcMethod::CLIENT_STREAMING, channel_);
    writer_.reset(grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(channel_.get(), method, &context_,
                                                                                &result_));
    thread_ = std::thread([this] { WriteLoop(); });
  }
  ~Relay() { Abort(); }

  // Queues one message (waits while kInFlight are queued).
  void Send(const grpc::ByteBuffer& message) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queue_.size() < kInFlight || stop_; });
    if (stop_) return;
    queue_.push_back(message);
    ready_.notify_one();
  }
  // Cancels the downstream stream (its node keeps its old weights).
  void Abort() {
    if (finished_) return;
    finished_ = true;
    context_.TryCancel();
    Stop(/*writes_done=*/false);
    // The refusal upstream is what matters; the cancelled status says nothing new.
    grpc::Status ignored = writer_->Finish();
    (void)ignored;
  }
  // Waits until everything queued is written, then the downstream node's
  // result, or one that says why there is none.
  v1::WeightUpdateResult Finish() {
    finished_ = true;
    Stop(/*writes_done=*/true);
    grpc::Status st = writer_->Finish();
    if (!st.ok()) {
      v1::WeightUpdateResult failed;
      failed.set_node(result_.node().empty() ? address_ : result_.node());
      failed.set_applied(false);
      failed.set_error(FromGrpcStatus(st).WithContext("relay to " + address_).ToString());
      return failed;
    }
    if (result_.node().empty()) result_.set_node(address_);
    return result_;
  }

 private:
  static constexpr size_t kInFlight = 2;

  void Stop(bool writes_done) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      drain_ = writes_done;
      stop_ = true;
    }
    ready_.notify_all();
    space_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void WriteLoop() {
    bool writable = true;
    while (true) {
      grpc::ByteBuffer message;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || stop_; });
        if (queue_.empty() || (stop_ && !drain_)) break;
        message = std::move(queue_.front());
        queue_.pop_front();
      }
      space_.notify_one();
      // A failed write means the downstream call is over; Finish says why.
      if (writable) writable = writer_->Write(message);
    }
    if (drain_ && writable) writer_->WritesDone();
  }

  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  grpc::ClientContext context_;
  v1::WeightUpdateResult result_;
  std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<grpc::ByteBuffer> queue_;
  bool stop_ = false, drain_ = false, finished_ = false;
  std::thread thread_;
};

grpc::ByteBuffer ToByteBuffer(const google::protobuf::Message& message) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// The first byte of a serialized WeightStreamMessage is its field's tag:
// 0x1A for a commit (field 3, length-delimited).
bool IsCommit(const grpc::ByteBuffer& message) {
  std::vector<grpc::Slice> slices;
  if (!message.Dump(&slices).ok()) return false;
  for (const auto& s : slices)
    if (s.size() > 0) return s.begin()[0] == 0x1A;
  return false;
}

}  // namespace

GeneratorService::GeneratorService(GeneratorCore* core, int64_t max_message_bytes)
    : core_(core), max_message_bytes_(max_message_bytes) {
  // UpdateWeights reads raw bytes: buckets are staged straight from the
  // receive buffers and relayed without re-serialisation. The wire format is
  // the proto's; only this server's side changes (method 1 of the service).
  MarkMethodStreamed(1, new grpc::internal::BidiStreamingHandler<GeneratorService, grpc::ByteBuffer, grpc::ByteBuffer>(
                            &GeneratorService::UpdateWeightsRaw, this));
}

grpc::Status GeneratorService::UpdateWeightsRaw(grpc::ServerContext* context,
                                                grpc::ServerReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>* stream) {
  auto log = Logger("generator");
  const std::string& node = core_->description().generator_id;
  std::unique_lock<std::mutex> lock(update_mu_, std::try_to_lock);
  if (!lock.owns_lock())
    return ToGrpcStatus(Aborted("generator " + node + ": another weight update is in progress"));
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  WeightStreamAssembler& assembler = assembler_;
  std::unique_ptr<Relay> relay;
  v1::WeightUpdateResult response;
  response.set_node(node);

  auto fail = [&](const Status& s) {
    if (relay) relay->Abort();
    core_->RecordWeightSync(assembler.bytes_received(), elapsed(), false);
    Status named = s.WithContext("generator " + node + " (version " + std::to_string(assembler.version()) +
                                 ", after " + std::to_string(assembler.buckets_received()) + " buckets)");
    log->warn("weight update refused; still serving version {}: {}", core_->policy_version(), named.ToString());
    // A stream that broke between buckets can be resumed; a refused one cannot.
    if (s.code() != StatusCode::kAborted && s.code() != StatusCode::kCancelled) assembler.Reset();
    return ToGrpcStatus(named);
  };

  grpc::ByteBuffer raw;
  v1::WeightStreamMessage small;
  bool have_header = false;
  double receive_seconds = 0;
  while (stream->Read(&raw)) {
    if (!have_header) {
      grpc::ProtoBufferReader in(&raw);
      auto kind = assembler.ReadMessage(&in, &small);
      if (!kind.ok()) return fail(kind.status());
      if (*kind != v1::WeightStreamMessage::kHeader)
        return fail(InvalidArgument(std::string(*kind == v1::WeightStreamMessage::kBucket ? "bucket" : "commit") +
                                    ": sent before the header"));
      have_header = true;
      Status s = assembler.Begin(small.header());
      if (!s.ok()) return fail(s);
      const auto& chain = small.header().relay_to();
      if (!chain.empty()) {
        relay = std::make_unique<Relay>(chain[0], max_message_bytes_, context->deadline());
        v1::WeightStreamMessage forward;
        *forward.mutable_header() = small.header();
        forward.mutable_header()->mutable_relay_to()->erase(forward.mutable_header()->mutable_relay_to()->begin());
        relay->Send(ToByteBuffer(forward));
      }
      continue;
    }
    // Buckets go downstream before this node has even looked at them: each
    // node checks every byte itself, and a bad stream is cancelled along the
    // chain. The commit goes on only once verified here.
    const bool commit = IsCommit(raw);
    if (relay && !commit) relay->Send(raw);
    grpc::ProtoBufferReader in(&raw);
    auto kind = assembler.ReadMessage(&in, &small);
    if (!kind.ok()) return fail(kind.status());
    if (*kind == v1::WeightStreamMessage::kHeader) return fail(InvalidArgument("header: a second header in one stream"));
    if (*kind == v1::WeightStreamMessage::kBucket) continue;

    const uint64_t bytes = assembler.bytes_received();
    const uint32_t buckets = assembler.buckets_received();
    auto staged = assembler.Commit(small.commit());
    if (!staged.ok()) return fail(staged.status());
    receive_seconds = elapsed();
    // Verified here: let the next node apply while this one does.
    if (relay) relay->Send(raw);
    const uint64_t version = staged->version, revision = staged->revision;
    auto applied = core_->ApplyWeights(*staged);
    assembler.Recycle(std::move(*staged));
    response.set_bytes_received(bytes);
    response.set_buckets_received(buckets);
    response.set_applied(applied.ok());
    if (!applied.ok()) {
      response.set_error(applied.status().ToString());
      log->warn("weight version {} (revision {}) not applied; still serving version {}: {}", version, revision,
                core_->policy_version(), applied.status().ToString());
    }
    const auto serving = core_->policy_version_and_revision();
    response.set_version(serving.first);
    response.set_revision(serving.second);
    if (relay) *response.add_downstream() = relay->Finish();
    response.set_seconds(elapsed());
    core_->RecordWeightSync(bytes, elapsed(), applied.ok());
    if (applied.ok())
      log->info("applied weight version {} (revision {}, {:.1f} MB, {} buckets): received and verified in {:.3f} s, applied "
                "in {:.3f} s, chain done at {:.3f} s",
                version, revision, bytes / 1e6, buckets, receive_seconds, applied->seconds, elapsed());
    if (!stream->Write(ToByteBuffer(response)))
      return ToGrpcStatus(Cancelled("the sender went away before the result"));
    return grpc::Status::OK;
  }
  if (context->IsCancelled()) return fail(Cancelled("the sender cancelled the weight stream"));
  return fail(Aborted(have_header ? "the weight stream ended without a commit"
                                  : "the weight stream ended before its header"));
}

grpc::Status GeneratorService::Info(grpc::ServerContext*, const v1::InfoRequest*, v1::GeneratorInfo* response) {
  const auto& d = core_->description();
  GeneratorStats s = core_->Stats();
  response->set_generator_id(d.generator_id);
  response->set_model_name(d.model_name);
  response->set_architecture(d.architecture);
  response->set_num_parameters(d.num_parameters);
  response->set_hidden_size(d.hidden_size);
  response->set_num_layers(d.num_layers);
  response->set_vocab_size(d.vocab_size);
  response->set_max_context(d.max_context);
  response->set_policy_version(s.engine.policy_version);
  response->set_policy_revision(s.engine.policy_revision);
  response->set_max_batch(s.engine.max_batch);
  response->set_busy_slots(s.engine.busy_slots);
  response->set_queue_depth(s.engine.queue_depth);
  response->set_max_queue(s.engine.max_queue);
  response->set_tokens_generated(s.engine.tokens_generated);
  response->set_rollouts_completed(s.engine.rollouts_completed);
  response->set_tokens_per_second(s.tokens_per_second);
  response->set_rollouts_per_second(s.rollouts_per_second);
  return grpc::Status::OK;
}

grpc::Status GeneratorService::Health(grpc::ServerContext*, const v1::HealthRequest*,
                                      v1::HealthResponse* response) {
  response->set_status(v1::HealthResponse::SERVING);
  const auto serving = core_->policy_version_and_revision();
  response->set_message("generator " + core_->description().generator_id + " serving " +
                        core_->description().model_name + " at policy version " +
                        PolicyVersionName(serving.first, serving.second));
  return grpc::Status::OK;
}

}  // namespace spar
