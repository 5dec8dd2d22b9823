#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/dependent_launch.cuh"

namespace podserve::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;
constexpr std::int64_t kMaxGridBlocks = 65535 * 8;  // grid-stride loops cap their grid here

// Every launch goes through here: an empty grid is a no-op, the launch error is checked. Each
// kernel is a dependent launch (dependent_launch.cuh) and begins with after_prior_grids().
template <typename Kernel, typename... Args>
Status launch(Kernel kernel, std::int64_t blocks, int threads, cudaStream_t stream, Args... args) {
  if (blocks <= 0) return Status::Ok();
  return launch_dependent(kernel, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream,
                          args...);
}

// The first statement of every kernel here: they read only what earlier kernels wrote.
__device__ __forceinline__ void after_prior_grids() {
  wait_for_prior_grids();
  allow_next_grid();
}

std::int64_t grid_for(std::int64_t n) {
  return std::min<std::int64_t>((n + kThreads - 1) / kThreads, kMaxGridBlocks);
}

// ---- kernels (bf16 storage, fp32 math) ----

// out[t, :] = table[ids[t], :].  table [vocab, hidden]; ids [T]; out [T, hidden]
__global__ void embedding_kernel(const bf16* table, const std::int32_t* ids, bf16* out,
                                 std::int64_t hidden) {
  after_prior_grids();
  const std::int64_t t = blockIdx.x;
  const bf16* row = table + static_cast<std::int64_t>(ids[t]) * hidden;
  for (std::int64_t c = threadIdx.x; c < hidden; c += blockDim.x) out[t * hidden + c] = row[c];
}

// Sum over the block of one value per thread (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float value) {
  __shared__ float warp_sums[32];
  for (int offset = 16; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x) / 32;
  value = lane < warps ? warp_sums[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;  // every thread holds the total
}

// One block per row: out = x / rms(x) * weight (out may alias x: each element is read before the
// same thread writes it).  x, out [M, D]; weight [D]
__global__ void rms_norm_kernel(const bf16* x, const bf16* weight, bf16* out, std::int64_t dim,
                                float eps) {
  after_prior_grids();
  const bf16* in = x + blockIdx.x * dim;
  bf16* dst = out + blockIdx.x * dim;
  float sum_sq = 0.0f;
  for (std::int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    const float v = __bfloat162float(in[c]);
    sum_sq += v * v;
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(dim) + eps);
  for (std::int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    dst[c] = __float2bfloat16(__bfloat162float(in[c]) * inv_rms * __bfloat162float(weight[c]));
  }
}

// One block per row, one 16-byte chunk (8 values) per thread kept in registers: a single read of
// the row (dim a multiple of 8, at most 8 x blockDim.x).  x, out [M, D]; weight [D]
__global__ void rms_norm_chunked_kernel(const bf16* x, const bf16* weight, bf16* out,
                                        std::int64_t dim, float eps) {
  after_prior_grids();
  const std::int64_t c = static_cast<std::int64_t>(threadIdx.x) * 8;
  const bool mine = c < dim;
  float v[8] = {};
  if (mine) {
    const uint4 packed = *reinterpret_cast<const uint4*>(x + blockIdx.x * dim + c);
    const auto* pair = reinterpret_cast<const __nv_bfloat162*>(&packed);
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(pair[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  }
  float sum_sq = 0.0f;
  for (int i = 0; i < 8; ++i) sum_sq += v[i] * v[i];
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(dim) + eps);
  if (!mine) return;
  const uint4 w_packed = *reinterpret_cast<const uint4*>(weight + c);
  const auto* w_pair = reinterpret_cast<const __nv_bfloat162*>(&w_packed);
  uint4 result;
  auto* out_pair = reinterpret_cast<__nv_bfloat162*>(&result);
  for (int i = 0; i < 4; ++i) {
    const float2 w = __bfloat1622float2(w_pair[i]);
    out_pair[i] = __floats2bfloat162_rn(v[2 * i] * inv_rms * w.x, v[2 * i + 1] * inv_rms * w.y);
  }
  *reinterpret_cast<uint4*>(out + blockIdx.x * dim + c) = result;
}

__global__ void add_kernel(const bf16* a, const bf16* b, bf16* out, std::int64_t n) {
  after_prior_grids();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
  }
}

