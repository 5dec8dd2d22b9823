#include "kvtransfer/bench/gpu_bench.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <string>

#include "core/wire.h"
#include "kvtransfer/bench/mpi_exchange.h"
#include "kvtransfer/cuda_ipc_transport.h"
#include "kvtransfer/host_staged_transport.h"
#include "kvtransfer/nccl_transport.h"
#include "kvtransfer/ucx_transport.h"

namespace podserve::bench {
namespace {

constexpr auto kTimeout = std::chrono::seconds(30);
// Shared by every mode and both processes of the two-process one: the source's random bytes and
// the page shuffle (the same segment lists on both ranks, and the same as one process's).
constexpr std::uint64_t kSourceSeed = 11;
constexpr std::uint64_t kShuffleSeed = 7;
// Two processes: runs before each measurement (the first connects NCCL to its peer and grows the
// staging buffers), and the fewest samples of a size.
constexpr int kTwoProcessWarmups = 2;
constexpr int kTwoProcessMinSamples = 10;
// Chunk sizes tried besides kNcclPackChunkBytes on the shuffled pages; the last one is larger
// than any message (one chunk: gather, send, scatter one after another).
constexpr std::uint64_t kSweptChunkBytes[] = {4ull << 20, 8ull << 20, 32ull << 20, 64ull << 20,
                                              1ull << 62};

// Row path suffix of a swept chunk size: "/packed-c8M", "/packed-single".
std::string chunk_suffix(std::uint64_t chunk_bytes) {
  if (chunk_bytes == kSweptChunkBytes[std::size(kSweptChunkBytes) - 1]) return "/packed-single";
  return "/packed-c" + std::to_string(chunk_bytes >> 20) + "M";
}

bool cuda_ok(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(error));
  return false;
}

bool nccl_ok(ncclResult_t result, const char* what) {
  if (result == ncclSuccess) return true;
  std::fprintf(stderr, "%s: %s\n", what, ncclGetErrorString(result));
  return false;
}

bool status_ok(const Status& status, const char* what) {
  if (status.ok()) return true;
  std::fprintf(stderr, "%s: %s\n", what, status.to_string().c_str());
  return false;
}

// Median seconds of `sample` (false: it failed, and so does the measurement: -1). Sample 0
// warms up.
double median_seconds(int samples, const std::function<bool()>& sample) {
  std::vector<double> times;
  for (int i = 0; i <= samples; ++i) {
    const auto start = Clock::now();
    if (!sample()) return -1.0;
    if (i > 0) times.push_back(seconds_since(start));
  }
  return median(times);
}

double gbs(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

// `bytes` random bytes from `seed`: the source of every mode, which a receiver in another process
// regenerates to check what arrived.
std::vector<std::uint8_t> random_bytes(std::uint64_t bytes, std::uint64_t seed) {
  std::vector<std::uint8_t> random(bytes);
  std::mt19937_64 rng(seed);
  for (std::uint64_t i = 0; i < bytes; i += 8) {
    const std::uint64_t word = rng();
    std::memcpy(random.data() + i, &word, std::min<std::uint64_t>(8, bytes - i));
  }
  return random;
}

// True when `arrived` (the target from offset 0) holds every segment of `source`.
bool segments_match(std::span<const std::uint8_t> arrived, std::span<const std::uint8_t> source,
                    std::span<const PutSegment> segments) {
  for (const PutSegment& segment : segments) {
    if (std::memcmp(arrived.data() + segment.remote_offset, source.data() + segment.local_offset,
                    segment.bytes) != 0) {
      std::fprintf(stderr, "target differs from the source in [%llu, +%llu)\n",
                   static_cast<unsigned long long>(segment.remote_offset),
                   static_cast<unsigned long long>(segment.bytes));
      return false;
    }
  }
  return true;
}

// The end of the target range the segments write.
std::uint64_t target_end(std::span<const PutSegment> segments) {
  std::uint64_t end = 0;
  for (const PutSegment& segment : segments) {
    end = std::max(end, segment.remote_offset + segment.bytes);
  }
  return end;
}

// A page order measured beside one contiguous segment: which sides hold their pages shuffled.
struct PageOrder {
  const char* mode;
  bool shuffle_source;
  bool shuffle_target;
};
// The NCCL channel: both sides shuffled (gather and scatter kernels), and one side in order,
// which moves the message in place (only the other side's kernel runs).
constexpr PageOrder kChannelOrders[] = {
    {"shuffled", true, true}, {"scatter", false, true}, {"gather", true, false}};
// Host staging copies page by page whatever the order: the target's pages shuffled.
constexpr PageOrder kStagedOrders[] = {{"scatter", false, true}};

// Per size: the contiguous segment and, from two pages up, `orders`.
std::vector<std::pair<std::string, std::vector<PutSegment>>> modes_for(
    const BenchOptions& options, std::uint64_t bytes, std::span<const PageOrder> orders,
    std::mt19937_64& rng) {
  std::vector<std::pair<std::string, std::vector<PutSegment>>> modes;
  modes.emplace_back("contiguous", std::vector<PutSegment>{{0, 0, bytes}});
  if (bytes < 2 * options.page_bytes) return modes;
  for (const PageOrder& order : orders) {
    modes.emplace_back(order.mode, page_segments(bytes, options.page_bytes, order.shuffle_source,
                                                 order.shuffle_target, rng));
  }
  return modes;
}

// GPU 0's source (random bytes, kept on the host too for checking) and GPU `target_device`'s
// target, `bytes` each, with a non-blocking stream on each device.
class GpuBuffers {
 public:
  ~GpuBuffers() {
    if (source_ != nullptr) {
      cudaSetDevice(0);
      cudaFree(source_);
      cudaStreamDestroy(source_stream_);
    }
    if (target_ != nullptr) {
      cudaSetDevice(target_device_);
      cudaFree(target_);
      cudaStreamDestroy(target_stream_);
    }
    cudaSetDevice(0);
  }

  bool init(std::uint64_t bytes, int target_device) {
    target_device_ = target_device;
    host_source_ = random_bytes(bytes, kSourceSeed);
    return cuda_ok(cudaSetDevice(0), "cudaSetDevice(0)") &&
           cuda_ok(cudaMalloc(&source_, bytes), "cudaMalloc(source)") &&
           cuda_ok(cudaMemcpy(source_, host_source_.data(), bytes, cudaMemcpyHostToDevice),
                   "cudaMemcpy(source)") &&
           cuda_ok(cudaStreamCreateWithFlags(&source_stream_, cudaStreamNonBlocking),
                   "cudaStreamCreate") &&
           cuda_ok(cudaSetDevice(target_device), "cudaSetDevice(target)") &&
           cuda_ok(cudaMalloc(&target_, bytes), "cudaMalloc(target)") &&
           cuda_ok(cudaStreamCreateWithFlags(&target_stream_, cudaStreamNonBlocking),
                   "cudaStreamCreate") &&
           cuda_ok(cudaSetDevice(0), "cudaSetDevice(0)");
  }

  // Clears the target, for the check after a measurement.
  bool clear_target(std::uint64_t bytes) {
    return cuda_ok(cudaSetDevice(target_device_), "cudaSetDevice") &&
           cuda_ok(cudaMemset(target_, 0x5A, bytes), "cudaMemset(target)") &&
           cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }

  // True when the target holds every segment of the source (each measurement rewrites the same
  // bytes, so this checks the last one).
  bool target_matches(std::span<const PutSegment> segments) {
    std::vector<std::uint8_t> arrived(target_end(segments));
    return cuda_ok(cudaSetDevice(target_device_), "cudaSetDevice") &&
           cuda_ok(cudaMemcpy(arrived.data(), target_, arrived.size(), cudaMemcpyDeviceToHost),
                   "cudaMemcpy(check)") &&
           segments_match(arrived, host_source_, segments);
  }

  std::uint8_t* source() const { return static_cast<std::uint8_t*>(source_); }
  std::uint8_t* target() const { return static_cast<std::uint8_t*>(target_); }
  cudaStream_t source_stream() const { return source_stream_; }
  cudaStream_t target_stream() const { return target_stream_; }

 private:
  int target_device_ = 1;
  std::vector<std::uint8_t> host_source_;
  void* source_ = nullptr;
  void* target_ = nullptr;
  cudaStream_t source_stream_ = nullptr;
  cudaStream_t target_stream_ = nullptr;
};

// NCCL may use NVLink multicast (NVLS) on NVSwitch hosts; the shared GPU machines must keep it
// off (NCCL_NVLS_ENABLE=0), and point-to-point never needs it.
void keep_nvls_off(bool announce) {
  if (std::getenv("NCCL_NVLS_ENABLE") == nullptr) setenv("NCCL_NVLS_ENABLE", "0", 1);
  if (announce) std::printf("NCCL_NVLS_ENABLE=%s\n", std::getenv("NCCL_NVLS_ENABLE"));
}

}  // namespace

int run_nccl_bench(const BenchOptions& options, std::vector<BenchRow>& rows) {
  keep_nvls_off(true);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    std::fprintf(stderr, "--backend nccl needs 2 CUDA devices, found %d\n", devices);
    return 2;
  }
  GpuBuffers buffers;
  if (!buffers.init(options.max_bytes, 1)) return 1;
  int can_access = 0;
  if (!cuda_ok(cudaDeviceCanAccessPeer(&can_access, 0, 1), "cudaDeviceCanAccessPeer")) return 1;
  for (int device = 0; device < 2 && can_access; ++device) {
    if (!cuda_ok(cudaSetDevice(device), "cudaSetDevice")) return 1;
    const cudaError_t enabled = cudaDeviceEnablePeerAccess(1 - device, 0);
    if (enabled == cudaErrorPeerAccessAlreadyEnabled) {
      cudaGetLastError();  // not an error here; clear it
    } else if (!cuda_ok(enabled, "cudaDeviceEnablePeerAccess")) {
      return 1;
    }
  }
  if (!cuda_ok(cudaSetDevice(0), "cudaSetDevice")) return 1;
  const std::vector<int> device_ids = {0, 1};
  auto channels = NcclKvChannel::create_local(device_ids);
  if (!status_ok(channels.status(), "NcclKvChannel::create_local")) return 1;
  NcclKvChannel& sender = *(*channels)[0];
  NcclKvChannel& receiver = *(*channels)[1];
  // NCCL's own figure: its communicators, no channel in between.
  ncclComm_t comms[2] = {nullptr, nullptr};
  if (!nccl_ok(ncclCommInitAll(comms, 2, device_ids.data()), "ncclCommInitAll")) return 1;
  const std::string path = std::string("gpu0->gpu1") + (can_access ? "/p2p" : "/no-p2p");

