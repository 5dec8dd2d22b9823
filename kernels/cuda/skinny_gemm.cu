// The few-rows GEMM (skinny_gemm.h). y^T = w . x^T on mma.sync m16n8k16: w's rows are the
// tensor core's M side (16 output features per CTA), x's rows its N side (tiles of 8).
//
// Fragments straight from global memory. A thread of the m16n8k16 A fragment holds, for its rows
// g and g + 8 (g = lane / 4, t = lane % 4), the k pairs {2t, 2t+1} and {2t+8, 2t+9}; the B fragment
// the same k pairs of its column g. Since a dot product does not care in which order k is summed,
// a 32-wide slice of k is read as 16 bytes (8 consecutive k) per thread at k = 8t and fed to two
// mma steps: the first takes k = 8t..8t+3 in the places of {2t, 2t+1, 2t+8, 2t+9}, the second
// 8t+4..8t+7. A and B use the same permutation, so each product still pairs w[n][k] with x[m][k].
// Each warp of a CTA sums a contiguous share of k; the CTA adds the warps' partial sums in shared
// memory, in a fixed order (results do not depend on timing).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/skinny_gemm.h"

namespace podserve::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerBlock = 16;  // output features (rows of w) per mma row block

// w is read once: past L1, with a 256-byte L2 prefetch hint.
__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], std::uint32_t a0, std::uint32_t a1,
                                         std::uint32_t a2, std::uint32_t a3, std::uint32_t b0,
                                         std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// kTiles tiles of 8 rows of x (m <= 8 kTiles); kRowBlocks blocks of 16 rows of w per CTA, its
// warps split between them and k (warp w: row block w % kRowBlocks, k part w / kRowBlocks).
// Several row blocks per CTA let their warps share x's loads through L1: at m = 32, x is as large
// as a 16-row block of w. kUnroll 32-wide k slices are in flight per thread.
template <int kTiles, int kRowBlocks, int kUnroll>
__global__ void __launch_bounds__(kThreads, 2) skinny_gemm_kernel(SkinnyGemmParams p) {
  constexpr int kParts = kWarps / kRowBlocks;
  // [warp][tile][feature][row of x in the tile]
  __shared__ float partial[kWarps][kTiles][kRowsPerBlock][8];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int row_block = warp % kRowBlocks, part = warp / kRowBlocks;
  const int n0 = (static_cast<int>(blockIdx.x) * kRowBlocks + row_block) * kRowsPerBlock;
  const int slices = p.k / 32;
  const int begin = slices * part / kParts, end = slices * (part + 1) / kParts;

  // Rows past n or m read row n - 1 / m - 1 (valid memory); their sums are never stored.
  const auto* w = static_cast<const __nv_bfloat16*>(p.w);
  const auto* x = static_cast<const __nv_bfloat16*>(p.x);
  const auto w_row = [&](int n) {
    return reinterpret_cast<const uint4*>(w + static_cast<std::int64_t>(min(n, p.n - 1)) * p.k) + t;
  };
  const uint4* w_lo = w_row(n0 + g);
  const uint4* w_hi = w_row(n0 + g + 8);
  const uint4* x_row[kTiles];
  bool x_real[kTiles];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const int m = 8 * j + g;
    x_real[j] = m < p.m;
    x_row[j] =
        reinterpret_cast<const uint4*>(x + static_cast<std::int64_t>(min(m, p.m - 1)) * p.k) + t;
  }

  float acc[kTiles][4] = {};
  for (int s = begin; s < end; s += kUnroll) {
    uint4 a_lo[kUnroll], a_hi[kUnroll], b[kUnroll][kTiles];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int slice = s + u;
      const bool live = slice < end;
      a_lo[u] = live ? load_streaming(w_lo + 4 * slice) : make_uint4(0, 0, 0, 0);
      a_hi[u] = live ? load_streaming(w_hi + 4 * slice) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < kTiles; ++j)
        b[u][j] = live && x_real[j] ? __ldg(x_row[j] + 4 * slice) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (s + u >= end) break;
#pragma unroll
      for (int j = 0; j < kTiles; ++j) {
        mma_bf16(acc[j], a_lo[u].x, a_hi[u].x, a_lo[u].y, a_hi[u].y, b[u][j].x, b[u][j].y);
        mma_bf16(acc[j], a_lo[u].z, a_hi[u].z, a_lo[u].w, a_hi[u].w, b[u][j].z, b[u][j].w);
      }
    }
  }

  // acc[j]: {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)} as (feature, row of x in tile j).
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    partial[warp][j][g][2 * t] = acc[j][0];
    partial[warp][j][g][2 * t + 1] = acc[j][1];
    partial[warp][j][g + 8][2 * t] = acc[j][2];
    partial[warp][j][g + 8][2 * t + 1] = acc[j][3];
  }
  __syncthreads();
  auto* y = static_cast<__nv_bfloat16*>(p.y);
  constexpr int kOutputs = kRowBlocks * kTiles * kRowsPerBlock * 8;
  for (int e = static_cast<int>(threadIdx.x); e < kOutputs; e += kThreads) {
    // e -> (row block, tile, row of x in the tile, feature): consecutive threads, consecutive n.
    const int feature = e % kRowsPerBlock, column = (e / kRowsPerBlock) % 8;
    const int j = (e / (kRowsPerBlock * 8)) % kTiles, block = e / (kRowsPerBlock * 8 * kTiles);
    const int m = 8 * j + column;
    const int n = (static_cast<int>(blockIdx.x) * kRowBlocks + block) * kRowsPerBlock + feature;
    if (m >= p.m || n >= p.n) continue;
    float sum = 0.0f;
#pragma unroll
    for (int q = 0; q < kParts; ++q) sum += partial[q * kRowBlocks + block][j][feature][column];
    __nv_bfloat16* out = y + static_cast<std::int64_t>(m) * p.n + n;
    if (p.beta != 0.0f) sum += p.beta * __bfloat162float(*out);
    *out = __float2bfloat16(sum);
  }
}

template <int kTiles, int kRowBlocks, int kUnroll>
Status launch_variant(const SkinnyGemmParams& params, cudaStream_t stream) {
  constexpr int kRows = kRowBlocks * kRowsPerBlock;
  const unsigned blocks = static_cast<unsigned>((params.n + kRows - 1) / kRows);
  // A plain launch: as a dependent launch (dependent_launch.cuh) that prefetched its first slices
  // of w while the kernel before it finished, it measured slower (B = 1 decode step 4.47 -> 5.01
  // ms on H200; its CTAs, two per SM with every register, parked early).
  skinny_gemm_kernel<kTiles, kRowBlocks, kUnroll><<<blocks, kThreads, 0, stream>>>(params);
  PODSERVE_CHECK(cudaGetLastError());
  return Status::Ok();
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

bool skinny_gemm_supports(const SkinnyGemmParams& params) {
  return params.m >= 1 && params.m <= kSkinnyGemmMaxRows && params.n >= 1 && params.k >= 32 &&
         params.k % 32 == 0 && aligned16(params.x) && aligned16(params.w) && aligned16(params.y);
}

Status launch_skinny_gemm(const SkinnyGemmParams& params, void* stream) {
  if (!skinny_gemm_supports(params)) {
    return invalid_argument("skinny GEMM: needs 1 <= m <= 32, k a multiple of 32, 16-byte rows");
  }
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  if (params.m <= 8) return launch_variant<1, 1, 8>(params, cuda_stream);
  if (params.m <= 16) return launch_variant<2, 1, 6>(params, cuda_stream);
  return launch_variant<4, 2, 4>(params, cuda_stream);
}

}  // namespace podserve::cuda
