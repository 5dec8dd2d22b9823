// Launchers of the CUDA backend's elementwise and copy kernels (kernels/cuda/cuda_ops.cu): bf16
// storage, fp32 math, on `stream` (a cudaStream_t as void*). Internal to kernels/cuda: the
// backend (cuda_backend.cpp) validates shapes and dtypes first; pointers are device memory of the
// current device, index arrays int32. Each returns the launch status (asynchronous execution).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace podserve::cuda {

// out[t, :] = table[ids[t], :].  table [vocab, hidden]; ids [tokens]; out [tokens, hidden]
Status launch_embedding(const void* table, const std::int32_t* ids, void* out, std::int64_t tokens,
                        std::int64_t hidden, void* stream);
// out = x / rms(x) * weight per row (out may alias x).  x, out [rows, dim]; weight [dim]
Status launch_rms_norm(const void* x, const void* weight, void* out, std::int64_t rows,
                       std::int64_t dim, float eps, void* stream);
// out = a + b, elementwise over n values (out may alias a or b).
Status launch_add(const void* a, const void* b, void* out, std::int64_t n, void* stream);
// out = silu(gate) * up over the halves of gate_up.  gate_up [rows, 2F]; out [rows, F]
Status launch_silu_mul(const void* gate_up, void* out, std::int64_t rows, std::int64_t f,
                       void* stream);
// q rotated into q_out, k rotated and v copied into their cache slots (slot -1: skipped), by
// the inverse frequencies theta^(-2i/D), or inv_freq [D/2] (fp32, device) when not null (scaled
// RoPE). qkv [tokens, (Hq + 2 Hkv) * D]; q_out [tokens, Hq, D]; cache [num_pages, 2, page_size,
// Hkv, D]
Status launch_rope_append(const void* qkv, const std::int32_t* positions, const std::int32_t* slots,
                          void* cache, void* q_out, std::int64_t tokens, int num_q_heads,
                          int num_kv_heads, int head_dim, int page_size, double theta,
                          const float* inv_freq, void* stream);
// Rotate-half rotary embedding in place.  q [tokens, Hq, D]; k [tokens, Hkv, D]; positions [tokens]
Status launch_rope(void* q, void* k, const std::int32_t* positions, std::int64_t tokens,
                   int num_q_heads, int num_kv_heads, int head_dim, double theta, void* stream);
// K and V rows into their slots (page * page_size + offset; negative: a padding row, skipped).  k,
// v [tokens, row]; cache [num_pages, 2, page_size, row] (row = Hkv * D)
Status launch_kv_append(const void* k, const void* v, const std::int32_t* slots, void* cache,
                        std::int64_t tokens, std::int64_t row, int page_size, void* stream);
// out[i, :] = x[rows[i], :].  x [M, cols]; rows [count]; out [count, cols]
Status launch_gather_rows(const void* x, const std::int32_t* rows, void* out, std::int64_t count,
                          std::int64_t cols, void* stream);

// One token per row by the sampling contract (kernels/sampler.h; kernels/cuda/sample_cuda.cu).
// logits [rows, vocab] bf16; params [rows] SamplingRow; out [rows] (-1: no token); workspace: at
// least sample_workspace_bytes(rows, vocab, num_sms) bytes of device memory (8-byte aligned),
// num_sms the device's multiprocessor count (how many CTAs share a row).
int sample_slices(std::int64_t rows, std::int64_t vocab, int num_sms);
std::size_t sample_workspace_bytes(std::int64_t rows, std::int64_t vocab, int num_sms);
Status launch_sample(const void* logits, std::int64_t rows, std::int64_t vocab, const void* params,
                     std::int32_t* out, void* workspace, int num_sms, void* stream);

}  // namespace podserve::cuda
