// fp32 matrix multiply for the CPU backend: y = x · wᵀ with w in Hugging Face [out, in] layout.
//
// Contract: single-threaded, blocking, no allocation. Pointers are host memory, rows dense
// (leading dimension = K for x and w, N for y); y must not alias x or w. Accumulation order is
// fixed (per output: lane-wise partial sums over K, reduced in a fixed order), so results are
// bitwise reproducible for the same shapes. Shapes are validated by the caller (CpuBackend).
#pragma once

#include <cstdint>

namespace podserve::cpu {

// x [M, K], w [N, K], y [M, N]
void matmul_f32(const float* x, const float* w, float* y, std::int64_t m, std::int64_t k,
                std::int64_t n);

}  // namespace podserve::cpu