  const auto raw_send_recv = [&](std::uint64_t bytes) {
    return nccl_ok(ncclGroupStart(), "ncclGroupStart") &&
           nccl_ok(
               ncclSend(buffers.source(), bytes, ncclUint8, 1, comms[0], buffers.source_stream()),
               "ncclSend") &&
           nccl_ok(
               ncclRecv(buffers.target(), bytes, ncclUint8, 0, comms[1], buffers.target_stream()),
               "ncclRecv") &&
           nccl_ok(ncclGroupEnd(), "ncclGroupEnd") &&
           cuda_ok(cudaStreamSynchronize(buffers.source_stream()), "sync") &&
           cuda_ok(cudaStreamSynchronize(buffers.target_stream()), "sync");
  };
  const auto memcpy_peer = [&](std::uint64_t bytes) {
    return cuda_ok(cudaMemcpyPeerAsync(buffers.target(), 1, buffers.source(), 0, bytes,
                                       buffers.source_stream()),
                   "cudaMemcpyPeerAsync") &&
           cuda_ok(cudaStreamSynchronize(buffers.source_stream()), "sync");
  };
  const auto channel_send_recv = [&](NcclKvChannel& from, NcclKvChannel& to,
                                     std::span<const PutSegment> segments) {
    if (!status_ok(NcclKvChannel::group_start(), "group_start")) return false;
    auto sent =
        from.send_segments(1, buffers.source(), segments, buffers.source_stream(), kTimeout);
    auto received =
        to.recv_segments(0, buffers.target(), segments, buffers.target_stream(), kTimeout);
    if (!status_ok(NcclKvChannel::group_end(), "group_end") ||
        !status_ok(sent.status(), "send_segments") ||
        !status_ok(received.status(), "recv_segments")) {
      return false;
    }
    TransferState send_state = TransferState::kPending;
    TransferState recv_state = TransferState::kPending;
    while (send_state == TransferState::kPending || recv_state == TransferState::kPending) {
      send_state = from.poll(*sent);
      recv_state = to.poll(*received);
    }
    from.release(*sent);
    to.release(*received);
    return send_state == TransferState::kDone && recv_state == TransferState::kDone;
  };
  // `segments` through `from` -> `to`, checked, as a row against NCCL's own figure `raw`.
  const auto measure_channel = [&](NcclKvChannel& from, NcclKvChannel& to, const std::string& mode,
                                   std::span<const PutSegment> segments, std::uint64_t bytes,
                                   double raw, const std::string& path_suffix) {
    if (!buffers.clear_target(bytes)) return false;
    const double channel = median_seconds(samples_for(options, bytes),
                                          [&] { return channel_send_recv(from, to, segments); });
    if (channel < 0 || !buffers.target_matches(segments)) {
      std::fprintf(stderr, "NcclKvChannel %s%s failed at %llu bytes\n", mode.c_str(),
                   path_suffix.c_str(), static_cast<unsigned long long>(bytes));
      return false;
    }
    rows.push_back({"nccl", path + path_suffix, mode, bytes, segments.size(), channel * 1e6,
                    gbs(bytes, channel), gbs(bytes, raw), "raw-nccl"});
    return true;
  };

