// The CPU backend: every op of core/backend.h in fp32 on host memory.
//
// Contract:
// - compute_dtype() is kF32. Float tensors must be fp32 and index tensors (ids, positions,
//   slots) int32; any other dtype, any shape mismatch and any out-of-range index is rejected
//   with a Status naming the op, before anything is written.
// - Single-threaded and blocking: every op has finished when it returns (synchronize() is a
//   no-op). Several MPI ranks share a few cores, so no op spawns threads.
// - "Device" memory is 64-byte-aligned host memory; allocate() leaves it uninitialized and the
//   DeviceBuffer frees it. Outputs must not alias inputs, except where backend.h allows it
//   (add: out may alias a or b; rms_norm: out may alias x).
// - attention() supports AttentionKind::kCpu only; kPod, kSerial and kStreams return
//   kUnimplemented because they need the CUDA backend.
// - A backend object holds scratch memory for attention, so it is used by one thread at a time.
#pragma once

#include <memory>

#include "core/backend.h"

namespace podserve {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace podserve
