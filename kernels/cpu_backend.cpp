#include "kernels/cpu_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"
#include "kernels/sampler.h"
#include "kernels/tensor_checks.h"

namespace podserve {
namespace {

constexpr std::size_t kAlignment = 64;

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
    PODSERVE_RETURN_IF_ERROR(check_upload(dst, src_host.size(), DType::kF32));
    return copy("upload_f32", dst.data, src_host.data(), src_host.size_bytes());
  }

  Status synchronize() override { return Status::Ok(); }

  Status embedding(const TensorView& table, const TensorView& ids, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_embedding(table, ids, out, DType::kF32));
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
    PODSERVE_RETURN_IF_ERROR(check_rms_norm(x, weight, eps, out, DType::kF32));
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
    PODSERVE_RETURN_IF_ERROR(check_matmul(x, w, y, DType::kF32));
    cpu::matmul_f32(x.as<const float>(), w.as<const float>(), y.as<float>(), x.shape[0], x.shape[1],
                    w.shape[0]);
    return Status::Ok();
  }

  Status matmul_add(const TensorView& x, const TensorView& w, const TensorView& y) override {
    PODSERVE_RETURN_IF_ERROR(check_matmul(x, w, y, DType::kF32));
    product_.resize(static_cast<std::size_t>(y.numel()));
    cpu::matmul_f32(x.as<const float>(), w.as<const float>(), product_.data(), x.shape[0],
                    x.shape[1], w.shape[0]);
    float* dst = y.as<float>();
    for (std::size_t i = 0; i < product_.size(); ++i) dst[i] += product_[i];
    return Status::Ok();
  }

  Status add(const TensorView& a, const TensorView& b, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_add(a, b, out, DType::kF32));
    const float* lhs = a.as<const float>();
    const float* rhs = b.as<const float>();
    float* dst = out.as<float>();
    const std::int64_t n = a.numel();
    for (std::int64_t i = 0; i < n; ++i) dst[i] = lhs[i] + rhs[i];
    return Status::Ok();
  }

  Status silu_mul(const TensorView& gate_up, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_silu_mul(gate_up, out, DType::kF32));
    const std::int64_t f = out.shape[1];
    for (std::int64_t r = 0; r < out.shape[0]; ++r) {
      const float* g = gate_up.as<const float>() + r * 2 * f;  // [F]
      const float* u = g + f;                                  // [F]
      float* dst = out.as<float>() + r * f;                    // [F]
      for (std::int64_t i = 0; i < f; ++i) dst[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
    return Status::Ok();
  }

  // The unfused ops over copies of the q, k and v columns.
  Status rope_append(const TensorView& qkv, const TensorView& positions, const TensorView& slots,
                     float theta, const KvCacheView& cache, const TensorView& q_out) override {
    PODSERVE_RETURN_IF_ERROR(
        check_rope_append(qkv, positions, slots, theta, cache, q_out, DType::kF32));
    const auto [k, v] = split_qkv(qkv, cache, q_out);
    PODSERVE_RETURN_IF_ERROR(rope(q_out, k, positions, theta));
    return kv_append(k, v, slots, cache);
  }

  // rope_append over a given frequency table: the same split, rotation and append.
  Status rope_append_with_frequencies(const TensorView& qkv, const TensorView& positions,
                                      const TensorView& slots, const TensorView& inv_freq,
                                      const KvCacheView& cache, const TensorView& q_out) override {
    PODSERVE_RETURN_IF_ERROR(
        check_rope_append(qkv, positions, slots, 1.0f, cache, q_out, DType::kF32));
    PODSERVE_RETURN_IF_ERROR(
        check_tensor("rope_append_with_frequencies", "inv_freq", inv_freq, DType::kF32, 1));
    PODSERVE_RETURN_IF_ERROR(check_dim("rope_append_with_frequencies", "inv_freq", inv_freq, 0,
                                       cache.head_dim / 2, "head_dim / 2"));
    const auto [k, v] = split_qkv(qkv, cache, q_out);
    const float* table = inv_freq.as<const float>();  // [D/2]
    inv_freq_.assign(table, table + inv_freq.shape[0]);
    PODSERVE_RETURN_IF_ERROR(rotate_all(q_out, k, positions));
    return kv_append(k, v, slots, cache);
  }

  Status rope(const TensorView& q, const TensorView& k, const TensorView& positions,
              float theta) override {
    PODSERVE_RETURN_IF_ERROR(check_rope(q, k, positions, theta, DType::kF32));
    const std::int64_t dim = q.shape[2];
    const std::int64_t half = dim / 2;
    inv_freq_.resize(half);
    for (std::int64_t i = 0; i < half; ++i) {
      inv_freq_[i] = std::pow(static_cast<double>(theta),
                              -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    }
    return rotate_all(q, k, positions);
  }

  // The fused rows qkv [T, (Hq + 2 Hkv) * D] split: q copied into q_out [T, Hq, D], k and v into
  // split_k_ / split_v_, returned as [T, Hkv, D] views (valid until the next split).
  std::pair<TensorView, TensorView> split_qkv(const TensorView& qkv, const KvCacheView& cache,
                                              const TensorView& q_out) {
    const std::int64_t tokens = qkv.shape[0], width = qkv.shape[1];
    const std::int64_t q_cols = q_out.shape[1] * q_out.shape[2];
    const std::int64_t kv_cols = std::int64_t{cache.num_kv_heads} * cache.head_dim;
    split_k_.resize(static_cast<std::size_t>(tokens * kv_cols));
    split_v_.resize(static_cast<std::size_t>(tokens * kv_cols));
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float* row = qkv.as<const float>() + t * width;  // [q | k | v]
      std::memcpy(q_out.as<float>() + t * q_cols, row, q_cols * sizeof(float));
      std::memcpy(split_k_.data() + t * kv_cols, row + q_cols, kv_cols * sizeof(float));
      std::memcpy(split_v_.data() + t * kv_cols, row + q_cols + kv_cols, kv_cols * sizeof(float));
    }
    return {make_view(split_k_.data(), DType::kF32, {tokens, cache.num_kv_heads, cache.head_dim}),
            make_view(split_v_.data(), DType::kF32, {tokens, cache.num_kv_heads, cache.head_dim})};
  }

  // Rotates q [T, Hq, D] and k [T, Hkv, D] in place by positions [T] at inv_freq_ [D/2].
  Status rotate_all(const TensorView& q, const TensorView& k, const TensorView& positions) {
    const std::int64_t dim = q.shape[2];
    const std::int32_t* pos = positions.as<const std::int32_t>();  // [T]
    for (std::int64_t t = 0; t < q.shape[0]; ++t) {
      if (pos[t] < 0) {
        return out_of_range(fmt::format("rope: positions[{}] = {} is negative", t, pos[t]));
      }
    }
    const std::int64_t half = dim / 2;
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
    PODSERVE_RETURN_IF_ERROR(check_kv_append(k, v, slots, cache, DType::kF32));
    const std::int64_t num_slots = static_cast<std::int64_t>(cache.num_pages) * cache.page_size;
    const std::int32_t* slot = slots.as<const std::int32_t>();  // [T]
    for (std::int64_t t = 0; t < k.shape[0]; ++t) {
      if (slot[t] < -1 || slot[t] >= num_slots) {
        return out_of_range(fmt::format("kv_append: slots[{}] = {} is outside the cache [-1, {})",
                                        t, slot[t], num_slots));
      }
    }
    const std::int64_t row = static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim;
    const std::int64_t half_page = static_cast<std::int64_t>(cache.page_size) * row;
    float* base = static_cast<float*>(cache.data);  // [num_pages, 2, page_size, Hkv, D]
    for (std::int64_t t = 0; t < k.shape[0]; ++t) {
      if (slot[t] < 0) continue;  // a padding row
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
    PODSERVE_RETURN_IF_ERROR(
        check_attention_batch(op, q, cache, sequences, scale, out, DType::kF32));
    const std::int64_t num_q_heads = q.shape[1];
    cpu::PagedAttentionParams params;
    params.q = q.as<const float>();
    params.cache = static_cast<const float*>(cache.data);
    params.out = out.as<float>();
    params.num_q_heads = static_cast<std::int32_t>(num_q_heads);
    params.num_kv_heads = cache.num_kv_heads;
    params.head_dim = cache.head_dim;
    params.page_size = cache.page_size;
    params.scale = scale;
    const auto start = std::chrono::steady_clock::now();
    cpu::paged_attention_f32(params, sequences, scores_);
    attention_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return Status::Ok();
  }

  Result<double> take_attention_seconds() override {
    return std::exchange(attention_seconds_, 0.0);
  }

  Status sample(const TensorView& logits, const TensorView& rows, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_sample(logits, rows, out, DType::kF32));
    const std::int64_t vocab = logits.shape[1];
    const auto* params = static_cast<const SamplingRow*>(rows.data);  // [S]
    for (std::int64_t r = 0; r < logits.shape[0]; ++r) {
      SamplingParams sampling;
      sampling.temperature = params[r].temperature;
      sampling.top_p = params[r].top_p;
      sampling.seed = params[r].seed;
      out.as<std::int32_t>()[r] =
          sample_token(std::span<const float>(logits.as<const float>() + r * vocab,
                                              static_cast<std::size_t>(vocab)),
                       sampling, params[r].generated_index);
    }
    return Status::Ok();
  }

  Status gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                     const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_gather_rows(x, rows, out, DType::kF32));
    const std::int64_t cols = x.shape[1];
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::memcpy(out.as<float>() + static_cast<std::int64_t>(i) * cols,
                  x.as<const float>() + rows[i] * cols, cols * sizeof(float));
    }
    return Status::Ok();
  }

 private:
  static Status copy(std::string_view op, void* dst, const void* src, std::size_t bytes) {
    PODSERVE_RETURN_IF_ERROR(check_copy(op, dst, src, bytes));
    if (bytes > 0) std::memcpy(dst, src, bytes);
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

  std::vector<float> product_;            // matmul_add: x @ w^T before the add
  std::vector<float> split_k_, split_v_;  // rope_append: [T, Hkv * D] each
  double attention_seconds_ = 0.0;        // attention() wall time since the last take
  std::vector<float> scores_;             // attention scratch: one score per visible key
  std::vector<double> inv_freq_;          // rope: [D / 2]
  std::vector<float> cos_;                // rope: [D / 2] for one position
  std::vector<float> sin_;                // rope: [D / 2] for one position
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace podserve
