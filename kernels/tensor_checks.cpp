#include "kernels/tensor_checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace podserve {

std::string shape_string(const TensorView& t) {
  std::string s = "[";
  for (std::int32_t i = 0; i < t.ndim; ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(t.shape[i]);
  }
  return s + "]";
}

// Checks dtype, rank, non-negative extents and a non-null pointer for non-empty tensors.
Status check_tensor(std::string_view op, std::string_view name, const TensorView& t, DType dtype,
                    std::int32_t ndim) {
  if (t.dtype != dtype) {
    return invalid_argument(fmt::format("{}: {} has dtype {}, expected {}", op, name,
                                        to_string(t.dtype), to_string(dtype)));
  }
  if (t.ndim != ndim || ndim < 0 || ndim > static_cast<std::int32_t>(t.shape.size())) {
    return invalid_argument(fmt::format("{}: {} has shape {}, expected {} dimensions", op, name,
                                        shape_string(t), ndim));
  }
  for (std::int32_t i = 0; i < ndim; ++i) {
    if (t.shape[i] < 0) {
      return invalid_argument(
          fmt::format("{}: {} has a negative extent in shape {}", op, name, shape_string(t)));
    }
  }
  if (t.data == nullptr && t.numel() > 0) {
    return invalid_argument(fmt::format("{}: {} is null", op, name));
  }
  return Status::Ok();
}

// Checks t.shape[axis] == expected; `what` says where the expectation comes from.
Status check_dim(std::string_view op, std::string_view name, const TensorView& t, std::int32_t axis,
                 std::int64_t expected, std::string_view what) {
  if (t.shape[axis] != expected) {
    return invalid_argument(fmt::format("{}: {}.shape[{}] is {}, expected {} ({})", op, name, axis,
                                        t.shape[axis], expected, what));
  }
  return Status::Ok();
}

Status check_same_shape(std::string_view op, std::string_view name, const TensorView& t,
                        std::string_view ref_name, const TensorView& ref) {
  if (t.ndim != ref.ndim ||
      !std::equal(t.shape.begin(), t.shape.begin() + t.ndim, ref.shape.begin())) {
    return invalid_argument(fmt::format("{}: {} has shape {}, expected the shape of {}: {}", op,
                                        name, shape_string(t), ref_name, shape_string(ref)));
  }
  return Status::Ok();
}

Status check_copy(std::string_view op, const void* dst, const void* src, std::size_t bytes) {
  if (bytes > 0 && (dst == nullptr || src == nullptr)) {
    return invalid_argument(fmt::format("{}: null pointer for {} bytes", op, bytes));
  }
  return Status::Ok();
}

Status check_upload(const TensorView& dst, std::size_t values, DType dtype) {
  if (dst.dtype != dtype) {
    return invalid_argument(fmt::format("upload_f32: dst has dtype {}, expected {}",
                                        to_string(dst.dtype), to_string(dtype)));
  }
  if (dst.numel() != static_cast<std::int64_t>(values)) {
    return invalid_argument(fmt::format("upload_f32: dst {} holds {} values, the source has {}",
                                        shape_string(dst), dst.numel(), values));
  }
  return Status::Ok();
}

Status check_cache(std::string_view op, const KvCacheView& cache, DType dtype) {
  if (cache.dtype != dtype) {
    return invalid_argument(fmt::format("{}: the KV cache has dtype {}, expected {}", op,
                                        to_string(cache.dtype), to_string(dtype)));
  }
  if (cache.data == nullptr || cache.num_pages <= 0 || cache.page_size <= 0 ||
      cache.num_kv_heads <= 0 || cache.head_dim <= 0) {
    return invalid_argument(fmt::format(
        "{}: invalid KV cache (data {}, num_pages {}, page_size {}, num_kv_heads {}, head_dim {})",
        op, cache.data == nullptr ? "null" : "set", cache.num_pages, cache.page_size,
        cache.num_kv_heads, cache.head_dim));
  }
  return Status::Ok();
}

