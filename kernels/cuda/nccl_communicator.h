// Tensor-parallel collectives over NCCL for the CUDA backend: one communicator per instance, one
// rank per GPU. Collectives are enqueued on the backend's stream (in order with its ops) and
// return without waiting; the caller's next op on the backend sees the result.
//
// Contract:
// - Every rank of the group calls create (collective: blocks until all joined) with the same
//   unique id, made by one rank with make_nccl_unique_id() and shared out of band (the cluster
//   uses MPI), then the collectives in the same order.
// - Tensors are bf16, fp16 or fp32 device memory of the backend given at creation.
// - all_gather_last_dim uses scratch memory owned by the communicator ([size, rows, cols]), and
//   a transpose kernel into recv [rows, size * cols].
// - NVLink multicast (NVLS) is never needed: create() sets NCCL_NVLS_ENABLE=0 unless the
//   environment already sets it (the shared GPU machines require it off).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

// A fresh ncclUniqueId as bytes.
Result<std::vector<std::uint8_t>> make_nccl_unique_id();

// Joins the group of `size` ranks as `rank`, on the device and stream of `backend` (a CUDA
// backend: make_cuda_backend).
Result<std::unique_ptr<Communicator>> make_nccl_communicator(
    std::span<const std::uint8_t> unique_id, int size, int rank, Backend& backend);

}  // namespace podserve
