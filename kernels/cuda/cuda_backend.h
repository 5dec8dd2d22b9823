// The CUDA backend: every op of core/backend.h in bf16 on one NVIDIA GPU (sm_90a), with fp32
// accumulation; attention is the hybrid-batch POD kernel or its serial / two-stream baselines
// (kernels/cuda/attention_cuda.h).
//
// Contract:
// - compute_dtype() is kBF16; upload_f32 rounds to nearest even (NaN stays NaN). Float tensors
//   must be bf16 and index tensors (ids, positions,
//   slots) int32; a wrong dtype or shape is rejected with a Status naming the op, before
//   anything is launched. Index values live on the device and are not range-checked there
//   (that would cost a synchronization per op): the model validates token ids, positions and
//   page tables on the host before a forward pass (LlamaModel::validate_plan).
// - Ops are asynchronous on the backend's own stream, in call order; copy_to_host() and
//   synchronize() wait for the stream. copy_to_device() may return before the copy has landed
//   but never reads the host buffer after it returns.
// - attention() takes AttentionKind kPod, kSerial or kStreams (kCpu is kInvalidArgument), head
//   dim 64 or 128, page size 16, Hq / Hkv <= 16. Sequences with one new token are decodes, the
//   others prefill chunks, in any order. The plan is rebuilt only when the batch changes (one
//   forward pass calls attention once per layer with the same batch).
// - Outputs must not alias inputs, except add (out may alias a or b) and rms_norm (out may
//   alias x).
// - One thread at a time per backend object; the backend owns its stream, cuBLAS handle and
//   scratch memory, and sets its device current in every call.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

// A backend on CUDA device `device_index` (kUnavailable when there is no such device).
Result<std::unique_ptr<Backend>> make_cuda_backend(int device_index);

// The stream a CUDA backend's ops run on (a cudaStream_t as void*); nullptr for other backends.
void* cuda_backend_stream(Backend& backend);
// The CUDA device of a CUDA backend; -1 for other backends.
int cuda_backend_device(const Backend& backend);
// The GEMM tuner's choices so far (kernels/cuda/gemm_tuner.h), one line per shape: what runs it
// and every candidate's time; empty for other backends.
std::vector<std::string> cuda_gemm_tuning_report(const Backend& backend);

struct CudaMemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};
// Free and total memory of CUDA device `device_index` now (the thread's current device is
// restored).
Result<CudaMemoryInfo> cuda_device_memory(int device_index);

}  // namespace podserve
