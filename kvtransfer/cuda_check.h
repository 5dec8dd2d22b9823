// Internal to kvtransfer's CUDA sources (nccl_transport.cpp, host_staged_transport.cpp,
// page_gather.cu): the cudaError_t overload of check_result, so PODSERVE_CHECK works on CUDA
// runtime calls, and a scope that makes a device current. Includes a CUDA header, so no public
// header may include it (STYLE 1: streams and events cross the public headers as void*). The
// overload is kernels/cuda/cuda_check.h's, token for token (kvtransfer may not depend on kernels/);
// keep the two identical.
#pragma once

#include <cuda_runtime.h>

#include <memory>
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

// Owning handles of CUDA events and streams (destroyed with cudaEventDestroy / cudaStreamDestroy).
struct CudaEventDestroy {
  void operator()(CUevent_st* event) const { cudaEventDestroy(event); }
};
using CudaEventPtr = std::unique_ptr<CUevent_st, CudaEventDestroy>;
struct CudaStreamDestroy {
  void operator()(CUstream_st* stream) const { cudaStreamDestroy(stream); }
};
using CudaStreamPtr = std::unique_ptr<CUstream_st, CudaStreamDestroy>;

// An event without timing (the cheap kind, for completion and ordering) on the current device.
inline Result<CudaEventPtr> make_cuda_event() {
  cudaEvent_t event = nullptr;
  PODSERVE_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return CudaEventPtr(event);
}

// A non-blocking stream on the current device.
inline Result<CudaStreamPtr> make_cuda_stream() {
  cudaStream_t stream = nullptr;
  PODSERVE_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return CudaStreamPtr(stream);
}

// Makes a device current until destruction, then restores the one that was current before.
// The restore's error is dropped: a destructor cannot report it, and the next CUDA call will.
class CudaDeviceScope {
 public:
  CudaDeviceScope() = default;
  ~CudaDeviceScope() {
    if (entered_) cudaSetDevice(previous_);
  }
  CudaDeviceScope(const CudaDeviceScope&) = delete;
  CudaDeviceScope& operator=(const CudaDeviceScope&) = delete;

  Status enter(int device) {
    if (!entered_) PODSERVE_CHECK(cudaGetDevice(&previous_));
    PODSERVE_CHECK(cudaSetDevice(device));
    entered_ = true;
    return Status::Ok();
  }

 private:
  int previous_ = 0;
  bool entered_ = false;
};

}  // namespace podserve
