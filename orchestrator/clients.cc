#include "orchestrator/clients.h"

#include "common/logging.h"
#include "services/common/grpc_status.h"
#include "services/common/server.h"
#include "spar/v1/generator.grpc.pb.h"
#include "spar/v1/learner.grpc.pb.h"
#include "spar/v1/scorer.grpc.pb.h"

namespace spar {
namespace {

void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

Status Named(const grpc::Status& s, const std::string& who, const std::string& address) {
  return FromGrpcStatus(s).WithContext(who + " at " + address);
}

void FillPrompt(const PromptRecord& p, v1::Prompt* out) {
  out->set_prompt_id(p.prompt_id);
  if (!p.messages.empty()) {
    for (const auto& m : p.messages) {
      auto* msg = out->mutable_conversation()->add_messages();
      msg->set_role(m.role);
      msg->set_content(m.content);
    }
  } else {
    out->set_text(p.text);
  }
}

FinishReasonCode FromProto(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return FinishReasonCode::kStop;
    case v1::FINISH_REASON_LENGTH: return FinishReasonCode::kLength;
    case v1::FINISH_REASON_CANCELLED: return FinishReasonCode::kCancelled;
    case v1::FINISH_REASON_ERROR: return FinishReasonCode::kError;
    default: return FinishReasonCode::kUnspecified;
  }
}

class GrpcGeneratorClient : public GeneratorClient {
 public:
  GrpcGeneratorClient(std::string name, std::string address)
      : name_(std::move(name)), address_(std::move(address)),
        stub_(v1::Generator::NewStub(MakeChannel(address_))) {}
  const std::string& name() const override { return name_; }
  const std::string& address() const override { return address_; }

  Result<RolloutGroup> Generate(const PromptRecord& prompt, const GenerationConfig& config,
                                uint64_t seed, std::chrono::milliseconds timeout) override {
    v1::GenerateRequest req;
    req.set_request_id(prompt.prompt_id);
    FillPrompt(prompt, req.add_prompts());
    req.set_num_samples(config.samples_per_prompt);
    auto* s = req.mutable_sampling();
    s->set_temperature(static_cast<float>(config.temperature));
    s->set_top_p(static_cast<float>(config.top_p));
    s->set_top_k(config.top_k);
    s->set_max_new_tokens(config.max_new_tokens);
    s->set_seed(seed);
    s->set_return_logprobs(true);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    auto reader = stub_->Generate(&ctx, req);
    RolloutGroup group;
    group.iteration = prompt.iteration;
    group.prompt_index = prompt.prompt_index;
    group.prompt_id = prompt.prompt_id;
    group.rollouts.resize(config.samples_per_prompt);
    std::vector<bool> seen(config.samples_per_prompt, false);
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
      for (const auto& r : resp.rollouts()) {
        if (r.sample_index() >= config.samples_per_prompt || seen[r.sample_index()]) {
          ctx.TryCancel();
          return DataLoss(name_ + " at " + address_ + " sent sample " +
                          std::to_string(r.sample_index()) + " twice or out of range");
        }
        if (r.logprobs_size() != r.token_ids_size()) {
          ctx.TryCancel();
          return DataLoss(name_ + " at " + address_ + " sent a rollout with " +
                          std::to_string(r.logprobs_size()) + " logprobs for " +
                          std::to_string(r.token_ids_size()) + " tokens");
        }
        seen[r.sample_index()] = true;
        RolloutRecord& out = group.rollouts[r.sample_index()];
        out.sample_index = r.sample_index();
        out.text = r.text();
        out.token_ids.assign(r.token_ids().begin(), r.token_ids().end());
        out.logprobs.assign(r.logprobs().begin(), r.logprobs().end());
        out.finish_reason = FromProto(r.finish_reason());
        out.policy_version = r.policy_version();
        out.policy_revision = r.policy_revision();
        out.generator_id = r.generator_id().empty() ? name_ : r.generator_id();
        if (group.prompt_token_ids.empty())
          group.prompt_token_ids.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      }
    }
    grpc::Status st = reader->Finish();
    if (!st.ok()) return Named(st, name_, address_);
    for (size_t i = 0; i < seen.size(); ++i)
      if (!seen[i])
        return DataLoss(name_ + " at " + address_ + " ended the stream without sample " + std::to_string(i));
    const uint64_t version = group.rollouts[0].policy_version;
    for (const auto& r : group.rollouts)
      if (r.policy_version != version)
        return DataLoss(name_ + ": one group mixes policy versions");
    return group;
  }

