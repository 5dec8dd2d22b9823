#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace podserve::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;
constexpr std::int64_t kMaxGridBlocks = 65535 * 8;  // grid-stride loops cap their grid here

// Every launch goes through here: an empty grid is a no-op, the launch error is checked.
template <typename Kernel, typename... Args>
Status launch(Kernel kernel, std::int64_t blocks, int threads, cudaStream_t stream, Args... args) {
  if (blocks <= 0) return Status::Ok();
  kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(args...);
  PODSERVE_CHECK(cudaGetLastError());
  return Status::Ok();
}

std::int64_t grid_for(std::int64_t n) {
  return std::min<std::int64_t>((n + kThreads - 1) / kThreads, kMaxGridBlocks);
}

// ---- kernels (bf16 storage, fp32 math) ----

// out[t, :] = table[ids[t], :].  table [vocab, hidden]; ids [T]; out [T, hidden]
__global__ void embedding_kernel(const bf16* table, const std::int32_t* ids, bf16* out,
                                 std::int64_t hidden) {
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

__global__ void add_kernel(const bf16* a, const bf16* b, bf16* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
  }
}

// out = silu(gate) * up, elementwise.
__global__ void silu_mul_kernel(const bf16* gate, const bf16* up, bf16* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float g = __bfloat162float(gate[i]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
  }
}

// One block per token: rotate-half on its q and k heads in place. Angles in double, as the CPU
// backend computes them (positions reach tens of thousands of radians).
// q [T, Hq, D]; k [T, Hkv, D]; positions [T]
__global__ void rope_kernel(bf16* q, bf16* k, const std::int32_t* positions, int num_q_heads,
                            int num_kv_heads, int dim, double theta) {
  const std::int64_t t = blockIdx.x;
  const int half = dim / 2;
  const double position = positions[t];
  const int pairs = (num_q_heads + num_kv_heads) * half;
  for (int p = static_cast<int>(threadIdx.x); p < pairs; p += static_cast<int>(blockDim.x)) {
    const int head = p / half;
    const int i = p % half;
    bf16* row = head < num_q_heads ? q + (t * num_q_heads + head) * dim
                                   : k + (t * num_kv_heads + head - num_q_heads) * dim;
    const double angle = position * pow(theta, -2.0 * i / dim);
    double sin_angle = 0.0, cos_angle = 0.0;
    sincos(angle, &sin_angle, &cos_angle);
    const float c = static_cast<float>(cos_angle);
    const float s = static_cast<float>(sin_angle);
    const float x0 = __bfloat162float(row[i]);
    const float x1 = __bfloat162float(row[i + half]);
    row[i] = __float2bfloat16(x0 * c - x1 * s);
    row[i + half] = __float2bfloat16(x1 * c + x0 * s);
  }
}

// One block per token: its K and V rows into their slot.  k, v [T, Hkv * D]; slots [T];
// cache [num_pages, 2, page_size, Hkv * D]
__global__ void kv_append_kernel(const bf16* k, const bf16* v, const std::int32_t* slots,
                                 bf16* cache, std::int64_t row, int page_size) {
  const std::int64_t t = blockIdx.x;
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

Status launch_silu_mul(const void* gate, const void* up, void* out, std::int64_t n, void* stream) {
  return launch(silu_mul_kernel, grid_for(n), kThreads, static_cast<cudaStream_t>(stream),
                static_cast<const bf16*>(gate), static_cast<const bf16*>(up),
                static_cast<bf16*>(out), n);
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
