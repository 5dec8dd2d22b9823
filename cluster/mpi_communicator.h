// Tensor-parallel collectives over MPI for the CPU backend (tensors live in host memory).
// Blocking; every rank of the instance communicator calls in the same order. Not thread-safe:
// one forward pass at a time per rank. The communicator is borrowed, not owned.
#pragma once

#include <mpi.h>

#include <vector>

#include "core/backend.h"

namespace podserve {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status all_reduce_sum(const TensorView& data) override;
  Status all_gather_last_dim(const TensorView& send, const TensorView& recv) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<float> gather_scratch_;  // [size, rows, cols]
};

}  // namespace podserve
