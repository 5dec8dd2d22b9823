// Segment patterns (and a printed fresh seed) shared by the kvtransfer tests: each names a region
// size and a generator of segments whose remote ranges never overlap, so the expected target is the
// poisoned target with every segment copied in.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "kvtransfer/transport.h"

namespace podserve::testing {

// Progresses the target (when given) and the initiator with short sleeps until transfer `id` is
// final; kPending when `limit` passed first.
inline TransferState wait_final(KvTransport& initiator, KvTransport* target, std::uint64_t id,
                                std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up) {
    if (target != nullptr) target->progress();
    initiator.progress();
    const TransferState state = initiator.poll(id);
    if (state != TransferState::kPending) return state;
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  return TransferState::kPending;
}

// Progresses both sides for `duration` (lets any stray write land).
inline void progress_both(KvTransport& initiator, KvTransport& target,
                          std::chrono::milliseconds duration) {
  const auto until = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < until) {
    target.progress();
    initiator.progress();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// The UCX test binaries' own flags (gtest's already removed): --ucx-tls=LIST sets UCX_TLS;
// returns false when --ucx-peer-errors=0 turns peer error handling off.
inline bool apply_ucx_test_flags(int argc, char** argv) {
  bool peer_error_handling = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--ucx-tls=")) setenv("UCX_TLS", arg.substr(10).c_str(), 1);
    if (arg == "--ucx-peer-errors=0") peer_error_handling = false;
  }
  return peer_error_handling;
}

// A fresh random seed, printed so a failing run can be reproduced.
inline std::uint64_t fresh_seed() {
  const std::uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

struct SegmentPattern {
  std::string name;
  std::uint64_t region_bytes = 0;  // both the source and the target region
  std::vector<PutSegment> (*generate)(std::mt19937_64& rng) = nullptr;
};

inline constexpr std::uint64_t kPageBytes = 16384;

// `count` distinct page indices out of `pages`, in random order.
inline std::vector<std::uint64_t> random_pages(std::mt19937_64& rng, std::uint64_t pages,
                                               std::uint64_t count) {
  std::vector<std::uint64_t> all(pages);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(count);
  return all;
}

inline const std::vector<SegmentPattern>& segment_patterns() {
  static const std::vector<SegmentPattern> patterns = {
      {"one_byte", 4096,
       [](std::mt19937_64&) {
         return std::vector<PutSegment>{{17, 1000, 1}};
       }},
      {"single_page", 1 << 20,
       [](std::mt19937_64&) {
         return std::vector<PutSegment>{{0, 3 * kPageBytes, kPageBytes}};
       }},
      {"scattered_pages", 4 << 20,
       [](std::mt19937_64& rng) {
         const auto local = random_pages(rng, 256, 100);
         const auto remote = random_pages(rng, 256, 100);
         std::vector<PutSegment> segments;
         for (std::size_t i = 0; i < local.size(); ++i) {
           segments.push_back({local[i] * kPageBytes, remote[i] * kPageBytes, kPageBytes});
         }
         return segments;
       }},
      {"in_order_to_scattered", 4 << 20,
       [](std::mt19937_64& rng) {
         // Pages 5.. in order on the sender (sent in place), shuffled on the receiver.
         const auto remote = random_pages(rng, 256, 100);
         std::vector<PutSegment> segments;
         for (std::size_t i = 0; i < remote.size(); ++i) {
           segments.push_back({(5 + i) * kPageBytes, remote[i] * kPageBytes, kPageBytes});
         }
         return segments;
       }},
      {"scattered_to_in_order", 4 << 20,
       [](std::mt19937_64& rng) {
         // Shuffled on the sender, pages 7.. in order on the receiver (received in place).
         const auto local = random_pages(rng, 256, 100);
         std::vector<PutSegment> segments;
         for (std::size_t i = 0; i < local.size(); ++i) {
           segments.push_back({local[i] * kPageBytes, (7 + i) * kPageBytes, kPageBytes});
         }
         return segments;
       }},
      {"adjacent_runs", 4 << 20,
       [](std::mt19937_64& rng) {
         // Runs of 1..8 pages adjacent on both sides (coalesced), separated by gaps.
         std::vector<PutSegment> segments;
         std::uint64_t local_page = 0;
         std::uint64_t remote_page = 1;
         while (remote_page + 8 < 256 && local_page + 8 < 256) {
           const std::uint64_t run = 1 + rng() % 8;
           for (std::uint64_t i = 0; i < run; ++i) {
             segments.push_back(
                 {(local_page + i) * kPageBytes, (remote_page + i) * kPageBytes, kPageBytes});
           }
           local_page += run + rng() % 3;
           remote_page += run + 1 + rng() % 3;
         }
         return segments;
       }},
      {"tiny_unaligned", 1 << 20,
       [](std::mt19937_64& rng) {
         // 500 segments of 1..37 bytes at odd offsets inside distinct 64-byte slots.
         const auto slots = random_pages(rng, (1 << 20) / 64, 500);
         std::vector<PutSegment> segments;
         for (std::uint64_t slot : slots) {
           const std::uint64_t bytes = 1 + rng() % 37;
           segments.push_back({rng() % ((1 << 20) - 64), slot * 64 + rng() % (64 - bytes), bytes});
         }
         return segments;
       }},
      {"large_64mib", (64ull << 20) + 8192,
       [](std::mt19937_64&) {
         return std::vector<PutSegment>{{4099, 4097, 64ull << 20}};
       }},
  };
  return patterns;
}

inline std::vector<std::uint8_t> random_bytes(std::mt19937_64& rng, std::uint64_t bytes) {
  std::vector<std::uint8_t> out(bytes);
  for (std::uint64_t i = 0; i < bytes; i += 8) {
    const std::uint64_t word = rng();
    std::memcpy(out.data() + i, &word, std::min<std::uint64_t>(8, bytes - i));
  }
  return out;
}

// The target after the transfer: `poisoned` with every segment of `source` copied in.
inline std::vector<std::uint8_t> expected_target(std::span<const std::uint8_t> poisoned,
                                                 std::span<const std::uint8_t> source,
                                                 std::span<const PutSegment> segments) {
  std::vector<std::uint8_t> expected(poisoned.begin(), poisoned.end());
  for (const PutSegment& segment : segments) {
    std::memcpy(expected.data() + segment.remote_offset, source.data() + segment.local_offset,
                segment.bytes);
  }
  return expected;
}

// Index of the first differing byte, or -1.
inline std::int64_t first_difference(std::span<const std::uint8_t> a,
                                     std::span<const std::uint8_t> b) {
  const auto mismatch = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return mismatch.first == a.end() && mismatch.second == b.end() ? -1 : mismatch.first - a.begin();
}

}  // namespace podserve::testing
