// spar/services/learner/learner_service.h — the Learner gRPC endpoint over
// LearnerCore (rank 0). Handlers convert messages and wait on the core; the
// training thread alone runs the model.
#pragma once

#include "services/learner/learner_core.h"
#include "spar/v1/learner.grpc.pb.h"

namespace spar {

class LearnerService final : public v1::Learner::Service {
 public:
  // `core` must outlive the service.
  explicit LearnerService(LearnerCore* core) : core_(core) {}

  grpc::Status StartIteration(grpc::ServerContext*, const v1::StartIterationRequest*,
                              v1::LearnerProgress*) override;
  grpc::Status SubmitExamples(grpc::ServerContext*, grpc::ServerReader<v1::TrainingExample>*,
                              v1::SubmitSummary*) override;
  grpc::Status FinishIteration(grpc::ServerContext*, const v1::FinishIterationRequest*,
                               v1::FinishIterationResponse*) override;
  grpc::Status GetProgress(grpc::ServerContext*, const v1::ProgressRequest*, v1::LearnerProgress*) override;
  grpc::Status Info(grpc::ServerContext*, const v1::InfoRequest*, v1::LearnerInfo*) override;
  grpc::Status Health(grpc::ServerContext*, const v1::HealthRequest*, v1::HealthResponse*) override;

 private:
  LearnerCore* core_;
};

void ToProto(const LearnerProgressSnapshot& p, v1::LearnerProgress* out);

}  // namespace spar