  std::mt19937_64 rng(kShuffleSeed);
  int exit_code = 0;
  struct Shuffled {
    std::uint64_t bytes = 0;
    std::vector<PutSegment> segments;
    double raw_seconds = 0;  // NCCL's own figure of the same bytes
  };
  std::vector<Shuffled> shuffled;  // per size, for the chunk sweep
  for (std::uint64_t bytes = options.min_bytes; bytes <= options.max_bytes && exit_code == 0;
       bytes *= 4) {
    const int samples = samples_for(options, bytes);
    const double raw = median_seconds(samples, [&] { return raw_send_recv(bytes); });
    const double peer = median_seconds(samples, [&] { return memcpy_peer(bytes); });
    if (raw < 0 || peer < 0) {
      exit_code = 1;
      break;
    }
    rows.push_back({"nccl", path + "/raw", "contiguous", bytes, 1, raw * 1e6, gbs(bytes, raw),
                    gbs(bytes, peer), "memcpyPeer"});
    for (const auto& [mode, segments] : modes_for(options, bytes, kChannelOrders, rng)) {
      if (!measure_channel(sender, receiver, mode, segments, bytes, raw,
                           mode == "contiguous" ? "/channel" : "/channel-packed")) {
        exit_code = 1;
        break;
      }
      if (mode == "shuffled") shuffled.push_back({bytes, segments, raw});
    }
  }
  // The same shuffled pages with other chunk sizes (fresh channels each; "single": one message,
  // no pipeline), where the cut differs from the default's.
  for (const std::uint64_t chunk_bytes : kSweptChunkBytes) {
    if (exit_code != 0) break;
    auto swept = NcclKvChannel::create_local(device_ids, {.pack_chunk_bytes = chunk_bytes});
    if (!status_ok(swept.status(), "NcclKvChannel::create_local")) {
      exit_code = 1;
      break;
    }
    for (const Shuffled& pages : shuffled) {
      if (pages.bytes < 2 * std::min(chunk_bytes, kNcclPackChunkBytes)) continue;
      if (!measure_channel(*(*swept)[0], *(*swept)[1], "shuffled", pages.segments, pages.bytes,
                           pages.raw_seconds, chunk_suffix(chunk_bytes))) {
        exit_code = 1;
        break;
      }
    }
  }
  ncclCommDestroy(comms[0]);
  ncclCommDestroy(comms[1]);
  return exit_code;
}

