// Host conversions between fp32 and the 16-bit float formats weights and activations use
// (bf16, IEEE fp16). Round-to-nearest-even on narrowing; NaN stays NaN. Pure functions.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>

#include "core/backend.h"
#include "core/status.h"

namespace podserve {

inline float bf16_to_f32(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

inline std::uint16_t f32_to_bf16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

float f16_to_f32(std::uint16_t bits);
std::uint16_t f32_to_f16(float value);

// Converts `count` packed elements of `dtype` (kF32, kBF16 or kF16) at `src` into `dst`.
Status convert_to_f32(const void* src, DType dtype, std::span<float> dst);

}  // namespace podserve
