// GPU modes of podserve-kvtransfer-bench (CUDA builds), one process, GPU 0 -> GPU 1:
// - nccl: NCCL's own peer-to-peer figure (raw ncclSend/ncclRecv of the whole message), then
//   NcclKvChannel with one contiguous segment (direct) and with shuffled pages (packed: gather
//   kernel, send, scatter kernel; pipelined in chunks from two chunks up), both against that raw
//   figure of the same bytes; then the shuffled pages again on channels with other chunk sizes
//   (rows ".../packed-c<MiB>M", ".../packed-single" = one message, not pipelined);
// - staged: host-staged UCX (two transports in this process, device regions on the two GPUs)
//   from post_put to deliver() done, against the sum of its stages measured on the same
//   segments (device -> pinned host, host memcpy, pinned host -> device).
// Two processes (--nccl-ranks 2, mpirun -np 2, rank r on GPU r, as the service runs): NCCL's own
// figure (raw ncclSend on rank 0, ncclRecv on rank 1, on a communicator of their own), then
// NcclKvChannel contiguous and with the same shuffled pages, each rank posting on its own without
// groups, so the packed pipeline's gathers, sends and scatters overlap across the two GPUs.
#pragma once

#include <vector>

#include "kvtransfer/bench/bench_common.h"

namespace podserve::bench {

// Fill `rows`; return a process exit code (0 ok, 2 skipped for lack of GPUs, 1 error).
int run_nccl_bench(const BenchOptions& options, std::vector<BenchRow>& rows);
int run_staged_bench(const BenchOptions& options, std::vector<BenchRow>& rows);
// Runs on both ranks of MPI_COMM_WORLD (exactly 2); every rank returns the same code. Each
// sample starts on both ranks after an MPI_Barrier and takes the slower rank's time.
int run_nccl_two_process_bench(const BenchOptions& options, std::vector<BenchRow>& rows);

// Per size: raw NCCL, packed pages and their ratio; host-staged UCX, its stage bound and ratio;
// then, when swept, the packed pages' ratio per chunk size.
void print_gpu_summary(const std::vector<BenchRow>& rows);
// The two-process rows per size: raw NCCL, the channel contiguous and paged, with their ratios.
void print_two_process_summary(const std::vector<BenchRow>& rows);

}  // namespace podserve::bench
