#include "kernels/backend_factory.h"

#include "kernels/cpu_backend.h"

#if defined(PODSERVE_HAVE_CUDA)
#include <cuda_runtime_api.h>
#if __has_include("kernels/cuda/cuda_backend.h")
#include "kernels/cuda/cuda_backend.h"
#define PODSERVE_FACTORY_HAS_CUDA_BACKEND 1
#endif
#endif

namespace podserve {

Result<std::unique_ptr<Backend>> make_backend(BackendKind kind, [[maybe_unused]] int device_index) {
  switch (kind) {
    case BackendKind::kCpu: return make_cpu_backend();
    case BackendKind::kCuda:
#if defined(PODSERVE_FACTORY_HAS_CUDA_BACKEND)
      return make_cuda_backend(device_index);
#else
      return unimplemented("the CUDA backend for the service is not built yet");
#endif
  }
  return invalid_argument("make_backend: unknown backend kind");
}

bool cuda_device_available() {
#if defined(PODSERVE_FACTORY_HAS_CUDA_BACKEND)
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
#else
  return false;
#endif
}

}  // namespace podserve
