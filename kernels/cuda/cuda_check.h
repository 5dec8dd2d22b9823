// Internal to kernels/cuda: the CUDA overload of check_result, so PODSERVE_CHECK works on
// cudaError_t and cublasStatus_t-free code. Includes CUDA headers: never include it outside
// kernels/. kvtransfer/cuda_check.h holds the same overload, token for token (kvtransfer may not
// depend on kernels/, and core/ holds no CUDA header); keep the two identical.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <string_view>

#include "core/status.h"

namespace podserve {

inline Status check_result(cudaError_t error, std::string_view expr, std::string_view file,
                           int line) {
  if (error == cudaSuccess) return Status::Ok();
  // Reported here, so clear the thread's last-error record (a no-op for sticky errors): a later
  // launch check reads cudaGetLastError() and would otherwise blame its launch for this call.
  cudaGetLastError();
  const std::string detail =
      std::string(cudaGetErrorName(error)) + " (" + cudaGetErrorString(error) + ")";
  return detail::check_failure(StatusCode::kInternal, "CUDA", detail, expr, file, line);
}

}  // namespace podserve
