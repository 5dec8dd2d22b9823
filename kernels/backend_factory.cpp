#include "kernels/backend_factory.h"

#include "kernels/cpu_backend.h"

#if defined(PODSERVE_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/nccl_communicator.h"
#endif

namespace podserve {

Result<std::unique_ptr<Backend>> make_backend(BackendKind kind, [[maybe_unused]] int device_index) {
  switch (kind) {
    case BackendKind::kCpu: return make_cpu_backend();
    case BackendKind::kCuda:
#if defined(PODSERVE_HAVE_CUDA)
      return make_cuda_backend(device_index);
#else
      return unimplemented("backend cuda: this build has no CUDA backend (PODSERVE_ENABLE_CUDA)");
#endif
  }
  return invalid_argument("make_backend: unknown backend kind");
}

bool cuda_device_available() {
#if defined(PODSERVE_HAVE_CUDA)
  int count = 0;
  const bool found = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  if (!found) cudaGetLastError();
  return found;
#else
  return false;
#endif
}

Status backend_supports_attention(BackendKind kind, [[maybe_unused]] int num_q_heads,
                                  [[maybe_unused]] int num_kv_heads, [[maybe_unused]] int head_dim,
                                  [[maybe_unused]] int page_size) {
  switch (kind) {
    case BackendKind::kCpu: return Status::Ok();
    case BackendKind::kCuda:
#if defined(PODSERVE_HAVE_CUDA)
      return cuda::check_attention_shape(num_q_heads, num_kv_heads, head_dim, page_size);
#else
      return unimplemented("backend cuda: this build has no CUDA backend (PODSERVE_ENABLE_CUDA)");
#endif
  }
  return invalid_argument("backend_supports_attention: unknown backend kind");
}

Result<std::size_t> device_free_memory([[maybe_unused]] const Backend& backend) {
#if defined(PODSERVE_HAVE_CUDA)
  if (const int device = cuda_backend_device(backend); device >= 0) {
    PODSERVE_ASSIGN_OR_RETURN(const CudaMemoryInfo info, cuda_device_memory(device));
    return info.free_bytes;
  }
#endif
  return unimplemented("device_free_memory: " + backend.name() + " has no device memory");
}

Result<std::vector<std::uint8_t>> make_collective_id(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu: break;
    case BackendKind::kCuda:
#if defined(PODSERVE_HAVE_CUDA)
      return make_nccl_unique_id();
#else
      return unimplemented("make_collective_id: this build has no CUDA backend");
#endif
  }
  return unimplemented("make_collective_id: the CPU backend's collectives are MPI's");
}

Result<std::unique_ptr<Communicator>> make_collective_communicator(
    [[maybe_unused]] std::span<const std::uint8_t> id, [[maybe_unused]] int size,
    [[maybe_unused]] int rank, Backend& backend) {
  switch (backend.kind()) {
    case BackendKind::kCpu: break;
    case BackendKind::kCuda:
#if defined(PODSERVE_HAVE_CUDA)
      return make_nccl_communicator(id, size, rank, backend);
#else
      return unimplemented("make_collective_communicator: this build has no CUDA backend");
#endif
  }
  return unimplemented("make_collective_communicator: the CPU backend's collectives are MPI's");
}

}  // namespace podserve
