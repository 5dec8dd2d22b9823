#include "core/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace podserve {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

std::string_view to_string(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "fp32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "fp16";
    case DType::kI32: return "int32";
  }
  return "?";
}

std::string_view to_string(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu: return "cpu";
    case BackendKind::kCuda: return "cuda";
  }
  return "?";
}

std::string_view to_string(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::kCpu: return "cpu";
    case AttentionKind::kPod: return "pod";
    case AttentionKind::kSerial: return "serial";
    case AttentionKind::kStreams: return "streams";
  }
  return "unknown";
}

TensorView make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = static_cast<std::int32_t>(shape.size());
  std::int32_t i = 0;
  for (auto d : shape) v.shape[i++] = d;
  return v;
}

Result<DeviceBuffer> Backend::allocate_host(std::size_t bytes) {
  void* data = std::malloc(std::max<std::size_t>(bytes, 1));
  if (data == nullptr) return resource_exhausted("allocate_host: out of host memory");
  return DeviceBuffer(data, bytes, [](void* p) { std::free(p); });
}

Status Backend::stage_to_device(void* dst, const void* src_staged, std::size_t bytes) {
  return copy_to_device(dst, src_staged, bytes);
}

Status Backend::stage_to_host(void* dst_staged, const void* src, std::size_t bytes) {
  return copy_to_host(dst_staged, src, bytes);
}

Status Backend::rope_append_with_frequencies(const TensorView&, const TensorView&,
                                             const TensorView&, const TensorView&,
                                             const KvCacheView&, const TensorView&) {
  return unimplemented(fmt::format(
      "backend {}: rope_append_with_frequencies (scaled RoPE) is not implemented", name()));
}

Status Backend::prepare_attention(std::span<const AttentionSequence> sequences,
                                  const KvCacheView& cache_shape,
                                  const AttentionBatchOptions& options) {
  if (options.layout_seqs != 0)
    return unimplemented("prepare_attention: fixed layouts (CUDA graphs) need the CUDA backend");
  prepared_sequences_.assign(sequences.begin(), sequences.end());
  prepared_page_tables_.resize(sequences.size());
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    prepared_page_tables_[i].assign(sequences[i].page_table.begin(), sequences[i].page_table.end());
    prepared_sequences_[i].page_table = prepared_page_tables_[i];
  }
  (void)cache_shape;  // attention() gets the cache with each call
  return Status::Ok();
}

Status Backend::run_prepared_attention(const TensorView& q, const KvCacheView& cache, float scale,
                                       AttentionKind kind, const TensorView& out) {
  return attention(q, cache, prepared_sequences_, scale, kind, out);
}

Result<std::unique_ptr<BackendGraph>> Backend::capture(const std::function<Status()>& body) {
  (void)body;
  return unimplemented("capture: this backend has no graphs");
}

}  // namespace podserve
