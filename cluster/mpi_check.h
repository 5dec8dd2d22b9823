// MPI return codes as podserve Status: wrap a call as PODSERVE_MPI(MPI_Foo(...)) inside a
// function returning Status / Result<T>; a failure returns with the MPI error string, the
// expression, file and line.
#pragma once

#include <mpi.h>

#include <string>
#include <string_view>

#include "core/status.h"

namespace podserve {

struct MpiCode {
  int value;
};

inline Status check_result(MpiCode code, std::string_view expr, std::string_view file, int line) {
  if (code.value == MPI_SUCCESS) return Status::Ok();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code.value, text, &length);
  return detail::check_failure(StatusCode::kInternal, "MPI", std::string(text, length), expr, file,
                               line);
}

}  // namespace podserve

#define PODSERVE_MPI(expr) PODSERVE_CHECK(::podserve::MpiCode{expr})
