#include "core/status.h"

#include <fmt/format.h>

namespace podserve {

std::string_view to_string(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", podserve::to_string(code_), message_);
}

namespace detail {
Status check_failure(StatusCode code, std::string_view library, std::string_view detail,
                     std::string_view expr, std::string_view file, int line) {
  return {code, fmt::format("{} error {} in `{}` at {}:{}", library, detail, expr, file, line)};
}
}  // namespace detail

}  // namespace podserve
