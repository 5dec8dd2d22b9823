// Shared pieces of podserve-kvtransfer-bench: options, result rows, timing helpers, output.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvtransfer/transport.h"

namespace podserve::bench {

struct BenchOptions {
  std::string backend = "ucx";  // ucx | nccl | staged | gpu (nccl and staged, then a summary)
  std::uint64_t min_bytes = 4096;
  std::uint64_t max_bytes = 64ull << 20;
  std::uint64_t page_bytes = 16384;  // scattered mode: one segment per page, random order
  int iterations = 50;               // samples per size (capped by a per-size byte budget)
  std::string csv_path;
  std::string target_memory = "transport";  // rank 1's buffer: "transport" or "user"
  bool peer_error_handling = true;          // UcxOptions::peer_error_handling
  // NCCL modes: 1 = one process drives GPU 0 and GPU 1 (grouped posts); 2 = one rank per GPU
  // under mpirun -np 2 (rank r on device r), each posting on its own without groups.
  int nccl_ranks = 1;
  // The two-process NCCL channel's chunk size (NcclChannelOptions::pack_chunk_bytes); 0: its
  // default (kNcclPackChunkBytes). The one-process mode sweeps chunk sizes itself.
  std::uint64_t pack_chunk_bytes = 0;
};

struct BenchRow {
  std::string backend;  // "ucx" / "nccl" / "staged"
  std::string path;     // UCX_TLS/target memory, "gpu0->gpu1/p2p/raw" (NCCL's own), ".../2proc/raw"
  std::string mode;     // "contiguous" or a page order ("scattered"; GPU: "shuffled" etc.)
  std::uint64_t bytes = 0;
  std::uint64_t segments = 0;
  double latency_us = 0.0;     // median of the samples
  double bandwidth_gbs = 0.0;  // bytes / median time
  double peak_gbs = 0.0;       // the same bytes by `baseline`, measured in the same run
  std::string baseline;        // memcpy, memcpyPeer, raw-nccl (contiguous), stages (D2H+memcpy+H2D)
};

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

inline double median(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples.empty() ? 0.0 : samples[samples.size() / 2];
}

// Samples per size: `iterations`, fewer for large messages (at most ~1 GiB moved per size, at
// least 5 samples).
inline int samples_for(const BenchOptions& options, std::uint64_t bytes) {
  const std::uint64_t budget = (1ull << 30) / std::max<std::uint64_t>(bytes, 1);
  return static_cast<int>(
      std::clamp<std::uint64_t>(budget, 5, static_cast<std::uint64_t>(options.iterations)));
}

// `bytes / page_bytes` whole pages, page p of the source to page p of the target, each side's
// pages in place order or shuffled (in a random order of its own).
inline std::vector<PutSegment> page_segments(std::uint64_t bytes, std::uint64_t page_bytes,
                                             bool shuffle_source, bool shuffle_target,
                                             std::mt19937_64& rng) {
  const std::uint64_t pages = bytes / page_bytes;
  const auto order = [&](bool shuffle) {
    std::vector<std::uint64_t> pages_in_order(pages);
    std::iota(pages_in_order.begin(), pages_in_order.end(), 0);
    if (shuffle) std::shuffle(pages_in_order.begin(), pages_in_order.end(), rng);
    return pages_in_order;
  };
  const std::vector<std::uint64_t> source = order(shuffle_source);
  const std::vector<std::uint64_t> target = order(shuffle_target);
  std::vector<PutSegment> segments;
  for (std::uint64_t page = 0; page < pages; ++page) {
    segments.push_back({source[page] * page_bytes, target[page] * page_bytes, page_bytes});
  }
  return segments;
}

// Prints the table and writes the CSV (when a path is set). Returns false when the CSV fails.
bool report(const BenchOptions& options, const std::vector<BenchRow>& rows);

}  // namespace podserve::bench
