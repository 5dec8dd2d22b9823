// podserve-kvtransfer-bench: KV transfer bandwidth and latency against message size.
//
//   UCX (host to host, two processes):
//     UCX_TLS=sm,self mpirun -np 2 build/bin/podserve-kvtransfer-bench --csv ucx_sm.csv
//     UCX_TLS=tcp,self mpirun -np 2 build/bin/podserve-kvtransfer-bench --csv ucx_tcp.csv
//   GPU0 -> GPU1 in one process (CUDA builds; kvtransfer/bench/gpu_session.sh runs them):
//     NCCL_NVLS_ENABLE=0 build/bin/podserve-kvtransfer-bench --backend nccl|staged|gpu
//   GPU0 -> GPU1, NCCL only, one process per GPU (rank r on GPU r, as in the service):
//     mpirun -np 2 build/bin/podserve-kvtransfer-bench --backend gpu --nccl-ranks 2
//
// Rank 0 puts into rank 1's registered buffer: one contiguous segment per message, and a
// page-scattered mode (one segment per --page-bytes page, target pages in random order). Each
// sample is post_put -> kDone (remote completion included); latency is the median, bandwidth
// bytes / median. The peak is the same bytes moved by a baseline measured in the same run (UCX:
// memcpy in rank 0 with the same pattern; GPU modes: gpu_bench.h); the ratio is bandwidth / peak.
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kvtransfer/bench/bench_common.h"
#include "kvtransfer/bench/mpi_exchange.h"
#include "kvtransfer/ucx_transport.h"
#ifdef PODSERVE_KVTRANSFER_HAS_NCCL
#include "kvtransfer/bench/gpu_bench.h"
#endif

namespace podserve::bench {

bool report(const BenchOptions& options, const std::vector<BenchRow>& rows) {
  std::printf("%-6s %-32s %-10s %10s %8s %12s %10s %10s %7s %s\n", "back", "path", "mode", "bytes",
              "segments", "latency_us", "GB/s", "peak_GB/s", "ratio", "peak=");
  for (const BenchRow& row : rows) {
    std::printf("%-6s %-32s %-10s %10llu %8llu %12.1f %10.2f %10.2f %7.2f %s\n",
                row.backend.c_str(), row.path.c_str(), row.mode.c_str(),
                static_cast<unsigned long long>(row.bytes),
                static_cast<unsigned long long>(row.segments), row.latency_us, row.bandwidth_gbs,
                row.peak_gbs, row.peak_gbs > 0 ? row.bandwidth_gbs / row.peak_gbs : 0.0,
                row.baseline.c_str());
  }
  if (options.csv_path.empty()) return true;
  std::ofstream csv(options.csv_path);
  csv << "backend,path,mode,bytes,segments,latency_us,bandwidth_gbs,peak_gbs,ratio,baseline\n";
  for (const BenchRow& row : rows) {
    csv << row.backend << ',' << row.path << ',' << row.mode << ',' << row.bytes << ','
        << row.segments << ',' << row.latency_us << ',' << row.bandwidth_gbs << ',' << row.peak_gbs
        << ',' << (row.peak_gbs > 0 ? row.bandwidth_gbs / row.peak_gbs : 0.0) << ',' << row.baseline
        << '\n';
  }
  return static_cast<bool>(csv);
}

namespace {

constexpr auto kTimeout = std::chrono::seconds(30);

bool check(const Status& status, const char* what) {
  if (status.ok()) return true;
  std::fprintf(stderr, "%s: %s\n", what, status.to_string().c_str());
  return false;
}

// Median seconds of memcpy over the same segments (the same-process peak).
double memcpy_seconds(std::uint8_t* dst, const std::uint8_t* src,
                      std::span<const PutSegment> segments, int samples) {
  std::vector<double> times;
  for (int sample = 0; sample <= samples; ++sample) {
    const auto start = Clock::now();
    for (const PutSegment& segment : segments) {
      std::memcpy(dst + segment.remote_offset, src + segment.local_offset, segment.bytes);
    }
    if (sample > 0) times.push_back(seconds_since(start));  // sample 0 warms up
  }
  return median(times);
}

// Median seconds of post_put -> kDone; negative when a transfer fails.
double put_seconds(UcxTransport& transport, int local_region, int remote_region,
                   std::span<const PutSegment> segments, int samples) {
  std::vector<double> times;
  for (int sample = 0; sample <= samples; ++sample) {
    const auto start = Clock::now();
    auto id = transport.post_put(local_region, remote_region, segments, kTimeout);
    if (!id.ok()) {
      check(id.status(), "post_put");
      return -1.0;
    }
    TransferState state = TransferState::kPending;
    while ((state = transport.poll(*id)) == TransferState::kPending) {
    }
    transport.release(*id);
    if (state != TransferState::kDone) {
      std::fprintf(stderr, "transfer ended %s\n", std::string(to_string(state)).c_str());
      return -1.0;
    }
    if (sample > 0) times.push_back(seconds_since(start));
  }
  return median(times);
}

int run_ucx_bench(const BenchOptions& options, std::vector<BenchRow>& rows) {
  int rank = 0;
  int size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "the ucx backend runs under mpirun -np 2\n");
    return 1;
  }
  const int peer = 1 - rank;
  UcxOptions ucx_options;
  ucx_options.peer_error_handling = options.peer_error_handling;
  auto transport = make_ucx_transport(ucx_options);
  if (!check(transport.status(), "make_ucx_transport")) return 1;
  UcxTransport& ucx = **transport;
  const auto peer_address = swap_bytes(ucx.local_address(), peer);
  if (!check(ucx.connect(peer, peer_address), "connect")) return 1;

