#include "core/float_convert.h"

#include <cmath>
#include <limits>

namespace podserve {

float f16_to_f32(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1fu;
  const std::uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) {  // inf / NaN
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {  // zero / subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

std::uint16_t f32_to_f16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  if (std::isnan(value)) return static_cast<std::uint16_t>(sign | 0x7e00u);
  const float magnitude = std::fabs(value);
  if (magnitude >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (magnitude < 6.103515625e-05f) {  // below the smallest normal: subnormal steps of 2^-24
    const auto steps = static_cast<std::uint16_t>(std::nearbyint(magnitude * 16777216.0f));
    return static_cast<std::uint16_t>(sign | steps);
  }
  const std::uint32_t abs_bits = bits & 0x7fffffffu;
  const std::uint32_t rounding = 0xfffu + ((abs_bits >> 13) & 1u);
  const std::uint32_t rounded = abs_bits + rounding;
  return static_cast<std::uint16_t>(sign | (((rounded >> 13) - (112u << 10)) & 0x7fffu));
}

Status convert_to_f32(const void* src, DType dtype, std::span<float> dst) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst.data(), src, dst.size_bytes()); return Status::Ok();
    case DType::kBF16: {
      const auto* in = static_cast<const std::uint8_t*>(src);
      for (std::size_t i = 0; i < dst.size(); ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, in + 2 * i, 2);
        dst[i] = bf16_to_f32(bits);
      }
      return Status::Ok();
    }
    case DType::kF16: {
      const auto* in = static_cast<const std::uint8_t*>(src);
      for (std::size_t i = 0; i < dst.size(); ++i) {
        std::uint16_t bits;
        std::memcpy(&bits, in + 2 * i, 2);
        dst[i] = f16_to_f32(bits);
      }
      return Status::Ok();
    }
    case DType::kI32: return invalid_argument("convert_to_f32: int32 is not a float format");
  }
  return invalid_argument("convert_to_f32: unknown dtype");
}

}  // namespace podserve
