// Launchers of the CUDA backend's elementwise and copy kernels (kernels/cuda/cuda_ops.cu): bf16
// storage, fp32 math, on `stream` (a cudaStream_t as void*). Internal to kernels/cuda: the
// backend (cuda_backend.cpp) validates shapes and dtypes first; pointers are device memory of the
// current device, index arrays int32. Each returns the launch status (asynchronous execution).
#pragma once

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
// out = silu(gate) * up, elementwise over n values.
Status launch_silu_mul(const void* gate, const void* up, void* out, std::int64_t n, void* stream);
// Rotate-half rotary embedding in place.  q [tokens, Hq, D]; k [tokens, Hkv, D]; positions [tokens]
Status launch_rope(void* q, void* k, const std::int32_t* positions, std::int64_t tokens,
                   int num_q_heads, int num_kv_heads, int head_dim, double theta, void* stream);
// K and V rows into their slots (page * page_size + offset).  k, v [tokens, row];
// cache [num_pages, 2, page_size, row] (row = Hkv * D)
Status launch_kv_append(const void* k, const void* v, const std::int32_t* slots, void* cache,
                        std::int64_t tokens, std::int64_t row, int page_size, void* stream);
// out[i, :] = x[rows[i], :].  x [M, cols]; rows [count]; out [count, cols]
Status launch_gather_rows(const void* x, const std::int32_t* rows, void* out, std::int64_t count,
                          std::int64_t cols, void* stream);

}  // namespace podserve::cuda
