// UCX status codes as podserve Status: PODSERVE_CHECK(ucp_foo(...)) inside a function returning
// Status / Result<T> returns on failure with UCX's status string, the expression, file and line.
// For ucs_status_ptr_t results use ucx_pointer_status() first.
#pragma once

#include <ucs/type/status.h>

#include <string_view>

#include "core/status.h"

namespace podserve {

inline Status check_result(ucs_status_t status, std::string_view expr, std::string_view file,
                           int line) {
  if (status == UCS_OK) return Status::Ok();
  StatusCode code = StatusCode::kInternal;
  switch (status) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT: code = StatusCode::kResourceExhausted; break;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR: code = StatusCode::kInvalidArgument; break;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED: code = StatusCode::kUnimplemented; break;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED: code = StatusCode::kUnavailable; break;
    case UCS_ERR_TIMED_OUT: code = StatusCode::kDeadlineExceeded; break;
    case UCS_ERR_CANCELED: code = StatusCode::kCancelled; break;
    default: break;
  }
  return detail::check_failure(code, "UCX", ucs_status_string(status), expr, file, line);
}

// The status carried by a ucs_status_ptr_t: UCS_OK for NULL (done), UCS_INPROGRESS for a request.
inline ucs_status_t ucx_pointer_status(ucs_status_ptr_t pointer) {
  if (pointer == nullptr) return UCS_OK;
  return UCS_PTR_IS_ERR(pointer) ? UCS_PTR_STATUS(pointer) : UCS_INPROGRESS;
}

}  // namespace podserve
