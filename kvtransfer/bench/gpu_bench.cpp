#include "kvtransfer/bench/nccl_bench.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <numeric>
#include <random>
#include <string>

#include "kvtransfer/nccl_transport.h"

namespace podserve::bench {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

bool cuda_ok(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(error));
  return false;
}

// Median seconds of one GPU0 -> GPU1 send/recv of `segments`, both posted in one NCCL group.
double send_recv_seconds(NcclKvChannel& sender, NcclKvChannel& receiver, const void* source,
                         void* target, std::span<const PutSegment> segments, int samples) {
  std::vector<double> times;
  for (int sample = 0; sample <= samples; ++sample) {
    const auto start = Clock::now();
    if (!NcclKvChannel::group_start().ok()) return -1.0;
    auto sent = sender.send_segments(1, source, segments, nullptr, kTimeout);
    auto received = receiver.recv_segments(0, target, segments, nullptr, kTimeout);
    if (!NcclKvChannel::group_end().ok() || !sent.ok() || !received.ok()) return -1.0;
    TransferState send_state = TransferState::kPending;
    TransferState recv_state = TransferState::kPending;
    while (send_state == TransferState::kPending || recv_state == TransferState::kPending) {
      send_state = sender.poll(*sent);
      recv_state = receiver.poll(*received);
    }
    sender.release(*sent);
    receiver.release(*received);
    if (send_state != TransferState::kDone || recv_state != TransferState::kDone) return -1.0;
    if (sample > 0) times.push_back(seconds_since(start));
  }
  return median(times);
}

// Median seconds of cudaMemcpyPeer of the same segments (the link's peak in this run).
double memcpy_peer_seconds(const void* source, void* target, std::span<const PutSegment> segments,
                           int samples) {
  std::vector<double> times;
  for (int sample = 0; sample <= samples; ++sample) {
    const auto start = Clock::now();
    for (const PutSegment& segment : segments) {
      cudaMemcpyPeerAsync(static_cast<std::uint8_t*>(target) + segment.remote_offset, 1,
                          static_cast<const std::uint8_t*>(source) + segment.local_offset, 0,
                          segment.bytes, nullptr);
    }
    if (!cuda_ok(cudaDeviceSynchronize(), "cudaMemcpyPeer")) return -1.0;
    if (sample > 0) times.push_back(seconds_since(start));
  }
  return median(times);
}

}  // namespace

int run_nccl_bench(const BenchOptions& options, std::vector<BenchRow>& rows) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    std::fprintf(stderr, "--backend nccl needs 2 CUDA devices, found %d\n", devices);
    return 2;
  }
  const std::vector<int> device_ids = {0, 1};
  auto channels = NcclKvChannel::create_local(device_ids);
  if (!channels.ok()) {
    std::fprintf(stderr, "NCCL init: %s\n", channels.status().to_string().c_str());
    return 1;
  }
  void* source = nullptr;
  void* target = nullptr;
  int can_access = 0;
  if (!cuda_ok(cudaSetDevice(0), "cudaSetDevice") ||
      !cuda_ok(cudaMalloc(&source, options.max_bytes), "cudaMalloc") ||
      !cuda_ok(cudaMemset(source, 1, options.max_bytes), "cudaMemset") ||
      !cuda_ok(cudaDeviceCanAccessPeer(&can_access, 0, 1), "cudaDeviceCanAccessPeer")) {
    return 1;
  }
  if (can_access) cudaDeviceEnablePeerAccess(1, 0);
  if (!cuda_ok(cudaSetDevice(1), "cudaSetDevice") ||
      !cuda_ok(cudaMalloc(&target, options.max_bytes), "cudaMalloc")) {
    return 1;
  }
  if (can_access) cudaDeviceEnablePeerAccess(0, 0);
  cudaSetDevice(0);
  const std::string path = std::string("gpu0->gpu1") + (can_access ? "/p2p" : "/no-p2p");

  std::mt19937_64 rng(7);
  int exit_code = 0;
  for (std::uint64_t bytes = options.min_bytes; bytes <= options.max_bytes && exit_code == 0;
       bytes *= 4) {
    const int samples = samples_for(options, bytes);
    std::vector<std::pair<std::string, std::vector<PutSegment>>> modes;
    modes.emplace_back("contiguous", std::vector<PutSegment>{{0, 0, bytes}});
    if (bytes >= 2 * options.page_bytes) {
      const std::uint64_t pages = bytes / options.page_bytes;
      std::vector<std::uint64_t> order(pages);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<PutSegment> segments;
      for (std::uint64_t page = 0; page < pages; ++page) {
        segments.push_back(
            {page * options.page_bytes, order[page] * options.page_bytes, options.page_bytes});
      }
      modes.emplace_back("scattered", std::move(segments));
    }
    for (const auto& [mode, segments] : modes) {
      const double nccl =
          send_recv_seconds(*(*channels)[0], *(*channels)[1], source, target, segments, samples);
      const double peer = memcpy_peer_seconds(source, target, segments, samples);
      if (nccl < 0 || peer < 0) {
        std::fprintf(stderr, "NCCL or cudaMemcpyPeer failed at %llu bytes\n",
                     static_cast<unsigned long long>(bytes));
        exit_code = 1;
        break;
      }
      rows.push_back({"nccl", path, mode, bytes, segments.size(), nccl * 1e6,
                      static_cast<double>(bytes) / nccl / 1e9,
                      static_cast<double>(bytes) / peer / 1e9});
    }
  }
  cudaSetDevice(1);
  cudaFree(target);
  cudaSetDevice(0);
  cudaFree(source);
  return exit_code;
}

}  // namespace podserve::bench