Result<std::int64_t> check_attention_sequences(std::string_view op, const KvCacheView& cache,
                                               std::span<const AttentionSequence> sequences) {
  std::int64_t query_extent = 0;
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const AttentionSequence& seq = sequences[s];
    if (seq.num_new_tokens < 1 || seq.num_cached_tokens < 0 || seq.query_offset < 0) {
      return invalid_argument(fmt::format("{}: sequence {} has query_offset {}, C {}, P {}", op, s,
                                          seq.query_offset, seq.num_new_tokens,
                                          seq.num_cached_tokens));
    }
    query_extent =
        std::max(query_extent, static_cast<std::int64_t>(seq.query_offset) + seq.num_new_tokens);
    const std::int64_t context =
        static_cast<std::int64_t>(seq.num_cached_tokens) + seq.num_new_tokens;
    const std::int64_t pages_needed = (context + cache.page_size - 1) / cache.page_size;
    if (static_cast<std::int64_t>(seq.page_table.size()) < pages_needed) {
      return invalid_argument(
          fmt::format("{}: sequence {} needs {} pages for {} tokens, its page table has {}", op, s,
                      pages_needed, context, seq.page_table.size()));
    }
    for (std::int64_t i = 0; i < pages_needed; ++i) {
      if (seq.page_table[i] < 0 || seq.page_table[i] >= cache.num_pages) {
        return out_of_range(fmt::format("{}: sequence {} page_table[{}] = {} is outside [0, {})",
                                        op, s, i, seq.page_table[i], cache.num_pages));
      }
    }
  }
  return query_extent;
}

Status check_attention_tensors(std::string_view op, const TensorView& q, const KvCacheView& cache,
                               float scale, const TensorView& out, DType dtype,
                               std::int64_t query_extent) {
  PODSERVE_RETURN_IF_ERROR(check_cache(op, cache, dtype));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "q", q, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "q", q));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "q", q, 2, cache.head_dim, "cache.head_dim"));
  const std::int64_t num_q_heads = q.shape[1];
  if (num_q_heads == 0 || num_q_heads % cache.num_kv_heads != 0) {
    return invalid_argument(
        fmt::format("{}: {} query heads is not a positive multiple of {} KV heads", op, num_q_heads,
                    cache.num_kv_heads));
  }
  if (!std::isfinite(scale)) {
    return invalid_argument(fmt::format("{}: scale {} is not finite", op, scale));
  }
  if (q.shape[0] < query_extent) {
    return invalid_argument(fmt::format("{}: the batch's query rows reach {}, q has {} tokens", op,
                                        query_extent, q.shape[0]));
  }
  return Status::Ok();
}

Status check_attention_batch(std::string_view op, const TensorView& q, const KvCacheView& cache,
                             std::span<const AttentionSequence> sequences, float scale,
                             const TensorView& out, DType dtype) {
  PODSERVE_RETURN_IF_ERROR(check_cache(op, cache, dtype));
  PODSERVE_ASSIGN_OR_RETURN(const std::int64_t query_extent,
                            check_attention_sequences(op, cache, sequences));
  return check_attention_tensors(op, q, cache, scale, out, dtype, query_extent);
}

Status check_embedding(const TensorView& table, const TensorView& ids, const TensorView& out,
                       DType dtype) {
  constexpr std::string_view op = "embedding";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "table", table, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "ids", ids, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 0, ids.shape[0], "ids.shape[0]"));
  return check_dim(op, "out", out, 1, table.shape[1], "table.shape[1]");
}

Status check_rms_norm(const TensorView& x, const TensorView& weight, float eps,
                      const TensorView& out, DType dtype) {
  constexpr std::string_view op = "rms_norm";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "weight", weight, dtype, 1));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "weight", weight, 0, x.shape[1], "x.shape[1]"));
  PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "x", x));
  if (!(eps >= 0.0f) || x.shape[1] == 0) {
    return invalid_argument(
        fmt::format("rms_norm: needs eps >= 0 and D > 0 (eps {}, x {})", eps, shape_string(x)));
  }
  return Status::Ok();
}

Status check_matmul(const TensorView& x, const TensorView& w, const TensorView& y, DType dtype) {
  constexpr std::string_view op = "matmul";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "w", w, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "y", y, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "w", w, 1, x.shape[1], "x.shape[1], the shared K"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "y", y, 0, x.shape[0], "x.shape[0]"));
  return check_dim(op, "y", y, 1, w.shape[0], "w.shape[0]");
}