// out = silu(gate) * up with gate, up the two halves of each gate_up row.
// gate_up [M, 2F]; out [M, F]; n = M * F
__global__ void silu_mul_kernel(const bf16* gate_up, bf16* out, std::int64_t n, std::int64_t f) {
  after_prior_grids();
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / f, col = i % f;
    const float g = __bfloat162float(gate_up[row * 2 * f + col]);
    const float u = __bfloat162float(gate_up[row * 2 * f + f + col]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  }
}

// cos and sin of position * f_i for i < D/2, f_i = inv_freq[i] when given (scaled RoPE), else
// theta^(-2i/D), into shared arrays, once per token for all
// its heads. Angles in double, as the CPU backend computes them (positions reach tens of
// thousands of radians). Ends with a barrier.
__device__ void rope_table(double position, int dim, double theta, const float* inv_freq,
                           float* cos_s, float* sin_s) {
  for (int i = static_cast<int>(threadIdx.x); i < dim / 2; i += static_cast<int>(blockDim.x)) {
    const double frequency =
        inv_freq != nullptr ? static_cast<double>(inv_freq[i]) : pow(theta, -2.0 * i / dim);
    double sin_angle = 0.0, cos_angle = 0.0;
    sincos(position * frequency, &sin_angle, &cos_angle);
    cos_s[i] = static_cast<float>(cos_angle);
    sin_s[i] = static_cast<float>(sin_angle);
  }
  __syncthreads();
}

// silu_mul_kernel over 16-byte chunks: n8 = M * F / 8 chunks, F a multiple of 8.
__global__ void silu_mul_chunked_kernel(const bf16* gate_up, bf16* out, std::int64_t n8,
                                        std::int64_t f) {
  after_prior_grids();
  const std::int64_t f8 = f / 8;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n8;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / f8, col = (i % f8) * 8;
    const uint4 g4 = *reinterpret_cast<const uint4*>(gate_up + row * 2 * f + col);
    const uint4 u4 = *reinterpret_cast<const uint4*>(gate_up + row * 2 * f + f + col);
    const auto* g2 = reinterpret_cast<const __nv_bfloat162*>(&g4);
    const auto* u2 = reinterpret_cast<const __nv_bfloat162*>(&u4);
    uint4 result;
    auto* r2 = reinterpret_cast<__nv_bfloat162*>(&result);
    for (int j = 0; j < 4; ++j) {
      const float2 g = __bfloat1622float2(g2[j]);
      const float2 u = __bfloat1622float2(u2[j]);
      r2[j] =
          __floats2bfloat162_rn(g.x / (1.0f + expf(-g.x)) * u.x, g.y / (1.0f + expf(-g.y)) * u.y);
    }
    *reinterpret_cast<uint4*>(out + row * f + col) = result;
  }
}

// Rotate-half of one (x0, x1) pair by (c, s).
__device__ __forceinline__ void rotate_pair(bf16* dst0, bf16* dst1, float x0, float x1, float c,
                                            float s) {
  *dst0 = __float2bfloat16(x0 * c - x1 * s);
  *dst1 = __float2bfloat16(x1 * c + x0 * s);
}

constexpr int kMaxRopeHalf = 256;  // head dims up to 512

constexpr int kRopeHeadsPerBlock = 4;  // q and k heads of one token per block of rope_append

