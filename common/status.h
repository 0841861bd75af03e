// spar/common/status.h — the error type every boundary in spar returns.
//
// Model code may throw (LibTorch does); anything that crosses a boundary
// (an RPC handler, a bus message, a storage call, a file loader) returns a
// Status or a Result<T> and the caller checks it. Both are [[nodiscard]]:
// dropping one on the floor takes an explicit, greppable `.IgnoreError()`.
//
// Thread safety: Status and Result are values; a const instance may be read
// from any number of threads.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace spar {

// Codes follow the gRPC canonical codes so the one mapping to grpc::Status
// (services/common/grpc_status.h) is a table, not a judgement call.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// Lower-case name of a code, e.g. "invalid_argument".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "invalid_argument: temperature must be >= 0, got -1" (or "ok").
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(std::string_view context) const;

  // The one sanctioned way to drop an error on purpose.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Factories, named after the codes.
Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status AlreadyExists(std::string message);
Status FailedPrecondition(std::string message);
Status ResourceExhausted(std::string message);
Status Unavailable(std::string message);
Status DeadlineExceeded(std::string message);
Status Cancelled(std::string message);
Status DataLoss(std::string message);
Status Internal(std::string message);
Status Unimplemented(std::string message);
Status Aborted(std::string message);
Status OutOfRange(std::string message);
Status PermissionDenied(std::string message);

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "Result constructed from an OK status");
    if (status_.ok()) status_ = Internal("Result constructed from an OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  // Precondition: ok(). Accessing the value of an error is a programming bug.
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  void IgnoreError() const {}

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace spar

#define SPAR_STATUS_CONCAT_INNER_(a, b) a##b
#define SPAR_STATUS_CONCAT_(a, b) SPAR_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define SPAR_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::spar::Status spar_status_tmp_ = (expr);      \
    if (!spar_status_tmp_.ok()) return spar_status_tmp_; \
  } while (0)

// `SPAR_ASSIGN_OR_RETURN(auto x, MakeX());` — binds the value or returns the
// error of a Result<T>.
#define SPAR_ASSIGN_OR_RETURN(lhs, expr) \
  SPAR_ASSIGN_OR_RETURN_IMPL_(SPAR_STATUS_CONCAT_(spar_result_, __LINE__), lhs, expr)
#define SPAR_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()
