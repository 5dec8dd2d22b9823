// Counter-based hashing for reproducible randomness: the same inputs give the same bits on
// every rank and every run (random weights, sampling draws). Pure functions, thread-safe.
#pragma once

#include <cstdint>

namespace podserve {

// SplitMix64 finalizer: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace podserve