// One block per (token, group of kRopeHeadsPerBlock of its q and k heads): q heads rotated into
// q_out, k heads rotated and the matching v heads copied into the token's cache slot (none for
// slot -1). Several blocks per token keep a decode step's few tokens from running one long loop.
// qkv [T, (Hq + 2 Hkv) * D]; q_out [T, Hq, D]; cache [num_pages, 2, page_size, Hkv * D]
__global__ void rope_append_kernel(const bf16* __restrict__ qkv,
                                   const std::int32_t* __restrict__ positions,
                                   const std::int32_t* __restrict__ slots, bf16* __restrict__ cache,
                                   bf16* __restrict__ q_out, int num_q_heads, int num_kv_heads,
                                   int dim, int page_size, double theta,
                                   const float* __restrict__ inv_freq) {
  after_prior_grids();
  const int groups = (num_q_heads + num_kv_heads + kRopeHeadsPerBlock - 1) / kRopeHeadsPerBlock;
  const std::int64_t t = blockIdx.x / groups;
  const int first_head = static_cast<int>(blockIdx.x % groups) * kRopeHeadsPerBlock;
  const int end_head = min(first_head + kRopeHeadsPerBlock, num_q_heads + num_kv_heads);
  const int half = dim / 2;
  const std::int64_t kv_row = static_cast<std::int64_t>(num_kv_heads) * dim;
  const bf16* row = qkv + t * (static_cast<std::int64_t>(num_q_heads) * dim + 2 * kv_row);
  const int slot = slots[t];
  bf16* k_dst = nullptr;
  if (slot >= 0) {
    const std::int64_t page = slot / page_size, offset = slot % page_size;
    k_dst = cache + (page * 2 * page_size + offset) * kv_row;  // [Hkv * D]; V at + page_size rows
  }
  __shared__ float cos_s[kMaxRopeHalf], sin_s[kMaxRopeHalf];
  rope_table(positions[t], dim, theta, inv_freq, cos_s, sin_s);
  const int pairs = (end_head - first_head) * half;
  for (int p = static_cast<int>(threadIdx.x); p < pairs; p += static_cast<int>(blockDim.x)) {
    const int head = first_head + p / half;
    const int i = p % half;
    const bf16* src = row + static_cast<std::int64_t>(head) * dim;  // k heads follow the q heads
    bf16* dst;
    if (head < num_q_heads) {
      dst = q_out + (t * num_q_heads + head) * dim;
    } else if (k_dst != nullptr) {
      dst = k_dst + static_cast<std::int64_t>(head - num_q_heads) * dim;
    } else {
      continue;
    }
    rotate_pair(dst + i, dst + i + half, __bfloat162float(src[i]), __bfloat162float(src[i + half]),
                cos_s[i], sin_s[i]);
  }
  if (k_dst == nullptr) return;
  // The v heads of this block's k heads.
  const int first_v = max(first_head, num_q_heads) - num_q_heads;
  const int end_v = end_head - num_q_heads;
  if (end_v <= first_v) return;
  const bf16* v_src = row + static_cast<std::int64_t>(num_q_heads) * dim + kv_row;
  bf16* v_dst = k_dst + page_size * kv_row;
  for (std::int64_t c = static_cast<std::int64_t>(first_v) * dim + threadIdx.x;
       c < static_cast<std::int64_t>(end_v) * dim; c += blockDim.x)
    v_dst[c] = v_src[c];
}

// One block per token: rotate-half on its q and k heads in place.
// q [T, Hq, D]; k [T, Hkv, D]; positions [T]
__global__ void rope_kernel(bf16* q, bf16* k, const std::int32_t* positions, int num_q_heads,
                            int num_kv_heads, int dim, double theta) {
  after_prior_grids();
  const std::int64_t t = blockIdx.x;
  const int half = dim / 2;
  __shared__ float cos_s[kMaxRopeHalf], sin_s[kMaxRopeHalf];
  rope_table(positions[t], dim, theta, nullptr, cos_s, sin_s);
  const int pairs = (num_q_heads + num_kv_heads) * half;
  for (int p = static_cast<int>(threadIdx.x); p < pairs; p += static_cast<int>(blockDim.x)) {
    const int head = p / half;
    const int i = p % half;
    bf16* row = head < num_q_heads ? q + (t * num_q_heads + head) * dim
                                   : k + (t * num_kv_heads + head - num_q_heads) * dim;
    rotate_pair(row + i, row + i + half, __bfloat162float(row[i]), __bfloat162float(row[i + half]),
                cos_s[i], sin_s[i]);
  }
}

// One block per token: its K and V rows into their slot.  k, v [T, Hkv * D]; slots [T];
// cache [num_pages, 2, page_size, Hkv * D]
__global__ void kv_append_kernel(const bf16* k, const bf16* v, const std::int32_t* slots,
                                 bf16* cache, std::int64_t row, int page_size) {
  after_prior_grids();
  const std::int64_t t = blockIdx.x;
  if (slots[t] < 0) return;  // a padding row
  const std::int64_t page = slots[t] / page_size;
  const std::int64_t offset = slots[t] % page_size;
  bf16* k_dst = cache + (page * 2 * page_size + offset) * row;
  bf16* v_dst = k_dst + page_size * row;
  for (std::int64_t c = threadIdx.x; c < row; c += blockDim.x) {
    k_dst[c] = k[t * row + c];
    v_dst[c] = v[t * row + c];
  }
}

