// The arithmetic of the sampling contract (kernels/sampler.h), shared by the CPU sampler and the
// CUDA sampling kernel so that both compute the same numbers from the same fp32 logits. Header
// only; host and device (no CUDA header: PODSERVE_HOST_DEVICE expands to __host__ __device__
// only under nvcc).
//
// For one row with temperature T > 0:
//   z_i    = (logit_i - max) / T                    (NaN logits take no part)
//   mass_i = floor(exp(z_i) * 2^40)                 (integer, so sums are exact in any order)
//   key_i  = order_key(z_i)                         (an unsigned key with the order of z)
//   nucleus (top_p < 1): tokens with key >= tau, tau the largest key with
//            sum(mass_j : key_j >= tau) >= floor(top_p * sum(mass))   (ties at tau all kept)
//   token  = argmax over the nucleus of z_i + gumbel(seed, generated_index, i), lowest id on ties
// The Gumbel-max draw samples exactly from softmax(z) restricted to the nucleus, and the noise
// is a pure function of (seed, generated_index, token id).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hash.h"

#if defined(__CUDACC__)
#define PODSERVE_HOST_DEVICE __host__ __device__
#else
#define PODSERVE_HOST_DEVICE
#endif

namespace podserve::sampling {

inline constexpr float kMassScale = 1099511627776.0f;  // 2^40: a mass is at most 2^40
// Above every value gumbel_noise() returns (-log(-log(1 - 2^-25)) = 17.33): a token whose
// z + kGumbelBound is below the best score seen cannot win the draw.
inline constexpr float kGumbelBound = 18.0f;

// The per-row part of the noise hash; sampling_noise() mixes in the token id.
PODSERVE_HOST_DEVICE inline std::uint64_t row_stream(std::uint64_t seed,
                                                     std::int32_t generated_index) {
  return splitmix64(splitmix64(seed) ^ static_cast<std::uint32_t>(generated_index));
}

// Standard Gumbel noise -log(-log(u)) for token `token`, u in (0, 1) from 24 hash bits.
PODSERVE_HOST_DEVICE inline float gumbel_noise(std::uint64_t row, std::int32_t token) {
  const std::uint64_t bits = splitmix64(row ^ static_cast<std::uint32_t>(token));
  const float u = (static_cast<float>(bits >> 40) + 0.5f) * 5.9604644775390625e-8f;  // 2^-24
  return -logf(-logf(u));
}

// Fixed-point probability mass of a scaled logit z <= 0 (the product is exact: a power of two).
PODSERVE_HOST_DEVICE inline std::uint64_t mass_of(float z) {
  return static_cast<std::uint64_t>(expf(z) * kMassScale);
}

// An unsigned key that orders like the float it came from (for non-NaN values).
PODSERVE_HOST_DEVICE inline std::uint32_t order_key(float z) {
#if defined(__CUDA_ARCH__)
  const std::uint32_t bits = __float_as_uint(z);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &z, sizeof(bits));
#endif
  return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
}

// The nucleus mass target for a row whose masses sum to `total`.
PODSERVE_HOST_DEVICE inline std::uint64_t nucleus_target(float top_p, std::uint64_t total) {
  return static_cast<std::uint64_t>(static_cast<double>(top_p) * static_cast<double>(total));
}

}  // namespace podserve::sampling