int run_staged_bench(const BenchOptions& options, std::vector<BenchRow>& rows) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) {
    std::fprintf(stderr, "--backend staged needs a CUDA device\n");
    return 2;
  }
  const int target_device = devices > 1 ? 1 : 0;
  GpuBuffers buffers;
  if (!buffers.init(options.max_bytes, target_device)) return 1;

  // Two transports in this process, as a prefill and a decode rank would each hold one.
  UcxOptions ucx_options;
  ucx_options.peer_error_handling = options.peer_error_handling;
  std::unique_ptr<KvTransport> transports[2];
  for (int side = 0; side < 2; ++side) {
    auto ucx = make_ucx_transport(ucx_options);
    if (!status_ok(ucx.status(), "make_ucx_transport")) return 1;
    auto transport = make_transport_for(std::move(*ucx), MemoryKind::kDevice,
                                        {.cuda_device = side == 0 ? 0 : target_device});
    if (!status_ok(transport.status(), "make_transport_for")) return 1;
    transports[side] = std::move(*transport);
  }
  KvTransport& initiator = *transports[0];
  KvTransport& target = *transports[1];
  if (!status_ok(initiator.connect(1, target.local_address()), "connect") ||
      !status_ok(target.connect(0, initiator.local_address()), "connect")) {
    return 1;
  }
  auto local = initiator.register_region(buffers.source(), options.max_bytes, MemoryKind::kDevice);
  auto target_region =
      target.register_region(buffers.target(), options.max_bytes, MemoryKind::kDevice);
  if (!status_ok(local.status(), "register_region(source)") ||
      !status_ok(target_region.status(), "register_region(target)")) {
    return 1;
  }
  auto descriptor = target.region_descriptor(*target_region);
  if (!status_ok(descriptor.status(), "region_descriptor")) return 1;
  auto remote = initiator.add_remote_region(1, *descriptor);
  if (!status_ok(remote.status(), "add_remote_region")) return 1;

  // The stages on their own: device -> pinned host, host -> host, pinned host -> device.
  std::uint8_t* host_out = nullptr;
  std::uint8_t* host_in = nullptr;
  if (!cuda_ok(cudaMallocHost(reinterpret_cast<void**>(&host_out), options.max_bytes),
               "cudaMallocHost") ||
      !cuda_ok(cudaMallocHost(reinterpret_cast<void**>(&host_in), options.max_bytes),
               "cudaMallocHost")) {
    return 1;
  }
  const char* tls = std::getenv("UCX_TLS");
  const std::string path = initiator.name() + "/" + (tls != nullptr ? tls : "default") +
                           "/gpu0->gpu" + std::to_string(target_device);
  std::printf("host-staged UCX: %s\n", path.c_str());

  const auto staged_put = [&](std::span<const PutSegment> segments) {
    auto id = initiator.post_put(*local, *remote, segments, kTimeout);
    if (!status_ok(id.status(), "post_put")) return false;
    TransferState state = TransferState::kPending;
    while (state == TransferState::kPending) {
      target.progress();
      initiator.progress();
      state = initiator.poll(*id);
    }
    initiator.release(*id);
    if (state != TransferState::kDone) {
      std::fprintf(stderr, "staged transfer ended %s\n", std::string(to_string(state)).c_str());
      return false;
    }
    return status_ok(target.deliver(*target_region, segments), "deliver");
  };
  const auto device_to_host = [&](std::span<const PutSegment> segments) {
    for (const PutSegment& segment : segments) {
      if (!cuda_ok(cudaMemcpyAsync(host_out + segment.local_offset,
                                   buffers.source() + segment.local_offset, segment.bytes,
                                   cudaMemcpyDeviceToHost, buffers.source_stream()),
                   "cudaMemcpyAsync(D2H)")) {
        return false;
      }
    }
    return cuda_ok(cudaStreamSynchronize(buffers.source_stream()), "sync");
  };
  const auto host_to_host = [&](std::span<const PutSegment> segments) {
    for (const PutSegment& segment : segments) {
      std::memcpy(host_in + segment.remote_offset, host_out + segment.local_offset, segment.bytes);
    }
    return true;
  };
  const auto host_to_device = [&](std::span<const PutSegment> segments) {
    for (const PutSegment& segment : segments) {
      if (!cuda_ok(cudaMemcpyAsync(buffers.target() + segment.remote_offset,
                                   host_in + segment.remote_offset, segment.bytes,
                                   cudaMemcpyHostToDevice, buffers.target_stream()),
                   "cudaMemcpyAsync(H2D)")) {
        return false;
      }
    }
    return cuda_ok(cudaStreamSynchronize(buffers.target_stream()), "sync");
  };

  std::mt19937_64 rng(kShuffleSeed);
  int exit_code = 0;
  for (std::uint64_t bytes = options.min_bytes; bytes <= options.max_bytes && exit_code == 0;
       bytes *= 4) {
    const int samples = samples_for(options, bytes);
    for (const auto& [mode, segments] : modes_for(options, bytes, kStagedOrders, rng)) {
      if (!buffers.clear_target(bytes)) return 1;
      const double staged = median_seconds(samples, [&] { return staged_put(segments); });
      if (staged < 0 || !buffers.target_matches(segments)) {
        std::fprintf(stderr, "host-staged %s failed at %llu bytes\n", mode.c_str(),
                     static_cast<unsigned long long>(bytes));
        exit_code = 1;
        break;
      }
      const double d2h = median_seconds(samples, [&] { return device_to_host(segments); });
      const double h2h = median_seconds(samples, [&] { return host_to_host(segments); });
      const double h2d = median_seconds(samples, [&] { return host_to_device(segments); });
      if (d2h < 0 || h2d < 0) {
        exit_code = 1;
        break;
      }
      std::printf(
          "stages %-10s %10llu bytes: D2H %.2f GB/s, host memcpy %.2f GB/s, H2D %.2f GB/s\n",
          mode.c_str(), static_cast<unsigned long long>(bytes), gbs(bytes, d2h), gbs(bytes, h2h),
          gbs(bytes, h2d));
      rows.push_back({"staged", path, mode, bytes, segments.size(), staged * 1e6,
                      gbs(bytes, staged), gbs(bytes, d2h + h2h + h2d), "stages"});
    }
  }
  cudaFreeHost(host_out);
  cudaFreeHost(host_in);
  return exit_code;
}

