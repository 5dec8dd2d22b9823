// The tensor-parallel group of one rank (TP 1) on a host-memory backend: all_reduce_sum is the
// identity and all_gather_last_dim a copy of send into recv (host memcpy). LlamaModel makes no
// collective call with one rank, so a device backend at TP 1 may use it too. Stateless and
// thread-safe.
#pragma once

#include <cstring>

#include "core/backend.h"

namespace podserve {

class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status all_reduce_sum(const TensorView&) override { return Status::Ok(); }
  Status all_gather_last_dim(const TensorView& send, const TensorView& recv) override {
    if (send.bytes() != recv.bytes()) return invalid_argument("all_gather: size mismatch");
    std::memcpy(recv.data, send.data, send.bytes());
    return Status::Ok();
  }
};

}  // namespace podserve
