#include "kernels/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_scratch.h"
#include "kernels/tensor_checks.h"

namespace podserve {

// The NCCL overload of check_result (kvtransfer/nccl_transport.cpp holds the same one: kvtransfer
// may not depend on kernels/).
inline Status check_result(ncclResult_t result, std::string_view expr, std::string_view file,
                           int line) {
  if (result == ncclSuccess || result == ncclInProgress) return Status::Ok();
  return detail::check_failure(StatusCode::kInternal, "NCCL", ncclGetErrorString(result), expr,
                               file, line);
}

namespace {

Result<ncclDataType_t> nccl_type(std::string_view op, DType dtype) {
  switch (dtype) {
    case DType::kBF16: return ncclBfloat16;
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kI32: break;
  }
  return invalid_argument(
      fmt::format("{}: dtype {} (bf16, fp16 or fp32 only)", op, to_string(dtype)));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(int size, int rank, int device, cudaStream_t stream)
      : size_(size), rank_(rank), device_(device), stream_(stream) {}

  ~NcclCommunicator() override {
    if (cudaSetDevice(device_) != cudaSuccess) return;
    cudaStreamSynchronize(stream_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }

  Status init(const ncclUniqueId& id) {
    PODSERVE_CHECK(cudaSetDevice(device_));
    PODSERVE_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    return Status::Ok();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Status all_reduce_sum(const TensorView& data) override {
    PODSERVE_ASSIGN_OR_RETURN(const ncclDataType_t type, nccl_type("all_reduce_sum", data.dtype));
    if (size_ == 1 || data.numel() == 0) return Status::Ok();
    PODSERVE_CHECK(cudaSetDevice(device_));
    PODSERVE_CHECK(ncclAllReduce(data.data, data.data, static_cast<std::size_t>(data.numel()), type,
                                 ncclSum, comm_, stream_));
    return Status::Ok();
  }

  Status all_gather_last_dim(const TensorView& send, const TensorView& recv) override {
    constexpr std::string_view op = "all_gather_last_dim";
    PODSERVE_ASSIGN_OR_RETURN(const ncclDataType_t type, nccl_type(op, send.dtype));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "send", send, send.dtype, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "recv", recv, send.dtype, 2));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "recv", recv, 0, send.shape[0], "send.shape[0]"));
    PODSERVE_RETURN_IF_ERROR(
        check_dim(op, "recv", recv, 1, send.shape[1] * size_, "size * send.shape[1]"));
    const std::int64_t rows = send.shape[0], cols = send.shape[1];
    const std::size_t element = dtype_size(send.dtype);
    const std::size_t bytes = static_cast<std::size_t>(rows * cols) * element;
    if (bytes == 0) return Status::Ok();
    PODSERVE_CHECK(cudaSetDevice(device_));
    PODSERVE_RETURN_IF_ERROR(scratch_.reserve(bytes * size_));
    // scratch [size, rows, cols] -> recv [rows, size * cols]: one strided copy per rank's block.
    PODSERVE_CHECK(ncclAllGather(send.data, scratch_.data(), static_cast<std::size_t>(rows * cols),
                                 type, comm_, stream_));
    for (int r = 0; r < size_; ++r) {
      PODSERVE_CHECK(cudaMemcpy2DAsync(
          static_cast<char*>(recv.data) + r * cols * element, size_ * cols * element,
          static_cast<const char*>(scratch_.data()) + r * bytes, cols * element, cols * element,
          static_cast<std::size_t>(rows), cudaMemcpyDeviceToDevice, stream_));
    }
    return Status::Ok();
  }

 private:
  int size_;
  int rank_;
  int device_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
  DeviceScratch scratch_;  // all_gather_last_dim: [size, rows, cols]
};

}  // namespace

Result<std::vector<std::uint8_t>> make_nccl_unique_id() {
  ncclUniqueId id;
  PODSERVE_CHECK(ncclGetUniqueId(&id));
  return std::vector<std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(id.internal),
      reinterpret_cast<const std::uint8_t*>(id.internal) + sizeof(id.internal));
}

Result<std::unique_ptr<Communicator>> make_nccl_communicator(
    std::span<const std::uint8_t> unique_id, int size, int rank, Backend& backend) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return invalid_argument(fmt::format("NCCL communicator: the unique id must be {} bytes, got {}",
                                        sizeof(id.internal), unique_id.size()));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return invalid_argument(fmt::format("NCCL communicator: rank {} of {}", rank, size));
  }
  void* stream = cuda_backend_stream(backend);
  if (stream == nullptr) {
    return invalid_argument("NCCL communicator: needs a CUDA backend, got " + backend.name());
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  // NVLink multicast stays off unless the environment says otherwise (the shared GPU machines
  // require it off; tensor-parallel sizes here do not need it).
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  auto communicator = std::make_unique<NcclCommunicator>(size, rank, cuda_backend_device(backend),
                                                         static_cast<cudaStream_t>(stream));
  PODSERVE_RETURN_IF_ERROR(communicator->init(id));
  return std::unique_ptr<Communicator>(std::move(communicator));
}

}  // namespace podserve
