// Chooses and constructs a Backend, and the tensor-parallel Communicator that goes with a device
// backend, by kind. The one place that knows which backends exist.
//
// Contract: make_backend() returns a ready backend or a Status saying why not. BackendKind::kCuda
// needs a build with the CUDA backend (kernels/cuda/cuda_backend.h; PODSERVE_ENABLE_CUDA), else
// kUnimplemented. cuda_device_available() (what `backend: auto` asks) is false unless that
// backend is built, else asks the CUDA runtime for a device. The CPU backend's collectives are
// MPI's (cluster/mpi_communicator.h): the collective functions here serve device backends only.
// Thread-safe; no global state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

// device_index selects the GPU for BackendKind::kCuda; the CPU backend ignores it.
Result<std::unique_ptr<Backend>> make_backend(BackendKind kind, int device_index);

// True when this build has the CUDA backend and at least one CUDA device is visible.
bool cuda_device_available();

// Whether backend `kind` runs attention for `num_q_heads` / `num_kv_heads` heads (per rank) of
// `head_dim` with KV pages of `page_size` tokens: the CUDA kernels' own shape check (the CPU
// backend takes any). `backend: auto` falls back to the CPU for a model the GPU kernels lack.
Status backend_supports_attention(BackendKind kind, int num_q_heads, int num_kv_heads, int head_dim,
                                  int page_size);

// Free bytes of device memory now on the backend's device (kUnimplemented for the CPU backend).
Result<std::size_t> device_free_memory(const Backend& backend);

// A fresh id for a group's device collectives (NCCL for kCuda), made by one rank and shared with
// the others out of band.
Result<std::vector<std::uint8_t>> make_collective_id(BackendKind kind);
// Joins the group of `size` ranks as `rank` with the id every rank received; collectives run on
// `backend`'s stream. Blocks until every rank joined.
Result<std::unique_ptr<Communicator>> make_collective_communicator(std::span<const std::uint8_t> id,
                                                                   int size, int rank,
                                                                   Backend& backend);

}  // namespace podserve
