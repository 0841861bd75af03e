#include "services/learner/learner_service.h"

#include "services/common/grpc_status.h"

namespace spar {

void ToProto(const LearnerProgressSnapshot& p, v1::LearnerProgress* out) {
  out->set_iteration(p.iteration);
  out->set_step(static_cast<uint64_t>(p.step));
  out->set_loss(p.loss);
  out->set_learning_rate(p.learning_rate);
  out->set_grad_norm(p.grad_norm);
  out->set_tokens_per_second(p.tokens_per_second);
  out->set_samples_per_second(p.samples_per_second);
  out->set_examples_seen(p.examples_seen);
  out->set_examples_pending(p.examples_pending);
  out->set_policy_version(p.policy_version);
  out->set_policy_revision(p.policy_revision);
}

grpc::Status LearnerService::StartIteration(grpc::ServerContext*, const v1::StartIterationRequest* req,
                                            v1::LearnerProgress* resp) {
  std::vector<std::string> chain(req->generator_addresses().begin(), req->generator_addresses().end());
  auto p = core_->StartIteration(req->iteration(), req->expected_examples(), chain);
  if (!p.ok()) return ToGrpcStatus(p.status());
  ToProto(*p, resp);
  return grpc::Status::OK;
}

grpc::Status LearnerService::SubmitExamples(grpc::ServerContext* ctx,
                                            grpc::ServerReader<v1::TrainingExample>* reader,
                                            v1::SubmitSummary* resp) {
  // Hand examples to the core in chunks, so training starts while the
  // stream is still arriving.
  constexpr size_t kChunk = 16;
  std::vector<LearnerExample> chunk;
  v1::TrainingExample e;
  auto flush = [&] {
    SubmitOutcome out = core_->Submit(std::move(chunk));
    chunk.clear();
    resp->set_accepted(resp->accepted() + out.accepted);
    resp->set_rejected(resp->rejected() + out.rejected.size());
    for (auto& [id, reason] : out.rejected) {
      auto* r = resp->add_rejections();
      r->set_prompt_id(id);
      r->set_reason(reason);
    }
  };
  while (reader->Read(&e)) {
    chunk.push_back(ExampleFromProto(e));
    if (chunk.size() >= kChunk) flush();
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  if (!chunk.empty()) flush();
  return grpc::Status::OK;
}

grpc::Status LearnerService::FinishIteration(grpc::ServerContext*, const v1::FinishIterationRequest* req,
                                             v1::FinishIterationResponse* resp) {
  std::vector<std::string> chain(req->generator_addresses().begin(), req->generator_addresses().end());
  auto f = core_->FinishIteration(req->iteration(), chain, req->checkpoint_dir());
  if (!f.ok()) return ToGrpcStatus(f.status());
  resp->set_policy_version(f->policy_version);
  resp->set_checkpoint_dir(f->checkpoint_dir);
  if (f->published) {
    *resp->mutable_publish() = f->publish.result;
    resp->mutable_publish()->set_bytes_received(f->publish.bytes);
    resp->set_publish_seconds(f->publish.seconds);
  }
  ToProto(f->progress, resp->mutable_progress());
  return grpc::Status::OK;
}

grpc::Status LearnerService::GetProgress(grpc::ServerContext*, const v1::ProgressRequest*,
                                         v1::LearnerProgress* resp) {
  ToProto(core_->Progress(), resp);
  return grpc::Status::OK;
}

grpc::Status LearnerService::Info(grpc::ServerContext*, const v1::InfoRequest*, v1::LearnerInfo* resp) {
  const auto& c = core_->config();
  resp->set_learner_id("learner-" + std::to_string(c.rank));
  resp->set_model_name(core_->model_name());
  resp->set_loss(LossKindName(c.loss.kind));
  resp->set_optimizer(c.optimizer);
  resp->set_world_size(c.world_size);
  resp->set_rank(c.rank);
  const LearnerProgressSnapshot progress = core_->Progress();
  resp->set_policy_version(progress.policy_version);
  resp->set_policy_revision(progress.policy_revision);
  return grpc::Status::OK;
}

grpc::Status LearnerService::Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse* resp) {
  resp->set_status(v1::HealthResponse::SERVING);
  resp->set_message("learner ready");
  return grpc::Status::OK;
}

}  // namespace spar
