// Internal to kernels/cuda: a GEMM for few rows (decode steps), y [m, n] = x [m, k] . w [n, k]^T
// + beta * y, bf16 in and out, fp32 accumulation (kernels/cuda/skinny_gemm.cu). At m <= 32 the
// work is reading w once; this kernel streams w with 16-byte loads, several in flight per thread,
// straight into tensor-core fragments (no shared-memory staging), each CTA reducing 16 rows of w
// over all of k. The GEMM tuner (gemm_tuner.h) times it beside cuBLASLt's candidates per shape
// and keeps the faster. (Fusing the RMSNorm or SiLU before it into its loads was tried and
// measured slower: every one of the n / 16 CTAs would redo the row's normalisation or activation,
// 256-384 times the work of the kernel it replaces.) Includes no CUDA header; pointers are device
// memory of the current device.
#pragma once

#include <cstdint>

#include "core/status.h"

namespace podserve::cuda {

struct SkinnyGemmParams {
  const void* x = nullptr;  // [m, k] bf16, row-major, rows k apart
  const void* w = nullptr;  // [n, k] bf16, row-major (Hugging Face [out, in])
  void* y = nullptr;        // [m, n] bf16, row-major; read too when beta != 0
  std::int32_t m = 0, n = 0, k = 0;
  float beta = 0.0f;
};

inline constexpr std::int32_t kSkinnyGemmMaxRows = 32;

// Whether the kernel runs this shape: 1 <= m <= kSkinnyGemmMaxRows, k a multiple of 32, n >= 1,
// and x, w, y 16-byte aligned.
bool skinny_gemm_supports(const SkinnyGemmParams& params);

// Launches on `stream` (a cudaStream_t); kInvalidArgument for a shape it does not support.
Status launch_skinny_gemm(const SkinnyGemmParams& params, void* stream);

}  // namespace podserve::cuda
