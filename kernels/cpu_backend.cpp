#include "kernels/cpu_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"

namespace podserve {
namespace {

constexpr std::size_t kAlignment = 64;

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
    return invalid_argument(fmt::format("{}: {} has dtype {}, the CPU backend expects {}", op, name,
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

Status check_cache(std::string_view op, const KvCacheView& cache) {
  if (cache.dtype != DType::kF32) {
    return invalid_argument(fmt::format(
        "{}: the KV cache has dtype {}, the CPU backend expects fp32", op, to_string(cache.dtype)));
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

void aligned_release(void* p) { std::free(p); }

class CpuBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::kCpu; }
  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::kF32; }

  Result<DeviceBuffer> allocate(std::size_t bytes) override {
    const std::size_t rounded =
        std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    void* data = std::aligned_alloc(kAlignment, rounded);
    if (data == nullptr) {
      return resource_exhausted(
          fmt::format("allocate: cannot allocate {} bytes of host memory", bytes));
    }
    return DeviceBuffer(data, bytes, &aligned_release);
  }

  Status copy_to_device(void* dst, const void* src_host, std::size_t bytes) override {
    return copy("copy_to_device", dst, src_host, bytes);
  }

  Status copy_to_host(void* dst_host, const void* src, std::size_t bytes) override {
    return copy("copy_to_host", dst_host, src, bytes);
  }

  Status upload_f32(const TensorView& dst, std::span<const float> src_host) override {
    if (dst.dtype != DType::kF32) {
      return invalid_argument(fmt::format(
          "upload_f32: dst has dtype {}, the CPU backend expects fp32", to_string(dst.dtype)));
    }
    if (dst.numel() != static_cast<std::int64_t>(src_host.size())) {
      return invalid_argument(fmt::format("upload_f32: dst {} holds {} values, the source has {}",
                                          shape_string(dst), dst.numel(), src_host.size()));
    }
    return copy("upload_f32", dst.data, src_host.data(), src_host.size_bytes());
  }

  Status synchronize() override { return Status::Ok(); }

  Status embedding(const TensorView& table, const TensorView& ids, const TensorView& out) override {
    constexpr std::string_view op = "embedding";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "table", table, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "ids", ids, DType::kI32, 1));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 0, ids.shape[0], "ids.shape[0]"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 1, table.shape[1], "table.shape[1]"));
    const std::int64_t vocab = table.shape[0];
    const std::int64_t hidden = table.shape[1];
    const std::int32_t* id = ids.as<const std::int32_t>();  // [T]
    for (std::int64_t t = 0; t < ids.shape[0]; ++t) {
      if (id[t] < 0 || id[t] >= vocab) {
        return out_of_range(fmt::format("embedding: ids[{}] = {} is outside the vocabulary [0, {})",
                                        t, id[t], vocab));
      }
    }
    const float* src = table.as<const float>();  // [vocab, hidden]
    float* dst = out.as<float>();                // [T, hidden]
    for (std::int64_t t = 0; t < ids.shape[0]; ++t) {
      std::memcpy(dst + t * hidden, src + id[t] * hidden, hidden * sizeof(float));
    }
    return Status::Ok();
  }

  Status rms_norm(const TensorView& x, const TensorView& weight, float eps,
                  const TensorView& out) override {
    constexpr std::string_view op = "rms_norm";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "weight", weight, DType::kF32, 1));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "weight", weight, 0, x.shape[1], "x.shape[1]"));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "x", x));
    if (!(eps >= 0.0f) || x.shape[1] == 0) {
      return invalid_argument(
          fmt::format("rms_norm: needs eps >= 0 and D > 0 (eps {}, x {})", eps, shape_string(x)));
    }
    const std::int64_t dim = x.shape[1];
    const float* w = weight.as<const float>();  // [D]
    for (std::int64_t r = 0; r < x.shape[0]; ++r) {
      const float* in = x.as<const float>() + r * dim;  // [D]
      float* dst = out.as<float>() + r * dim;           // [D]
      constexpr std::int64_t kLanes = 8;
      float acc[kLanes] = {};
      std::int64_t i = 0;
      for (; i + kLanes <= dim; i += kLanes) {
        for (std::int64_t l = 0; l < kLanes; ++l) acc[l] += in[i + l] * in[i + l];
      }
      float sum_sq =
          ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; i < dim; ++i) sum_sq += in[i] * in[i];
      const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(dim) + eps);
      for (std::int64_t c = 0; c < dim; ++c) dst[c] = in[c] * inv_rms * w[c];
    }
    return Status::Ok();
  }

  Status matmul(const TensorView& x, const TensorView& w, const TensorView& y) override {
    constexpr std::string_view op = "matmul";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "w", w, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "y", y, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "w", w, 1, x.shape[1], "x.shape[1], the shared K"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "y", y, 0, x.shape[0], "x.shape[0]"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "y", y, 1, w.shape[0], "w.shape[0]"));
    cpu::matmul_f32(x.as<const float>(), w.as<const float>(), y.as<float>(), x.shape[0], x.shape[1],
                    w.shape[0]);
    return Status::Ok();
  }

  Status add(const TensorView& a, const TensorView& b, const TensorView& out) override {
    constexpr std::string_view op = "add";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "a", a, DType::kF32, a.ndim));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "b", b, DType::kF32, a.ndim));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, a.ndim));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "b", b, "a", a));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "a", a));
    const float* lhs = a.as<const float>();
    const float* rhs = b.as<const float>();
    float* dst = out.as<float>();
    const std::int64_t n = a.numel();
    for (std::int64_t i = 0; i < n; ++i) dst[i] = lhs[i] + rhs[i];
    return Status::Ok();
  }

  Status silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) override {
    constexpr std::string_view op = "silu_mul";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "gate", gate, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "up", up, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "up", up, "gate", gate));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "gate", gate));
    const float* g = gate.as<const float>();  // [M, F]
    const float* u = up.as<const float>();    // [M, F]
    float* dst = out.as<float>();             // [M, F]
    const std::int64_t n = gate.numel();
    for (std::int64_t i = 0; i < n; ++i) dst[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    return Status::Ok();
  }

  Status rope(const TensorView& q, const TensorView& k, const TensorView& positions,
              float theta) override {
    constexpr std::string_view op = "rope";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "q", q, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "k", k, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "positions", positions, DType::kI32, 1));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 0, q.shape[0], "q.shape[0]"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 2, q.shape[2], "q.shape[2], the head dim"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "positions", positions, 0, q.shape[0], "q.shape[0]"));
    const std::int64_t dim = q.shape[2];
    if (dim % 2 != 0 || !(theta > 0.0f)) {
      return invalid_argument(
          fmt::format("rope: needs an even head dim and theta > 0 (D {}, theta {})", dim, theta));
    }
    const std::int32_t* pos = positions.as<const std::int32_t>();  // [T]
    for (std::int64_t t = 0; t < q.shape[0]; ++t) {
      if (pos[t] < 0) {
        return out_of_range(fmt::format("rope: positions[{}] = {} is negative", t, pos[t]));
      }
    }
    const std::int64_t half = dim / 2;
    inv_freq_.resize(half);
    for (std::int64_t i = 0; i < half; ++i) {
      inv_freq_[i] = std::pow(static_cast<double>(theta),
                              -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    }
    cos_.resize(half);
    sin_.resize(half);
    for (std::int64_t t = 0; t < q.shape[0]; ++t) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos[t]) * inv_freq_[i];
        cos_[i] = static_cast<float>(std::cos(angle));
        sin_[i] = static_cast<float>(std::sin(angle));
      }
      rotate(q.as<float>() + t * q.shape[1] * dim, q.shape[1], dim);
      rotate(k.as<float>() + t * k.shape[1] * dim, k.shape[1], dim);
    }
    return Status::Ok();
  }

  Status kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                   const KvCacheView& cache) override {
    constexpr std::string_view op = "kv_append";
    PODSERVE_RETURN_IF_ERROR(check_cache(op, cache));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "k", k, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "v", v, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "slots", slots, DType::kI32, 1));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 1, cache.num_kv_heads, "cache.num_kv_heads"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "k", k, 2, cache.head_dim, "cache.head_dim"));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "v", v, "k", k));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "slots", slots, 0, k.shape[0], "k.shape[0]"));
    const std::int64_t num_slots = static_cast<std::int64_t>(cache.num_pages) * cache.page_size;
    const std::int32_t* slot = slots.as<const std::int32_t>();  // [T]
    for (std::int64_t t = 0; t < k.shape[0]; ++t) {
      if (slot[t] < 0 || slot[t] >= num_slots) {
        return out_of_range(fmt::format("kv_append: slots[{}] = {} is outside the cache [0, {})", t,
                                        slot[t], num_slots));
      }
    }
    const std::int64_t row = static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim;
    const std::int64_t half_page = static_cast<std::int64_t>(cache.page_size) * row;
    float* base = static_cast<float*>(cache.data);  // [num_pages, 2, page_size, Hkv, D]
    for (std::int64_t t = 0; t < k.shape[0]; ++t) {
      const std::int64_t page = slot[t] / cache.page_size;
      const std::int64_t offset = slot[t] % cache.page_size;
      float* k_dst = base + page * 2 * half_page + offset * row;  // [Hkv, D]
      std::memcpy(k_dst, k.as<const float>() + t * row, row * sizeof(float));
      std::memcpy(k_dst + half_page, v.as<const float>() + t * row, row * sizeof(float));
    }
    return Status::Ok();
  }

  Status attention(const TensorView& q, const KvCacheView& cache,
                   std::span<const AttentionSequence> sequences, float scale, AttentionKind kind,
                   const TensorView& out) override {
    constexpr std::string_view op = "attention";
    switch (kind) {
      case AttentionKind::kCpu: break;
      case AttentionKind::kPod:
      case AttentionKind::kSerial:
      case AttentionKind::kStreams:
        return unimplemented("attention: the pod, serial and streams kinds need the CUDA backend");
    }
    PODSERVE_RETURN_IF_ERROR(check_cache(op, cache));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "q", q, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, 3));
    PODSERVE_RETURN_IF_ERROR(check_same_shape(op, "out", out, "q", q));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "q", q, 2, cache.head_dim, "cache.head_dim"));
    const std::int64_t num_q_heads = q.shape[1];
    if (num_q_heads == 0 || num_q_heads % cache.num_kv_heads != 0) {
      return invalid_argument(
          fmt::format("attention: {} query heads is not a positive multiple of {} KV heads",
                      num_q_heads, cache.num_kv_heads));
    }
    if (!std::isfinite(scale)) {
      return invalid_argument(fmt::format("attention: scale {} is not finite", scale));
    }
    const std::int64_t num_tokens = q.shape[0];
    for (std::size_t s = 0; s < sequences.size(); ++s) {
      const AttentionSequence& seq = sequences[s];
      if (seq.num_new_tokens < 1 || seq.num_cached_tokens < 0 || seq.query_offset < 0 ||
          seq.query_offset + static_cast<std::int64_t>(seq.num_new_tokens) > num_tokens) {
        return invalid_argument(fmt::format(
            "attention: sequence {} (query_offset {}, C {}, P {}) does not fit q with {} tokens", s,
            seq.query_offset, seq.num_new_tokens, seq.num_cached_tokens, num_tokens));
      }
      const std::int64_t context =
          static_cast<std::int64_t>(seq.num_cached_tokens) + seq.num_new_tokens;
      const std::int64_t pages_needed = (context + cache.page_size - 1) / cache.page_size;
      if (static_cast<std::int64_t>(seq.page_table.size()) < pages_needed) {
        return invalid_argument(fmt::format(
            "attention: sequence {} needs {} pages for {} tokens, its page table has {}", s,
            pages_needed, context, seq.page_table.size()));
      }
      for (std::int64_t i = 0; i < pages_needed; ++i) {
        if (seq.page_table[i] < 0 || seq.page_table[i] >= cache.num_pages) {
          return out_of_range(
              fmt::format("attention: sequence {} page_table[{}] = {} is outside [0, {})", s, i,
                          seq.page_table[i], cache.num_pages));
        }
      }
    }
    cpu::PagedAttentionParams params;
    params.q = q.as<const float>();
    params.cache = static_cast<const float*>(cache.data);
    params.out = out.as<float>();
    params.num_q_heads = static_cast<std::int32_t>(num_q_heads);
    params.num_kv_heads = cache.num_kv_heads;
    params.head_dim = cache.head_dim;
    params.page_size = cache.page_size;
    params.scale = scale;
    cpu::paged_attention_f32(params, sequences, scores_);
    return Status::Ok();
  }

  Status gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                     const TensorView& out) override {
    constexpr std::string_view op = "gather_rows";
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "x", x, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "out", out, DType::kF32, 2));
    PODSERVE_RETURN_IF_ERROR(
        check_dim(op, "out", out, 0, static_cast<std::int64_t>(rows.size()), "the number of rows"));
    PODSERVE_RETURN_IF_ERROR(check_dim(op, "out", out, 1, x.shape[1], "x.shape[1]"));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= x.shape[0]) {
        return out_of_range(
            fmt::format("gather_rows: rows[{}] = {} is outside [0, {})", i, rows[i], x.shape[0]));
      }
    }
    const std::int64_t cols = x.shape[1];
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::memcpy(out.as<float>() + static_cast<std::int64_t>(i) * cols,
                  x.as<const float>() + rows[i] * cols, cols * sizeof(float));
    }
    return Status::Ok();
  }

 private:
  static Status copy(std::string_view op, void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return Status::Ok();
    if (dst == nullptr || src == nullptr) {
      return invalid_argument(fmt::format("{}: null pointer for {} bytes", op, bytes));
    }
    std::memcpy(dst, src, bytes);
    return Status::Ok();
  }

  // Rotate-half on `heads` rows of [D] each, with cos_/sin_ of the current position.
  void rotate(float* data, std::int64_t heads, std::int64_t dim) const {  // data: [heads, D]
    const std::int64_t half = dim / 2;
    for (std::int64_t h = 0; h < heads; ++h) {
      float* row = data + h * dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const float x0 = row[i];
        const float x1 = row[i + half];
        row[i] = x0 * cos_[i] - x1 * sin_[i];
        row[i + half] = x1 * cos_[i] + x0 * sin_[i];
      }
    }
  }

  std::vector<float> scores_;     // attention scratch: one score per visible key
  std::vector<double> inv_freq_;  // rope: [D / 2]
  std::vector<float> cos_;        // rope: [D / 2] for one position
  std::vector<float> sin_;        // rope: [D / 2] for one position
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace podserve