  Result<GeneratorState> State(std::chrono::milliseconds timeout) override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    v1::GeneratorInfo info;
    grpc::Status st = stub_->Info(&ctx, v1::InfoRequest(), &info);
    if (!st.ok()) return Named(st, name_, address_);
    GeneratorState s;
    s.policy_version = info.policy_version();
    s.max_batch = info.max_batch();
    s.busy_slots = info.busy_slots();
    s.queue_depth = info.queue_depth();
    s.tokens_per_second = info.tokens_per_second();
    return s;
  }

 private:
  std::string name_;
  std::string address_;
  std::unique_ptr<v1::Generator::Stub> stub_;
};

class GrpcScorerClient : public ScorerClient {
 public:
  explicit GrpcScorerClient(std::string address)
      : address_(std::move(address)), stub_(v1::PreferenceScorer::NewStub(MakeChannel(address_))) {}
  const std::string& address() const override { return address_; }

  Result<std::vector<ScoreRecord>> Score(const std::vector<const PromptRecord*>& prompts,
                                         const std::vector<const RolloutGroup*>& groups,
                                         std::chrono::milliseconds timeout) override {
    v1::ScoreRequest req;
    for (size_t i = 0; i < groups.size(); ++i) {
      auto* g = req.add_groups();
      g->set_group_id(groups[i]->prompt_id);
      FillPrompt(*prompts[i], g->mutable_prompt());
      for (const auto& r : groups[i]->rollouts) {
        // An empty response is still a response: the judge sees a space.
        g->add_responses(r.text.empty() ? std::string(" ") : r.text);
      }
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    v1::ScoreResponse resp;
    grpc::Status st = stub_->Score(&ctx, req, &resp);
    if (!st.ok()) return Named(st, "scorer", address_);
    if (resp.groups_size() != static_cast<int>(groups.size()))
      return DataLoss("scorer at " + address_ + " answered " + std::to_string(resp.groups_size()) +
                      " groups for " + std::to_string(groups.size()));
    std::vector<ScoreRecord> out;
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto& m = resp.groups(static_cast<int>(i)).matrix();
      ScoreRecord s;
      s.iteration = groups[i]->iteration;
      s.prompt_index = groups[i]->prompt_index;
      s.prompt_id = groups[i]->prompt_id;
      s.k = m.k();
      s.probabilities.assign(m.probabilities().begin(), m.probabilities().end());
      s.scores.assign(m.scores().begin(), m.scores().end());
      s.win_rates.assign(m.win_rates().begin(), m.win_rates().end());
      s.mean_scores.assign(m.mean_scores().begin(), m.mean_scores().end());
      s.model = m.model().empty() ? resp.model() : m.model();
      if (s.k != groups[i]->rollouts.size())
        return DataLoss("scorer at " + address_ + " scored group " + s.prompt_id + " with k = " +
                        std::to_string(s.k) + " for " + std::to_string(groups[i]->rollouts.size()) + " responses");
      Status valid = ValidateScore(s);
      if (!valid.ok()) return DataLoss("scorer at " + address_ + ": " + valid.message());
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  std::string address_;
  std::unique_ptr<v1::PreferenceScorer::Stub> stub_;
};

LearnerProgressInfo FromProto(const v1::LearnerProgress& p) {
  LearnerProgressInfo i;
  i.step = p.step();
  i.loss = p.loss();
  i.learning_rate = p.learning_rate();
  i.grad_norm = p.grad_norm();
  i.tokens_per_second = p.tokens_per_second();
  i.examples_seen = p.examples_seen();
  i.policy_version = p.policy_version();
  return i;
}

class GrpcLearnerClient : public LearnerClient {
 public:
  explicit GrpcLearnerClient(std::string address)
      : address_(std::move(address)), stub_(v1::Learner::NewStub(MakeChannel(address_))) {}
  const std::string& address() const override { return address_; }

  Result<LearnerProgressInfo> StartIteration(uint32_t iteration, uint64_t expected,
                                             std::chrono::milliseconds timeout) override {
    return StartIteration(iteration, expected, {}, timeout);
  }

  Result<LearnerProgressInfo> StartIteration(uint32_t iteration, uint64_t expected,
                                             const std::vector<std::string>& generators,
                                             std::chrono::milliseconds timeout) override {
    v1::StartIterationRequest req;
    req.set_iteration(iteration);
    req.set_expected_examples(expected);
    for (const auto& g : generators) req.add_generator_addresses(g);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    v1::LearnerProgress resp;
    grpc::Status st = stub_->StartIteration(&ctx, req, &resp);
    if (!st.ok()) return Named(st, "learner", address_);
    return FromProto(resp);
  }

  Result<uint64_t> Submit(const std::vector<const RolloutGroup*>& groups,
                          const std::vector<const ScoreRecord*>& scores,
                          std::chrono::milliseconds timeout) override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    v1::SubmitSummary summary;
    auto writer = stub_->SubmitExamples(&ctx, &summary);
    for (size_t i = 0; i < groups.size(); ++i) {
      v1::TrainingExample e;
      e.set_prompt_id(groups[i]->prompt_id);
      e.mutable_prompt_token_ids()->Add(groups[i]->prompt_token_ids.begin(), groups[i]->prompt_token_ids.end());
      for (const auto& r : groups[i]->rollouts) {
        auto* resp = e.add_responses();
        resp->mutable_token_ids()->Add(r.token_ids.begin(), r.token_ids.end());
        resp->mutable_ref_logprobs()->Add(r.logprobs.begin(), r.logprobs.end());
        e.set_policy_version(r.policy_version);
      }
      e.mutable_win_rates()->Add(scores[i]->win_rates.begin(), scores[i]->win_rates.end());
      e.mutable_mean_scores()->Add(scores[i]->mean_scores.begin(), scores[i]->mean_scores.end());
      e.set_iteration(groups[i]->iteration);
      if (!writer->Write(e)) break;  // the server ended the stream; Finish says why
    }
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    if (!st.ok()) return Named(st, "learner", address_);
    for (const auto& r : summary.rejections())
      Logger("orchestrator")->warn("learner rejected example {}: {}", r.prompt_id(), r.reason());
    return summary.accepted();
  }

  Result<FinishInfo> FinishIteration(uint32_t iteration, const std::vector<std::string>& generators,
                                     const std::string& checkpoint_dir,
                                     std::chrono::milliseconds timeout) override {
    v1::FinishIterationRequest req;
    req.set_iteration(iteration);
    for (const auto& g : generators) req.add_generator_addresses(g);
    req.set_checkpoint_dir(checkpoint_dir);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout);
    v1::FinishIterationResponse resp;
    grpc::Status st = stub_->FinishIteration(&ctx, req, &resp);
    if (!st.ok()) return Named(st, "learner", address_);
    FinishInfo f;
    f.policy_version = resp.policy_version();
    f.checkpoint_dir = resp.checkpoint_dir();
    f.publish_seconds = resp.publish_seconds();
    f.publish_bytes = resp.publish().bytes_received();
    f.progress = FromProto(resp.progress());
    return f;
  }

 private:
  std::string address_;
  std::unique_ptr<v1::Learner::Stub> stub_;
};

}  // namespace

std::unique_ptr<GeneratorClient> MakeGrpcGeneratorClient(const std::string& name,
                                                         const std::string& address) {
  return std::make_unique<GrpcGeneratorClient>(name, address);
}
std::unique_ptr<ScorerClient> MakeGrpcScorerClient(const std::string& address) {
  return std::make_unique<GrpcScorerClient>(address);
}
std::unique_ptr<LearnerClient> MakeGrpcLearnerClient(const std::string& address) {
  return std::make_unique<GrpcLearnerClient>(address);
}

}  // namespace spar
