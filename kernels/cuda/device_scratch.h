// Internal to kernels/cuda: device memory that grows on demand, for buffers whose size follows
// the batch (attention workspace and index arrays, gather rows, all-gather staging). Includes a
// CUDA header: never include it outside kernels/.
//
// Contract: reserve() keeps the buffer when it is large enough, else frees it and allocates a
// power of two (at least 4 KiB) on the current device, dropping the contents. cudaFree waits for
// the device, so queued work that still reads the old buffer finishes first. Not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "core/status.h"
#include "kernels/cuda/cuda_check.h"

namespace podserve {

class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() { cudaFree(data_); }

  // At least `bytes` (see the contract).
  Status reserve(std::size_t bytes) {
    if (bytes <= capacity_) return Status::Ok();
    cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
    std::size_t capacity = 4096;
    while (capacity < bytes) capacity *= 2;
    PODSERVE_CHECK(cudaMalloc(&data_, capacity));
    capacity_ = capacity;
    return Status::Ok();
  }
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

}  // namespace podserve
