#include "services/generator/generator_service.h"

#include "common/logging.h"
#include "services/common/grpc_status.h"
#include "services/common/server.h"

namespace spar {

Result<GenerateInput> FromProto(const v1::GenerateRequest& request, const SamplingOptions& defaults) {
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
  // Polled often enough that a vanished client frees its slots quickly.
  constexpr auto kPoll = std::chrono::milliseconds(20);
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

// The stream to the next generator of the chain.
struct Relay {
  std::string address;
  std::unique_ptr<v1::Generator::Stub> stub;
  grpc::ClientContext context;
  v1::WeightUpdateResult result;
  std::unique_ptr<grpc::ClientWriter<v1::WeightStreamMessage>> writer;
  bool writable = true;

  void Write(const v1::WeightStreamMessage& msg) {
    if (writable) writable = writer->Write(msg);
  }
  void Abort() {
    context.TryCancel();
    // The refusal upstream is what matters; the cancelled status says nothing new.
    grpc::Status ignored = writer->Finish();
    (void)ignored;
  }
  // The downstream node's result, or one that says why there is none.
  v1::WeightUpdateResult Finish() {
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    if (!st.ok()) {
      v1::WeightUpdateResult failed;
      failed.set_node(result.node().empty() ? address : result.node());
      failed.set_applied(false);
      failed.set_error(FromGrpcStatus(st).WithContext("relay to " + address).ToString());
      return failed;
    }
    if (result.node().empty()) result.set_node(address);
    return result;
  }
};

}  // namespace

grpc::Status GeneratorService::UpdateWeights(grpc::ServerContext* context,
                                             grpc::ServerReader<v1::WeightStreamMessage>* reader,
                                             v1::WeightUpdateResult* response) {
  auto log = Logger("generator");
  const std::string& node = core_->description().generator_id;
  std::unique_lock<std::mutex> lock(update_mu_, std::try_to_lock);
  if (!lock.owns_lock())
    return ToGrpcStatus(Aborted("generator " + node + ": another weight update is in progress"));
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  WeightStreamAssembler assembler;
  std::unique_ptr<Relay> relay;
  response->set_node(node);

  auto fail = [&](const Status& s) {
    if (relay) relay->Abort();
    core_->RecordWeightSync(assembler.bytes_received(), elapsed(), false);
    Status named = s.WithContext("generator " + node + " (version " + std::to_string(assembler.version()) +
                                 ", after " + std::to_string(assembler.buckets_received()) + " buckets)");
    log->warn("weight update refused; still serving version {}: {}", core_->policy_version(), named.ToString());
    return ToGrpcStatus(named);
  };

  v1::WeightStreamMessage msg;
  bool have_header = false;
  while (reader->Read(&msg)) {
    switch (msg.kind_case()) {
      case v1::WeightStreamMessage::kHeader: {
        if (have_header) return fail(InvalidArgument("header: a second header in one stream"));
        have_header = true;
        Status s = assembler.Begin(msg.header());
        if (!s.ok()) return fail(s);
        const auto& chain = msg.header().relay_to();
        if (!chain.empty()) {
          relay = std::make_unique<Relay>();
          relay->address = chain[0];
          relay->stub = v1::Generator::NewStub(MakeChannel(relay->address, max_message_bytes_));
          if (context->deadline() != std::chrono::system_clock::time_point::max())
            relay->context.set_deadline(context->deadline());
          relay->writer = relay->stub->UpdateWeights(&relay->context, &relay->result);
          v1::WeightStreamMessage forward;
          *forward.mutable_header() = msg.header();
          forward.mutable_header()->mutable_relay_to()->erase(forward.mutable_header()->mutable_relay_to()->begin());
          relay->Write(forward);
        }
        break;
      }
      case v1::WeightStreamMessage::kBucket: {
        if (!have_header) return fail(InvalidArgument("bucket: sent before the header"));
        if (relay) relay->Write(msg);
        Status s = assembler.AddBucket(msg.bucket());
        if (!s.ok()) return fail(s);
        break;
      }
      case v1::WeightStreamMessage::kCommit: {
        if (!have_header) return fail(InvalidArgument("commit: sent before the header"));
        const uint64_t bytes = assembler.bytes_received();
        const uint32_t buckets = assembler.buckets_received();
        auto staged = assembler.Commit(msg.commit());
        if (!staged.ok()) return fail(staged.status());
        // Verified here: let the next node apply while this one does.
        if (relay) relay->Write(msg);
        const uint64_t version = staged->version;
        auto applied = core_->ApplyWeights(std::move(*staged));
        response->set_bytes_received(bytes);
        response->set_buckets_received(buckets);
        response->set_applied(applied.ok());
        if (!applied.ok()) {
          response->set_error(applied.status().ToString());
          log->warn("weight version {} not applied; still serving version {}: {}", version,
                    core_->policy_version(), applied.status().ToString());
        }
        response->set_version(core_->policy_version());
        if (relay) *response->add_downstream() = relay->Finish();
        response->set_seconds(elapsed());
        core_->RecordWeightSync(bytes, elapsed(), applied.ok());
        if (applied.ok())
          log->info("applied weight version {} ({:.1f} MB, {} buckets) in {:.2f} s", version, bytes / 1e6,
                    buckets, elapsed());
        return grpc::Status::OK;
      }
      default:
        return fail(InvalidArgument("message: neither header, bucket nor commit"));
    }
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
  response->set_message("generator " + core_->description().generator_id + " serving " +
                        core_->description().model_name + " at policy version " +
                        std::to_string(core_->policy_version()));
  return grpc::Status::OK;
}

}  // namespace spar
