// Status and Result<T>: how errors travel inside the podserve libraries.
//
// Contract: functions that can fail return Status or Result<T>; exceptions appear only at the
// edges (config load, HTTP handlers, main). The function that first sees an error logs it (or
// attaches file:line through PODSERVE_CHECK) and returns it; callers propagate with
// PODSERVE_RETURN_IF_ERROR / PODSERVE_ASSIGN_OR_RETURN. Status is a value type, cheap to move.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace podserve {

enum class StatusCode : std::uint8_t {
  kOk,
  kInvalidArgument,
  kNotFound,
  kOutOfRange,
  kResourceExhausted,
  kUnavailable,
  kDeadlineExceeded,
  kCancelled,
  kUnimplemented,
  kInternal,
};

std::string_view to_string(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message", for logs and error bodies.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string msg) {
  return {StatusCode::kInvalidArgument, std::move(msg)};
}
inline Status not_found(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
inline Status out_of_range(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
inline Status resource_exhausted(std::string msg) {
  return {StatusCode::kResourceExhausted, std::move(msg)};
}
inline Status unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
inline Status deadline_exceeded(std::string msg) {
  return {StatusCode::kDeadlineExceeded, std::move(msg)};
}
inline Status cancelled(std::string msg) { return {StatusCode::kCancelled, std::move(msg)}; }
inline Status unimplemented(std::string msg) {
  return {StatusCode::kUnimplemented, std::move(msg)};
}
inline Status internal_error(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

// A value or the Status that explains its absence.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : state_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(state_);
  }
  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

namespace detail {
// Builds the Status for a failed check: "<lib> error <detail> in `expr` at file:line".
Status check_failure(StatusCode code, std::string_view library, std::string_view detail,
                     std::string_view expr, std::string_view file, int line);
}  // namespace detail

// check_result overloads turn a library's return code into a Status. Each library folder that
// wraps a foreign API (MPI, UCX, CUDA, NCCL) adds an overload for its code type next to its
// wrapper, so PODSERVE_CHECK works for all of them.
inline Status check_result(Status status, std::string_view, std::string_view, int) {
  return status;
}

}  // namespace podserve

#define PODSERVE_CONCAT_INNER(a, b) a##b
#define PODSERVE_CONCAT(a, b) PODSERVE_CONCAT_INNER(a, b)

// Evaluates `expr` (a Status or a foreign return code with a check_result overload) and returns
// the Status from the enclosing function when it failed, with the expression, file and line.
#define PODSERVE_CHECK(expr)                                         \
  do {                                                               \
    ::podserve::Status podserve_check_status_ =                      \
        ::podserve::check_result((expr), #expr, __FILE__, __LINE__); \
    if (!podserve_check_status_.ok()) return podserve_check_status_; \
  } while (false)

#define PODSERVE_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::podserve::Status podserve_status_ = (expr);        \
    if (!podserve_status_.ok()) return podserve_status_; \
  } while (false)

#define PODSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

#define PODSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  PODSERVE_ASSIGN_OR_RETURN_IMPL(PODSERVE_CONCAT(podserve_result_, __LINE__), lhs, expr)