  // Rank 0 puts from registered user memory (like a KV cache); rank 1's target is allocated by
  // the transport (single-copy shared memory), or user memory with --target-memory user.
  std::vector<std::uint8_t> buffer(options.max_bytes, static_cast<std::uint8_t>(rank + 1));
  Result<int> region = 0;
  if (rank == 1 && options.target_memory == "transport") {
    auto allocated = ucx.allocate_region(options.max_bytes);
    if (!check(allocated.status(), "allocate_region")) return 1;
    std::memset(allocated->base, 0, options.max_bytes);
    region = allocated->id;
  } else {
    region = ucx.register_region(buffer.data(), buffer.size(), MemoryKind::kHost);
  }
  if (!check(region.status(), "register_region")) return 1;
  auto descriptor = ucx.region_descriptor(*region);
  const auto peer_descriptor = swap_bytes(descriptor->descriptor, peer);

  // Both ranks progress until both arrive (the target applies TCP puts in its progress).
  const auto progress_until_all_arrive = [&ucx] {
    MPI_Request done;
    MPI_Ibarrier(MPI_COMM_WORLD, &done);
    int finished = 0;
    while (!finished) {
      ucx.progress();
      MPI_Test(&done, &finished, MPI_STATUS_IGNORE);
    }
  };
  if (rank == 1) {
    progress_until_all_arrive();
    return 0;
  }

  auto remote = ucx.add_remote_region(peer, RemoteRegion{peer_descriptor});
  if (!check(remote.status(), "add_remote_region")) return 1;
  const char* tls = std::getenv("UCX_TLS");
  const std::string path =
      std::string(tls != nullptr ? tls : "default") + "/" + options.target_memory;
  std::vector<std::uint8_t> memcpy_target(options.max_bytes);
  std::mt19937_64 rng(7);
  int exit_code = 0;
  for (std::uint64_t bytes = options.min_bytes; bytes <= options.max_bytes; bytes *= 4) {
    const int samples = samples_for(options, bytes);
    std::vector<std::pair<std::string, std::vector<PutSegment>>> modes;
    modes.emplace_back("contiguous", std::vector<PutSegment>{{0, 0, bytes}});
    if (bytes >= 2 * options.page_bytes) {
      modes.emplace_back("scattered", page_segments(bytes, options.page_bytes, false, true, rng));
    }
    for (const auto& [mode, segments] : modes) {
      const double put = put_seconds(ucx, *region, *remote, segments, samples);
      if (put < 0) {
        exit_code = 1;
        break;
      }
      const double copy = memcpy_seconds(memcpy_target.data(), buffer.data(), segments, samples);
      BenchRow row;
      row.backend = "ucx";
      row.path = path;
      row.mode = mode;
      row.bytes = bytes;
      row.segments = segments.size();
      row.latency_us = put * 1e6;
      row.bandwidth_gbs = static_cast<double>(bytes) / put / 1e9;
      row.peak_gbs = static_cast<double>(bytes) / copy / 1e9;
      row.baseline = "memcpy";
      rows.push_back(row);
    }
    if (exit_code != 0) break;
  }
  auto description = ucx.describe_connection(peer);
  std::printf("UCX_TLS=%s\n%s", path.c_str(), description.ok() ? description->c_str() : "");
  progress_until_all_arrive();
  return exit_code;
}

}  // namespace
}  // namespace podserve::bench

