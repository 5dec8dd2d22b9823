#include "core/backend.h"

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

}  // namespace podserve
