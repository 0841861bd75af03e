#include "services/scorer/scorer_service.h"

#include "services/common/grpc_status.h"

namespace spar {

Result<std::vector<ScoreGroupInput>> FromProto(const v1::ScoreRequest& request) {
  std::vector<ScoreGroupInput> groups;
  groups.reserve(request.groups_size());
  for (int i = 0; i < request.groups_size(); ++i) {
    const auto& g = request.groups(i);
    ScoreGroupInput in;
    in.group_id = g.group_id();
    switch (g.prompt().body_case()) {
      case v1::Prompt::kText:
        in.prompt_text = g.prompt().text();
        break;
      case v1::Prompt::kConversation:
        for (const auto& m : g.prompt().conversation().messages())
          in.messages.push_back({m.role(), m.content()});
        break;
      default:
        return InvalidArgument("groups[" + std::to_string(i) + "] (id '" + g.group_id() +
                               "').prompt: set text or conversation");
    }
    in.responses.assign(g.responses().begin(), g.responses().end());
    groups.push_back(std::move(in));
  }
  return groups;
}

void ToProto(const ScorerDescription& d, v1::PreferenceMatrix* matrix, const GroupPreferences& g) {
  matrix->set_k(g.k);
  matrix->mutable_probabilities()->Add(g.probabilities.begin(), g.probabilities.end());
  matrix->mutable_scores()->Add(g.scores.begin(), g.scores.end());
  matrix->mutable_win_rates()->Add(g.win_rates.begin(), g.win_rates.end());
  matrix->mutable_mean_scores()->Add(g.mean_scores.begin(), g.mean_scores.end());
  matrix->set_model(d.model_name);
}

grpc::Status ScorerService::Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) {
  auto groups = FromProto(*request);
  if (!groups.ok()) return ToGrpcStatus(groups.status());
  std::vector<std::string> ids;
  for (const auto& g : *groups) ids.push_back(g.group_id);
  // Honour the client's deadline; without one, a generous bound so a
  // stuck model cannot pin a handler forever.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  auto client_deadline = context->deadline();
  if (client_deadline != std::chrono::system_clock::time_point::max()) {
    auto left = client_deadline - std::chrono::system_clock::now();
    deadline = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
  }
  auto scored = core_->Score(std::move(*groups), deadline);
  if (!scored.ok()) return ToGrpcStatus(scored.status());
  const auto& d = core_->description();
  for (size_t i = 0; i < scored->size(); ++i) {
    auto* out = response->add_groups();
    out->set_group_id(ids[i]);
    ToProto(d, out->mutable_matrix(), (*scored)[i]);
  }
  response->set_model(d.model_name);
  return grpc::Status::OK;
}

grpc::Status ScorerService::Info(grpc::ServerContext*, const v1::InfoRequest*,
                                 v1::ScorerInfo* response) {
  const auto& d = core_->description();
  response->set_kind(d.kind);
  response->set_model_name(d.model_name);
  response->set_k(d.k);
  response->set_tau(d.tau);
  response->set_has_prompt_head(d.has_prompt_head);
  response->set_max_length(d.max_length);
  response->set_convention(d.convention == ProbabilityConvention::kSigmoidSOverTau
                               ? v1::PROBABILITY_CONVENTION_SIGMOID_S_OVER_TAU
                               : v1::PROBABILITY_CONVENTION_SIGMOID_2S_OVER_TAU);
  ScorerStats stats = core_->Stats();
  response->set_groups_scored(stats.groups_scored);
  response->set_responses_scored(stats.responses_scored);
  response->set_groups_per_second(stats.groups_per_second);
  return grpc::Status::OK;
}

grpc::Status ScorerService::Health(grpc::ServerContext*, const v1::HealthRequest*,
                                   v1::HealthResponse* response) {
  response->set_status(v1::HealthResponse::SERVING);
  response->set_message(core_->description().kind + " scorer ready");
  return grpc::Status::OK;
}

}  // namespace spar