int main(int argc, char** argv) {
  using namespace podserve::bench;
  BenchOptions options;
  CLI::App app{"podserve KV transfer benchmark"};
  app.add_option("--backend", options.backend,
                 "ucx (under mpirun -np 2); nccl, staged (host-staged UCX) or gpu (both): one "
                 "process, GPU 0 -> GPU 1")
      ->check(CLI::IsMember({"ucx", "nccl", "staged", "gpu"}));
  app.add_option("--min-bytes", options.min_bytes, "smallest message (sizes grow by 4x)");
  app.add_option("--max-bytes", options.max_bytes, "largest message");
  app.add_option("--page-bytes", options.page_bytes, "page size of the scattered mode");
  app.add_option("--iterations", options.iterations, "samples per size (fewer for large sizes)");
  app.add_option("--csv", options.csv_path, "write the table as CSV");
  app.add_option("--target-memory", options.target_memory,
                 "rank 1's buffer: transport (allocate_region) or user (register_region)")
      ->check(CLI::IsMember({"transport", "user"}));
  app.add_option("--peer-error-handling", options.peer_error_handling,
                 "UCX endpoints with peer failure detection (UcxOptions::peer_error_handling)");
  app.add_option("--pack-chunk-bytes", options.pack_chunk_bytes,
                 "two-process NCCL channel: pipeline chunk size (0: the channel's default)");
  app.add_option("--nccl-ranks", options.nccl_ranks,
                 "NCCL modes: 1 = one process drives GPU 0 and GPU 1; 2 = one rank per GPU under "
                 "mpirun -np 2 (rank r on GPU r; NCCL rows only)")
      ->check(CLI::Range(1, 2));
  CLI11_PARSE(app, argc, argv);
  if (options.min_bytes == 0 || options.min_bytes > options.max_bytes || options.page_bytes == 0 ||
      options.iterations < 1) {
    std::fprintf(stderr, "invalid sizes or iterations\n");
    return 1;
  }
  if (options.nccl_ranks == 2 && options.backend != "nccl" && options.backend != "gpu") {
    std::fprintf(stderr, "--nccl-ranks 2 applies to --backend nccl or gpu\n");
    return 1;
  }

  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::vector<BenchRow> rows;
  int exit_code = 0;
  if (options.backend == "ucx") {
    exit_code = run_ucx_bench(options, rows);
  } else if (rank == 0 || options.nccl_ranks == 2) {
#ifdef PODSERVE_KVTRANSFER_HAS_NCCL
    if (options.nccl_ranks == 2) {
      exit_code = run_nccl_two_process_bench(options, rows);  // on both ranks
    } else {
      if (options.backend == "nccl" || options.backend == "gpu") {
        exit_code = run_nccl_bench(options, rows);
      }
      if (exit_code == 0 && (options.backend == "staged" || options.backend == "gpu")) {
        exit_code = run_staged_bench(options, rows);
      }
    }
#else
    if (rank == 0) {
      std::fprintf(stderr, "--backend %s needs a CUDA build (PODSERVE_ENABLE_CUDA=ON)\n",
                   options.backend.c_str());
    }
    exit_code = 1;
#endif
  }
  if (rank == 0 && exit_code == 0 && !report(options, rows)) exit_code = 1;
#ifdef PODSERVE_KVTRANSFER_HAS_NCCL
  if (rank == 0 && exit_code == 0 && options.backend != "ucx") {
    if (options.nccl_ranks == 2) {
      print_two_process_summary(rows);
    } else {
      print_gpu_summary(rows);
    }
  }
#endif
  MPI_Finalize();
  return exit_code;
}