Status check_add(const TensorView& a, const TensorView& b, const TensorView& out, DType dtype) {
  constexpr std::string_view op = "add";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "a", a, dtype, a.ndim));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "b", b, dtype, a.ndim));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, a.ndim));
  PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "b", b, "a", a));
  return check_same_shape(op, "out", out, "a", a);
}

Status check_silu_mul(const TensorView& gate_up, const TensorView& out, DType dtype) {
  constexpr std::string_view op = "silu_mul";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "gate_up", gate_up, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 0, gate_up.shape[0], "gate_up.shape[0]"));
  return check_dim(op, "gate_up", gate_up, 1, 2 * out.shape[1], "2 * out.shape[1]");
}

Status check_rope_append(const TensorView& qkv, const TensorView& positions,
                         const TensorView& slots, float theta, const KvCacheView& cache,
                         const TensorView& q_out, DType dtype) {
  constexpr std::string_view op = "rope_append";
  PODSERVE_RETURN_IF_ERROR(check_cache(op, cache, dtype));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "qkv", qkv, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "q_out", q_out, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "positions", positions, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "slots", slots, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "q_out", q_out, 0, qkv.shape[0], "qkv.shape[0]"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "q_out", q_out, 2, cache.head_dim, "cache.head_dim"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "positions", positions, 0, qkv.shape[0], "qkv.shape[0]"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "slots", slots, 0, qkv.shape[0], "qkv.shape[0]"));
  PODSERVE_RETURN_IF_ERROR(check_dim(
      op, "qkv", qkv, 1, (q_out.shape[1] + 2 * std::int64_t{cache.num_kv_heads}) * cache.head_dim,
      "(q heads + 2 * KV heads) * head_dim"));
  if (cache.head_dim % 2 != 0 || !(theta > 0.0f)) {
    return invalid_argument(
        fmt::format("rope_append: needs an even head dim and theta > 0 (D {}, theta {})",
                    cache.head_dim, theta));
  }
  return Status::Ok();
}

Status check_rope(const TensorView& q, const TensorView& k, const TensorView& positions,
                  float theta, DType dtype) {
  constexpr std::string_view op = "rope";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "q", q, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "k", k, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "positions", positions, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 0, q.shape[0], "q.shape[0]"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 2, q.shape[2], "q.shape[2], the head dim"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "positions", positions, 0, q.shape[0], "q.shape[0]"));
  if (q.shape[2] % 2 != 0 || !(theta > 0.0f)) {
    return invalid_argument(fmt::format(
        "rope: needs an even head dim and theta > 0 (D {}, theta {})", q.shape[2], theta));
  }
  return Status::Ok();
}

Status check_kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                       const KvCacheView& cache, DType dtype) {
  constexpr std::string_view op = "kv_append";
  PODSERVE_RETURN_IF_ERROR(check_cache(op, cache, dtype));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "k", k, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "v", v, dtype, 3));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "slots", slots, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 1, cache.num_kv_heads, "cache.num_kv_heads"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 2, cache.head_dim, "cache.head_dim"));
  PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "v", v, "k", k));
  return check_dim(op, "slots", slots, 0, k.shape[0], "k.shape[0]");
}

Status check_sample(const TensorView& logits, const TensorView& rows, const TensorView& out,
                    DType dtype) {
  constexpr std::string_view op = "sample";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "logits", logits, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "rows", rows, DType::kI32, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kI32, 1));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "rows", rows, 0, logits.shape[0], "logits.shape[0]"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "rows", rows, 1,
                                     static_cast<std::int64_t>(sizeof(SamplingRow) / 4),
                                     "the int32 words of a SamplingRow"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 0, logits.shape[0], "logits.shape[0]"));
  if (logits.shape[1] < 1) return invalid_argument("sample: logits need at least one column");
  return Status::Ok();
}

Status check_gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                         const TensorView& out, DType dtype) {
  constexpr std::string_view op = "gather_rows";
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, dtype, 2));
  PODSERVE_RETURN_IF_ERROR(
      check_dim(op, "out", out, 0, static_cast<std::int64_t>(rows.size()), "the number of rows"));
  PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 1, x.shape[1], "x.shape[1]"));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= x.shape[0]) {
      return out_of_range(
          fmt::format("gather_rows: rows[{}] = {} is outside [0, {})", i, rows[i], x.shape[0]));
    }
  }
  return Status::Ok();
}

}  // namespace podserve
