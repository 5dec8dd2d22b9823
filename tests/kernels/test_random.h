// Seeded random inputs for the kernel tests. Every run draws a fresh seed (printed, and shown
// in failure messages through SCOPED_TRACE at the call site); set PODSERVE_TEST_SEED=<n> to
// replay a failing run.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace podserve::testing {

inline std::uint64_t test_seed() {
  if (const char* env = std::getenv("PODSERVE_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) | device();
}

inline std::string seed_trace(std::uint64_t seed) {
  std::cout << "[ seed     ] PODSERVE_TEST_SEED=" << seed << "\n";
  return "PODSERVE_TEST_SEED=" + std::to_string(seed);
}

inline std::vector<float> uniform_values(std::mt19937_64& rng, std::size_t n, float lo = -1.0f,
                                         float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(n);
  for (float& v : values) v = dist(rng);
  return values;
}

inline std::vector<float> nan_filled(std::size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

}  // namespace podserve::testing