// out[i, :] = x[rows[i], :].  x [M, cols]; rows [S]; out [S, cols]
__global__ void gather_rows_kernel(const bf16* x, const std::int32_t* rows, bf16* out,
                                   std::int64_t cols) {
  after_prior_grids();
  const std::int64_t i = blockIdx.x;
  const bf16* src = x + static_cast<std::int64_t>(rows[i]) * cols;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[i * cols + c] = src[c];
}

}  // namespace

Status launch_embedding(const void* table, const std::int32_t* ids, void* out, std::int64_t tokens,
                        std::int64_t hidden, void* stream) {
  return launch(embedding_kernel, tokens, kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(table), ids, static_cast<bf16*>(out), hidden);
}

Status launch_rms_norm(const void* x, const void* weight, void* out, std::int64_t rows,
                       std::int64_t dim, float eps, void* stream) {
  const bool aligned = reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(weight) % 16 == 0 &&
                       reinterpret_cast<std::uintptr_t>(out) % 16 == 0;
  if (aligned && dim % 8 == 0 && dim <= 8 * 1024) {
    const int threads = static_cast<int>((dim / 8 + 31) / 32 * 32);
    return launch(rms_norm_chunked_kernel, rows, threads, static_cast<cudaStream_t>(stream),
                  static_cast<const bf16*>(x), static_cast<const bf16*>(weight),
                  static_cast<bf16*>(out), dim, eps);
  }
  const int threads = dim >= 4096 ? 1024 : (dim >= 1024 ? 512 : 128);
  return launch(rms_norm_kernel, rows, threads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(x), static_cast<const bf16*>(weight),
                static_cast<bf16*>(out), dim, eps);
}

Status launch_add(const void* a, const void* b, void* out, std::int64_t n, void* stream) {
  return launch(add_kernel, grid_for(n), kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(a), static_cast<const bf16*>(b), static_cast<bf16*>(out),
                n);
}

Status launch_silu_mul(const void* gate_up, void* out, std::int64_t rows, std::int64_t f,
                       void* stream) {
  if (f % 8 == 0 && reinterpret_cast<std::uintptr_t>(gate_up) % 16 == 0 &&
      reinterpret_cast<std::uintptr_t>(out) % 16 == 0) {
    return launch(silu_mul_chunked_kernel, grid_for(rows * f / 8), kThreads,
                  static_cast<cudaStream_t>(stream), static_cast<const bf16*>(gate_up),
                  static_cast<bf16*>(out), rows * f / 8, f);
  }
  return launch(silu_mul_kernel, grid_for(rows * f), kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(gate_up), static_cast<bf16*>(out), rows * f, f);
}

Status launch_rope_append(const void* qkv, const std::int32_t* positions, const std::int32_t* slots,
                          void* cache, void* q_out, std::int64_t tokens, int num_q_heads,
                          int num_kv_heads, int head_dim, int page_size, double theta,
                          const float* inv_freq, void* stream) {
  const int groups = (num_q_heads + num_kv_heads + kRopeHeadsPerBlock - 1) / kRopeHeadsPerBlock;
  return launch(rope_append_kernel, tokens * groups, kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(qkv), positions, slots, static_cast<bf16*>(cache),
                static_cast<bf16*>(q_out), num_q_heads, num_kv_heads, head_dim, page_size, theta,
                inv_freq);
}

Status launch_rope(void* q, void* k, const std::int32_t* positions, std::int64_t tokens,
                   int num_q_heads, int num_kv_heads, int head_dim, double theta, void* stream) {
  return launch(rope_kernel, tokens, kThreads, static_cast<cudaStream_t>(stream),
                static_cast<bf16*>(q), static_cast<bf16*>(k), positions, num_q_heads, num_kv_heads,
                head_dim, theta);
}

Status launch_kv_append(const void* k, const void* v, const std::int32_t* slots, void* cache,
                        std::int64_t tokens, std::int64_t row, int page_size, void* stream) {
  return launch(kv_append_kernel, tokens, kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(k), static_cast<const bf16*>(v), slots,
                static_cast<bf16*>(cache), row, page_size);
}

Status launch_gather_rows(const void* x, const std::int32_t* rows, void* out, std::int64_t count,
                          std::int64_t cols, void* stream) {
  return launch(gather_rows_kernel, count, kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(x), rows, static_cast<bf16*>(out), cols);
}

}  // namespace podserve::cuda
