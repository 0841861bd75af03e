#include "common/status.h"

namespace spar {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kCancelled: return "cancelled";
    case StatusCode::kUnknown: return "unknown";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kDeadlineExceeded: return "deadline_exceeded";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kAlreadyExists: return "already_exists";
    case StatusCode::kPermissionDenied: return "permission_denied";
    case StatusCode::kResourceExhausted: return "resource_exhausted";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kAborted: return "aborted";
    case StatusCode::kOutOfRange: return "out_of_range";
    case StatusCode::kUnimplemented: return "unimplemented";
    case StatusCode::kInternal: return "internal";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kDataLoss: return "data_loss";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string message(context);
  message += ": ";
  message += message_;
  return Status(code_, std::move(message));
}

#define SPAR_DEFINE_STATUS_FACTORY_(Name, Code) \
  Status Name(std::string message) { return Status(StatusCode::Code, std::move(message)); }
SPAR_DEFINE_STATUS_FACTORY_(InvalidArgument, kInvalidArgument)
SPAR_DEFINE_STATUS_FACTORY_(NotFound, kNotFound)
SPAR_DEFINE_STATUS_FACTORY_(AlreadyExists, kAlreadyExists)
SPAR_DEFINE_STATUS_FACTORY_(FailedPrecondition, kFailedPrecondition)
SPAR_DEFINE_STATUS_FACTORY_(ResourceExhausted, kResourceExhausted)
SPAR_DEFINE_STATUS_FACTORY_(Unavailable, kUnavailable)
SPAR_DEFINE_STATUS_FACTORY_(DeadlineExceeded, kDeadlineExceeded)
SPAR_DEFINE_STATUS_FACTORY_(Cancelled, kCancelled)
SPAR_DEFINE_STATUS_FACTORY_(DataLoss, kDataLoss)
SPAR_DEFINE_STATUS_FACTORY_(Internal, kInternal)
SPAR_DEFINE_STATUS_FACTORY_(Unimplemented, kUnimplemented)
SPAR_DEFINE_STATUS_FACTORY_(Aborted, kAborted)
SPAR_DEFINE_STATUS_FACTORY_(OutOfRange, kOutOfRange)
SPAR_DEFINE_STATUS_FACTORY_(PermissionDenied, kPermissionDenied)
#undef SPAR_DEFINE_STATUS_FACTORY_

}  // namespace spar