namespace {

// True on every rank when `ok` is true on every rank.
bool all_ranks(bool ok) {
  int mine = ok ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

// Median seconds of `transfer` (post, then poll until final on this rank) over both ranks: each
// run starts on both after an MPI_Barrier and counts as the slower rank's time; the first
// kTwoProcessWarmups runs warm up. Every rank gets the same value: -1 when a rank's run failed.
double two_process_median_seconds(int samples, const std::function<bool()>& transfer) {
  std::vector<double> times;
  for (int i = 0; i < kTwoProcessWarmups + samples; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = Clock::now();
    const bool ok = transfer();
    const double mine[2] = {seconds_since(start), ok ? 0.0 : 1.0};  // seconds, failed
    double slowest[2] = {0.0, 0.0};
    MPI_Allreduce(mine, slowest, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (slowest[1] > 0) return -1.0;
    if (i >= kTwoProcessWarmups) times.push_back(slowest[0]);
  }
  return median(times);
}

// Polls `stream` until it passed what was enqueued on it (as NcclKvChannel::poll polls its
// event): false on an asynchronous error of `comm` or after kTimeout.
bool wait_for_stream(cudaStream_t stream, ncclComm_t comm) {
  const auto deadline = Clock::now() + kTimeout;
  cudaError_t query = cudaErrorNotReady;
  while ((query = cudaStreamQuery(stream)) == cudaErrorNotReady) {
    ncclResult_t async_error = ncclSuccess;
    if (!nccl_ok(ncclCommGetAsyncError(comm, &async_error), "ncclCommGetAsyncError")) return false;
    if (async_error != ncclSuccess && async_error != ncclInProgress) {
      return nccl_ok(async_error, "raw NCCL transfer");
    }
    if (Clock::now() >= deadline) {
      std::fprintf(stderr, "raw NCCL transfer timed out\n");
      return false;
    }
  }
  return cuda_ok(query, "cudaStreamQuery");
}

// One process of the two-process mode, on CUDA device `rank`, with a buffer of the largest
// message and a non-blocking stream. Rank 0's buffer is the source (random bytes of kSourceSeed);
// rank 1's is the target, checked against the same bytes regenerated on its host.
class RankSide {
 public:
  ~RankSide() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (buffer_ != nullptr) cudaFree(buffer_);
  }

  bool init(int rank, std::uint64_t bytes) {
    std::vector<std::uint8_t> source = random_bytes(bytes, kSourceSeed);
    if (!cuda_ok(cudaSetDevice(rank), "cudaSetDevice") ||
        !cuda_ok(cudaMalloc(&buffer_, bytes), "cudaMalloc") ||
        !cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate")) {
      return false;
    }
    if (rank == 1) {
      expected_source_ = std::move(source);
      return true;
    }
    return cuda_ok(cudaMemcpy(buffer_, source.data(), bytes, cudaMemcpyHostToDevice),
                   "cudaMemcpy(source)");
  }

  // Target: poisons the first `bytes`, for the check after a measurement.
  bool clear(std::uint64_t bytes) {
    return cuda_ok(cudaMemset(buffer_, 0x5A, bytes), "cudaMemset(target)") &&
           cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }

  // Target: true when it holds every segment of the source (the last run's bytes).
  bool holds(std::span<const PutSegment> segments) {
    std::vector<std::uint8_t> arrived(target_end(segments));
    return cuda_ok(cudaMemcpy(arrived.data(), buffer_, arrived.size(), cudaMemcpyDeviceToHost),
                   "cudaMemcpy(check)") &&
           segments_match(arrived, expected_source_, segments);
  }

  std::uint8_t* buffer() const { return static_cast<std::uint8_t*>(buffer_); }
  cudaStream_t stream() const { return stream_; }

 private:
  void* buffer_ = nullptr;  // [max_bytes]
  cudaStream_t stream_ = nullptr;
  std::vector<std::uint8_t> expected_source_;  // target: [max_bytes], the source's bytes
};

// The communicator of NCCL's own figure; aborted instead of destroyed after a failed transfer
// (a pending operation would keep ncclCommDestroy waiting).
class RawComm {
 public:
  ~RawComm() {
    if (comm_ == nullptr) return;
    if (failed_) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
  }

  bool init(std::span<const std::uint8_t> unique_id, int rank) {
    ncclUniqueId id;
    if (unique_id.size() != sizeof(id.internal)) return false;
    std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
    return nccl_ok(ncclCommInitRank(&comm_, 2, id, rank), "ncclCommInitRank");
  }

  ncclComm_t get() const { return comm_; }
  void set_failed() { failed_ = true; }

 private:
  ncclComm_t comm_ = nullptr;
  bool failed_ = false;
};

}  // namespace

int run_nccl_two_process_bench(const BenchOptions& options, std::vector<BenchRow>& rows) {
  int rank = 0;
  int ranks = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (ranks != 2) {
    if (rank == 0) {
      std::fprintf(stderr,
                   "--nccl-ranks 2 runs under mpirun -np 2 (rank r on GPU r), got %d rank%s\n",
                   ranks, ranks == 1 ? "" : "s");
    }
    return 1;
  }
  keep_nvls_off(rank == 0);
  int devices = 0;
  const bool counted = cudaGetDeviceCount(&devices) == cudaSuccess && devices >= 2;
  if (!counted) {
    std::fprintf(stderr,
                 "rank %d: --nccl-ranks 2 needs 2 CUDA devices (rank r on GPU r), found %d\n", rank,
                 devices);
  }
  if (!all_ranks(counted)) return 2;
  if (rank == 0 && options.backend == "gpu") {
    std::printf("--nccl-ranks 2: NCCL rows only (host-staged UCX runs in one process)\n");
  }
  const bool sender = rank == 0;
  const int peer = 1 - rank;
  RankSide side;
  if (!all_ranks(side.init(rank, options.max_bytes))) return 1;
  int can_access = 0;
  if (!all_ranks(
          cuda_ok(cudaDeviceCanAccessPeer(&can_access, rank, peer), "cudaDeviceCanAccessPeer"))) {
    return 1;
  }
  if (sender) {
    std::printf("two processes, GPU 0 -> GPU 1, peer access %s\n", can_access ? "yes" : "no");
  }

  // Rank 0 makes the unique ids of the channel's communicator and the raw one and sends them;
  // an empty id tells rank 1 that it failed.
  std::vector<std::uint8_t> ids;
  if (sender) {
    auto channel_id = NcclKvChannel::make_unique_id();
    auto raw_id = NcclKvChannel::make_unique_id();
    if (status_ok(channel_id.status(), "make_unique_id") &&
        status_ok(raw_id.status(), "make_unique_id")) {
      ids = std::move(*channel_id);
      ids.insert(ids.end(), raw_id->begin(), raw_id->end());
    }
  }
  ids = broadcast_bytes(ids, 0);
  if (ids.empty()) return 1;
  const std::span<const std::uint8_t> both_ids(ids);
  const std::size_t id_bytes = ids.size() / 2;
  NcclChannelOptions channel_options;
  if (options.pack_chunk_bytes > 0) channel_options.pack_chunk_bytes = options.pack_chunk_bytes;
  auto created =
      NcclKvChannel::create(both_ids.first(id_bytes), 2, rank, rank, channel_options);
  if (!all_ranks(status_ok(created.status(), "NcclKvChannel::create"))) return 1;
  NcclKvChannel& channel = **created;
  RawComm raw;
  if (!all_ranks(raw.init(both_ids.subspan(id_bytes), rank))) return 1;

  // Rank 0 sends, rank 1 receives: the whole buffer on the raw communicator, or `segments`
  // through the channel; then polls until final.
  const auto raw_transfer = [&](std::uint64_t bytes) {
    const ncclResult_t posted =
        sender ? ncclSend(side.buffer(), bytes, ncclUint8, peer, raw.get(), side.stream())
               : ncclRecv(side.buffer(), bytes, ncclUint8, peer, raw.get(), side.stream());
    return nccl_ok(posted, sender ? "ncclSend" : "ncclRecv") &&
           wait_for_stream(side.stream(), raw.get());
  };
  const auto channel_transfer = [&](std::span<const PutSegment> segments) {
    auto id = sender
                  ? channel.send_segments(peer, side.buffer(), segments, side.stream(), kTimeout)
                  : channel.recv_segments(peer, side.buffer(), segments, side.stream(), kTimeout);
    if (!status_ok(id.status(), sender ? "send_segments" : "recv_segments")) return false;
    TransferState state = TransferState::kPending;
    while ((state = channel.poll(*id)) == TransferState::kPending) {
    }
    channel.release(*id);
    if (state == TransferState::kDone) return true;
    std::fprintf(stderr, "rank %d: transfer ended %s\n", rank,
                 std::string(to_string(state)).c_str());
    return false;
  };

  // CUDA IPC (the service's kv_transfer.backend: cuda_ipc): rank 1 exports its buffer, rank 0
  // maps it and puts into it; rank 1 only waits. Empty blobs tell the other rank it failed.
  auto ipc = make_cuda_ipc_transport({rank, {}});
  if (!all_ranks(status_ok(ipc.status(), "make_cuda_ipc_transport"))) return 1;
  KvTransport& ipc_transport = **ipc;
  int ipc_local = 0, ipc_remote = 0;
  {
    std::vector<std::uint8_t> exported;
    if (auto region =
            ipc_transport.register_region(side.buffer(), options.max_bytes, MemoryKind::kDevice);
        status_ok(region.status(), "CUDA IPC register_region")) {
      ipc_local = *region;
      auto descriptor = ipc_transport.region_descriptor(ipc_local);
      if (status_ok(descriptor.status(), "region_descriptor") && !sender) {
        WireWriter w;
        const auto address = ipc_transport.local_address();
        w.put_vector(std::span<const std::uint8_t>(address));
        w.put_vector(std::span<const std::uint8_t>(descriptor->descriptor));
        exported = w.take();
      }
    }
    const std::vector<std::uint8_t> blob = broadcast_bytes(exported, 1);
    bool imported = !blob.empty();
    if (sender && imported) {
      WireReader r(blob);
      std::vector<std::uint8_t> address;
      RemoteRegion region;
      imported = r.get_vector(address).ok() && r.get_vector(region.descriptor).ok() &&
                 status_ok(ipc_transport.connect(1, address), "CUDA IPC connect");
      if (imported) {
        auto handle = ipc_transport.add_remote_region(1, region);
        imported = status_ok(handle.status(), "CUDA IPC add_remote_region");
        if (imported) ipc_remote = *handle;
      }
    }
    if (!all_ranks(imported)) return 1;
  }
  const auto ipc_transfer = [&](std::span<const PutSegment> segments) {
    if (!sender) return true;
    auto id = ipc_transport.post_put(ipc_local, ipc_remote, segments, kTimeout);
    if (!status_ok(id.status(), "CUDA IPC post_put")) return false;
    TransferState state = TransferState::kPending;
    while ((state = ipc_transport.poll(*id)) == TransferState::kPending) {
    }
    ipc_transport.release(*id);
    if (state == TransferState::kDone) return true;
    std::fprintf(stderr, "CUDA IPC transfer ended %s\n", std::string(to_string(state)).c_str());
    return false;
  };

  const std::string path = "gpu0->gpu1/2proc";
  std::mt19937_64 rng(kShuffleSeed);
  bool failed = false;
  for (std::uint64_t bytes = options.min_bytes; bytes <= options.max_bytes && !failed; bytes *= 4) {
    const int samples = std::max(samples_for(options, bytes), kTwoProcessMinSamples);
    const double raw_seconds =
        two_process_median_seconds(samples, [&] { return raw_transfer(bytes); });
    if (raw_seconds < 0) {
      failed = true;
      break;
    }
    rows.push_back({"nccl", path + "/raw", "contiguous", bytes, 1, raw_seconds * 1e6,
                    gbs(bytes, raw_seconds), gbs(bytes, raw_seconds), "raw-nccl"});
    for (const auto& [mode, segments] : modes_for(options, bytes, kChannelOrders, rng)) {
      const bool cleared = sender || side.clear(bytes);
      const double seconds =
          all_ranks(cleared)
              ? two_process_median_seconds(samples, [&] { return channel_transfer(segments); })
              : -1.0;
      if (seconds < 0 || !all_ranks(sender || side.holds(segments))) {
        if (sender) {
          std::fprintf(stderr, "NcclKvChannel %s (two processes) failed at %llu bytes\n",
                       mode.c_str(), static_cast<unsigned long long>(bytes));
        }
        failed = true;
        break;
      }
      rows.push_back({"nccl", path + (mode == "contiguous" ? "/channel" : "/channel-packed"), mode,
                      bytes, segments.size(), seconds * 1e6, gbs(bytes, seconds),
                      gbs(bytes, raw_seconds), "raw-nccl"});

      const bool ipc_cleared = sender || side.clear(bytes);
      const double ipc_seconds =
          all_ranks(ipc_cleared)
              ? two_process_median_seconds(samples, [&] { return ipc_transfer(segments); })
              : -1.0;
      if (ipc_seconds < 0 || !all_ranks(sender || side.holds(segments))) {
        if (sender) {
          std::fprintf(stderr, "CUDA IPC %s failed at %llu bytes\n", mode.c_str(),
                       static_cast<unsigned long long>(bytes));
        }
        failed = true;
        break;
      }
      rows.push_back({"cuda-ipc", path + "/ipc", mode, bytes, segments.size(), ipc_seconds * 1e6,
                      gbs(bytes, ipc_seconds), gbs(bytes, raw_seconds), "raw-nccl"});
    }
  }
  // Rank 0 unmaps rank 1's buffer before rank 1 frees it.
  ipc->reset();
  MPI_Barrier(MPI_COMM_WORLD);
  if (!failed) return 0;
  // Operations may still be pending on either communicator: only an abort stops them.
  channel.abort();
  raw.set_failed();
  return 1;
}

namespace {

// The first row of `backend` and `mode` at `bytes` whose path ends with `path_suffix`.
const BenchRow* find_row(const std::vector<BenchRow>& rows, const std::string& backend,
                         const std::string& mode, std::uint64_t bytes,
                         const std::string& path_suffix) {
  for (const BenchRow& row : rows) {
    if (row.backend == backend && row.mode == mode && row.bytes == bytes &&
        row.path.ends_with(path_suffix)) {
      return &row;
    }
  }
  return nullptr;
}

// The message sizes of `rows`, in the order they first appear.
std::vector<std::uint64_t> sizes_of(const std::vector<BenchRow>& rows) {
  std::vector<std::uint64_t> sizes;
  for (const BenchRow& row : rows) {
    if (std::find(sizes.begin(), sizes.end(), row.bytes) == sizes.end()) sizes.push_back(row.bytes);
  }
  return sizes;
}

// A summary cell: `value` with two decimals, "-" where the row is missing.
std::string cell(const BenchRow* row, double value) {
  if (row == nullptr) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f", value);
  return text;
}

}  // namespace

void print_gpu_summary(const std::vector<BenchRow>& rows) {
  const auto find = [&rows](const std::string& backend, const std::string& mode,
                            std::uint64_t bytes, const std::string& path_suffix) {
    return find_row(rows, backend, mode, bytes, path_suffix);
  };
  const auto ratio = [](const BenchRow* row) {
    return cell(row, row ? row->bandwidth_gbs / row->peak_gbs : 0);
  };
  const std::vector<std::uint64_t> sizes = sizes_of(rows);
  std::printf(
      "\nsummary, GB/s (ratio = bandwidth / baseline of the same bytes, measured in this run):\n"
      "  nccl_raw     NCCL's own peer-to-peer figure: ncclSend/ncclRecv of the whole message\n"
      "  NcclKvChannel, ratio to nccl_raw, by page order (pipelined in chunks from two chunks "
      "up):\n"
      "    contig     one segment: ncclSend/ncclRecv in place\n"
      "    shuffled   pages shuffled on both sides: gather, send, scatter\n"
      "    scatter    sender's pages in order (sent in place), receiver's shuffled: send, scatter\n"
      "    gather     sender's pages shuffled, receiver's in order (received in place)\n"
      "  staged       host-staged UCX, receiver's pages shuffled, post_put -> deliver done; ratio\n"
      "               to stages = sum of the same D2H, host memcpy and H2D copies one after "
      "another\n");
  std::printf("%12s %9s %8s %8s %8s %8s %9s %9s %7s\n", "bytes", "nccl_raw", "contig", "shuffled",
              "scatter", "gather", "staged", "stages", "ratio");
  for (const std::uint64_t bytes : sizes) {
    const BenchRow* raw = find("nccl", "contiguous", bytes, "/raw");
    const BenchRow* staged = find("staged", "scatter", bytes, "");
    std::printf("%12llu %9s %8s %8s %8s %8s %9s %9s %7s\n", static_cast<unsigned long long>(bytes),
                cell(raw, raw ? raw->bandwidth_gbs : 0).c_str(),
                ratio(find("nccl", "contiguous", bytes, "/channel")).c_str(),
                ratio(find("nccl", "shuffled", bytes, "/channel-packed")).c_str(),
                ratio(find("nccl", "scatter", bytes, "/channel-packed")).c_str(),
                ratio(find("nccl", "gather", bytes, "/channel-packed")).c_str(),
                cell(staged, staged ? staged->bandwidth_gbs : 0).c_str(),
                cell(staged, staged ? staged->peak_gbs : 0).c_str(), ratio(staged).c_str());
  }
  // The chunk sweep: paged ratio to nccl_raw per chunk size, the default's column from above.
  std::vector<std::pair<std::string, std::string>> columns;  // header, path suffix
  bool default_listed = false;
  for (const std::uint64_t chunk_bytes : kSweptChunkBytes) {  // ascending
    if (chunk_bytes > kNcclPackChunkBytes && !default_listed) {
      columns.emplace_back(std::to_string(kNcclPackChunkBytes >> 20) + "M*", "/channel-packed");
      default_listed = true;
    }
    const std::string suffix = chunk_suffix(chunk_bytes);
    columns.emplace_back(suffix.substr(std::string("/packed-").size()), suffix);
  }
  bool swept = false;
  for (const BenchRow& row : rows) swept = swept || row.path.find("/packed-") != std::string::npos;
  if (!swept) return;
  std::printf(
      "\nshuffled / nccl_raw by chunk size (c = chunk, * = default; single = one message):\n");
  std::printf("%12s", "bytes");
  for (const auto& [header, suffix] : columns) std::printf(" %7s", header.c_str());
  std::printf("\n");
  for (const std::uint64_t bytes : sizes) {
    if (find("nccl", "shuffled", bytes, "/channel-packed") == nullptr) continue;
    std::printf("%12llu", static_cast<unsigned long long>(bytes));
    for (const auto& [header, suffix] : columns) {
      const BenchRow* row = find("nccl", "shuffled", bytes, suffix);
      std::printf(" %7s", cell(row, row ? row->bandwidth_gbs / row->peak_gbs : 0).c_str());
    }
    std::printf("\n");
  }
}

void print_two_process_summary(const std::vector<BenchRow>& rows) {
  std::printf(
      "\ntwo-process summary, GB/s (rank r on GPU r, each posting on its own; ratio = bandwidth /\n"
      "nccl_raw of the same bytes, measured in this run; time = the slower rank's, median):\n"
      "  nccl_raw     NCCL's own figure: ncclSend on rank 0, ncclRecv on rank 1, whole message\n"
      "  NcclKvChannel ratios by page order, as in the one-process summary: contig, shuffled,\n"
      "  scatter, gather\n"
      "  ipc_*        CUDA IPC transport (one-sided copies into rank 1's mapped buffer), the\n"
      "               same page orders; ipc_GB/s its contiguous bandwidth\n");
  std::printf("%12s %9s %8s %8s %8s %8s %9s %8s %8s %8s %8s\n", "bytes", "nccl_raw", "contig",
              "shuffled", "scatter", "gather", "ipc_GB/s", "ipc_ctg", "ipc_shf", "ipc_sct",
              "ipc_gth");
  const auto ratio = [&rows](const char* backend, const char* mode, std::uint64_t bytes,
                             const char* path_suffix) {
    const BenchRow* row = find_row(rows, backend, mode, bytes, path_suffix);
    return cell(row, row ? row->bandwidth_gbs / row->peak_gbs : 0);
  };
  for (const std::uint64_t bytes : sizes_of(rows)) {
    const BenchRow* raw = find_row(rows, "nccl", "contiguous", bytes, "/2proc/raw");
    const BenchRow* ipc = find_row(rows, "cuda-ipc", "contiguous", bytes, "/2proc/ipc");
    std::printf("%12llu %9s %8s %8s %8s %8s %9s %8s %8s %8s %8s\n",
                static_cast<unsigned long long>(bytes),
                cell(raw, raw ? raw->bandwidth_gbs : 0).c_str(),
                ratio("nccl", "contiguous", bytes, "/2proc/channel").c_str(),
                ratio("nccl", "shuffled", bytes, "/2proc/channel-packed").c_str(),
                ratio("nccl", "scatter", bytes, "/2proc/channel-packed").c_str(),
                ratio("nccl", "gather", bytes, "/2proc/channel-packed").c_str(),
                cell(ipc, ipc ? ipc->bandwidth_gbs : 0).c_str(),
                ratio("cuda-ipc", "contiguous", bytes, "/2proc/ipc").c_str(),
                ratio("cuda-ipc", "shuffled", bytes, "/2proc/ipc").c_str(),
                ratio("cuda-ipc", "scatter", bytes, "/2proc/ipc").c_str(),
                ratio("cuda-ipc", "gather", bytes, "/2proc/ipc").c_str());
  }
}

}  // namespace podserve::bench
