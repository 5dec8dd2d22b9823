// Shape and dtype validation shared by the backends (kernels/ only): every op checks its tensors
// with these before it touches memory, so the CPU and CUDA backends reject the same inputs with
// the same messages ("<op>: <tensor> has dtype bf16, expected fp32").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

// "[2, 3, 4]".
std::string shape_string(const TensorView& t);

// Checks dtype, rank, non-negative extents and a non-null pointer for non-empty tensors.
Status check_tensor(std::string_view op, std::string_view name, const TensorView& t, DType dtype,
                    std::int32_t ndim);

// Checks t.shape[axis] == expected; `what` says where the expectation comes from.
Status check_dim(std::string_view op, std::string_view name, const TensorView& t, std::int32_t axis,
                 std::int64_t expected, std::string_view what);

Status check_same_shape(std::string_view op, std::string_view name, const TensorView& t,
                        std::string_view ref_name, const TensorView& ref);

// A copy between host and backend memory: both pointers set unless `bytes` is 0.
Status check_copy(std::string_view op, const void* dst, const void* src, std::size_t bytes);
// upload_f32: `dst` of `dtype` holding exactly `values` elements.
Status check_upload(const TensorView& dst, std::size_t values, DType dtype);

// A usable KV cache of `dtype`.
Status check_cache(std::string_view op, const KvCacheView& cache, DType dtype);

// Each op's tensors (float tensors of `dtype`, index tensors int32) against its shape contract in
// core/backend.h. Index values (ids, positions, slots) are not looked at: a backend whose indices
// live on the host checks their ranges itself.
Status check_embedding(const TensorView& table, const TensorView& ids, const TensorView& out,
                       DType dtype);
Status check_rms_norm(const TensorView& x, const TensorView& weight, float eps,
                      const TensorView& out, DType dtype);
Status check_matmul(const TensorView& x, const TensorView& w, const TensorView& y, DType dtype);
Status check_add(const TensorView& a, const TensorView& b, const TensorView& out, DType dtype);
Status check_silu_mul(const TensorView& gate_up, const TensorView& out, DType dtype);
// qkv [T, (Hq + 2 Hkv) * D]; positions, slots [T] int32; q_out [T, Hq, D]; even D, theta > 0.
Status check_rope_append(const TensorView& qkv, const TensorView& positions,
                         const TensorView& slots, float theta, const KvCacheView& cache,
                         const TensorView& q_out, DType dtype);
Status check_rope(const TensorView& q, const TensorView& k, const TensorView& positions,
                  float theta, DType dtype);
Status check_kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                       const KvCacheView& cache, DType dtype);
// Including every row index inside x (rows are host memory).
// logits [S, V] of dtype; rows [S, 6] int32 (SamplingRow); out [S] int32; V >= 1.
Status check_sample(const TensorView& logits, const TensorView& rows, const TensorView& out,
                    DType dtype);
Status check_gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                         const TensorView& out, DType dtype);

// The sequences of an attention batch against the cache's geometry (pages in range and enough of
// them); returns the rows of q the batch reaches (max query_offset + C).
Result<std::int64_t> check_attention_sequences(std::string_view op, const KvCacheView& cache,
                                               std::span<const AttentionSequence> sequences);
// q / out / cache / scale of one attention call over a batch reaching `query_extent` rows.
Status check_attention_tensors(std::string_view op, const TensorView& q, const KvCacheView& cache,
                               float scale, const TensorView& out, DType dtype,
                               std::int64_t query_extent);
// Both: the attention batch against q [T, Hq, D] (of `dtype`), out (q's shape) and the cache: Hq
// a positive multiple of Hkv, a finite scale, every sequence's rows inside q and a page table
// covering its context with pages inside the cache.
Status check_attention_batch(std::string_view op, const TensorView& q, const KvCacheView& cache,
                             std::span<const AttentionSequence> sequences, float scale,
                             const TensorView& out, DType dtype);

}  // namespace podserve
