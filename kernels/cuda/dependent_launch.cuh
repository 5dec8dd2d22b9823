// Internal to kernels/cuda: programmatic dependent launch (sm_90). A kernel launched with
// launch_dependent() may be scheduled while the kernel before it on the stream is still running
// (its CTAs fill SMs as the other's retire, instead of after a launch gap), so a decode step's ~400
// short kernels overlap their ramp-up with the previous kernel's tail. Includes CUDA headers.
//
// Contract for a kernel launched this way: before it reads anything an earlier kernel of the
// stream wrote, or writes anything one may still read, it calls wait_for_prior_grids() (which
// returns once every earlier kernel has completed and its writes are visible); only reads of data
// no kernel writes during a forward pass (weights) may come before. It calls allow_next_grid()
// early, so that the kernel after it may launch in turn. Both are no-ops in a kernel launched
// without the attribute, so a kernel may always contain them.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/status.h"
#include "kernels/cuda/cuda_check.h"

namespace podserve::cuda {

__device__ __forceinline__ void wait_for_prior_grids() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

__device__ __forceinline__ void allow_next_grid() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization;
// an empty grid is a no-op. Captured into CUDA graphs as a programmatic dependency.
template <typename... Params, typename... Args>
Status launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                        cudaStream_t stream, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return Status::Ok();
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  PODSERVE_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
  return Status::Ok();
}

}  // namespace podserve::cuda
