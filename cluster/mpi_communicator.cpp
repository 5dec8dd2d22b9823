#include "cluster/mpi_communicator.h"

#include <fmt/format.h>

#include <cstring>

#include "cluster/mpi_check.h"

namespace podserve {

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

Status MpiCommunicator::all_reduce_sum(const TensorView& data) {
  if (data.dtype != DType::kF32) {
    return invalid_argument(
        fmt::format("MPI all_reduce_sum: dtype {} (fp32 only)", to_string(data.dtype)));
  }
  if (size_ == 1) return Status::Ok();
  PODSERVE_MPI(MPI_Allreduce(MPI_IN_PLACE, data.data, static_cast<int>(data.numel()), MPI_FLOAT,
                             MPI_SUM, comm_));
  return Status::Ok();
}

Status MpiCommunicator::all_gather_last_dim(const TensorView& send, const TensorView& recv) {
  if (send.dtype != DType::kF32 || recv.dtype != DType::kF32 || send.ndim != 2 || recv.ndim != 2 ||
      recv.shape[0] != send.shape[0] || recv.shape[1] != send.shape[1] * size_) {
    return invalid_argument(
        "MPI all_gather_last_dim: expected fp32 send [rows, cols] and recv "
        "[rows, size * cols]");
  }
  const auto rows = send.shape[0], cols = send.shape[1];
  const auto count = static_cast<std::size_t>(rows * cols);
  gather_scratch_.resize(count * size_);
  PODSERVE_MPI(MPI_Allgather(send.data, static_cast<int>(count), MPI_FLOAT, gather_scratch_.data(),
                             static_cast<int>(count), MPI_FLOAT, comm_));
  auto* out = recv.as<float>();
  for (int r = 0; r < size_; ++r) {
    for (std::int64_t row = 0; row < rows; ++row) {
      std::memcpy(out + row * cols * size_ + r * cols,
                  gather_scratch_.data() + r * count + row * cols, cols * sizeof(float));
    }
  }
  return Status::Ok();
}

}  // namespace podserve
