// GPU test helper shared by the kvtransfer CUDA tests: cudaMalloc'd bytes on one device, filled
// from and read back to host vectors (gtest expectations on every CUDA call).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace podserve::testing {

class DeviceBytes {
 public:
  DeviceBytes(int device, std::span<const std::uint8_t> contents)
      : device_(device), bytes_(contents.size()) {
    EXPECT_EQ(cudaSetDevice(device_), cudaSuccess);
    EXPECT_EQ(cudaMalloc(&data_, bytes_), cudaSuccess);
    upload(contents);
  }
  ~DeviceBytes() {
    cudaSetDevice(device_);
    cudaFree(data_);
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return bytes_; }
  void upload(std::span<const std::uint8_t> contents) {
    ASSERT_EQ(contents.size(), bytes_);
    EXPECT_EQ(cudaSetDevice(device_), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(data_, contents.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<std::uint8_t> download() const {
    std::vector<std::uint8_t> out(bytes_);
    EXPECT_EQ(cudaSetDevice(device_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), data_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  int device_;
  std::size_t bytes_;
  void* data_ = nullptr;
};

}  // namespace podserve::testing
