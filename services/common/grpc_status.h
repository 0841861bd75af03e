// spar/services/common/grpc_status.h — the one place spar::Status becomes a
// grpc::Status (and back), so every service reports errors the same way.
#pragma once

#include <grpcpp/grpcpp.h>

#include "common/status.h"

namespace spar {

// Codes map one to one (spar's codes are gRPC's canonical codes); the
// message is kept verbatim.
grpc::Status ToGrpcStatus(const Status& status);
Status FromGrpcStatus(const grpc::Status& status);

}  // namespace spar
