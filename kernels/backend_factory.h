// Chooses and constructs a Backend by kind. The one place that knows which backends exist.
//
// Contract: make_backend() returns a ready backend or a Status saying why not. BackendKind::kCuda
// gives kUnimplemented until a CUDA backend exists: once podserve_kernels is built with
// PODSERVE_HAVE_CUDA and kernels/cuda/cuda_backend.h declares
// `Result<std::unique_ptr<Backend>> make_cuda_backend(int device_index)`, the factory forwards
// to it. cuda_device_available() (what `backend: auto` asks) is false unless that backend is
// built, else asks the CUDA runtime for a device.
// Thread-safe; no global state.
#pragma once

#include <memory>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

// device_index selects the GPU for BackendKind::kCuda; the CPU backend ignores it.
Result<std::unique_ptr<Backend>> make_backend(BackendKind kind, int device_index);

// True when this build has the CUDA backend and at least one CUDA device is visible.
bool cuda_device_available();

}  // namespace podserve
