// spar/services/scorer/scorer_service.h — the PreferenceScorer gRPC
// endpoint: converts spar.v1 messages to ScorerCore calls and back. No
// model code runs on the handler threads; they wait on the core's worker.
#pragma once

#include <memory>

#include "services/scorer/scorer_core.h"
#include "spar/v1/scorer.grpc.pb.h"

namespace spar {

class ScorerService final : public v1::PreferenceScorer::Service {
 public:
  // `core` must outlive the service.
  explicit ScorerService(ScorerCore* core) : core_(core) {}

  grpc::Status Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request,
                    v1::ScorerInfo* response) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;

 private:
  ScorerCore* core_;
};

// Proto <-> core conversions (public for the offline `spar score` path and
// tests). Errors name the group and field.
Result<std::vector<ScoreGroupInput>> FromProto(const v1::ScoreRequest& request);
void ToProto(const ScorerDescription& d, v1::PreferenceMatrix* matrix, const GroupPreferences& g);

}  // namespace spar
