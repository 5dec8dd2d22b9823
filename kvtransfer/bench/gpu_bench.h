// GPU modes of podserve-kvtransfer-bench (CUDA builds), one process, GPU 0 -> GPU 1:
// - nccl: NCCL's own peer-to-peer figure (raw ncclSend/ncclRecv of the whole message), then
//   NcclKvChannel with one contiguous segment (direct) and with shuffled pages (packed: gather
//   kernel, send, scatter kernel; pipelined in chunks from two chunks up), both against that raw
//   figure of the same bytes; then the shuffled pages again on channels with other chunk sizes
//   (rows ".../packed-c<MiB>M", ".../packed-single" = one message, not pipelined);
// - staged: host-staged UCX (two transports in this process, device regions on the two GPUs)
//   from post_put to deliver() done, against the sum of its stages measured on the same
//   segments (device -> pinned host, host memcpy, pinned host -> device).
#pragma once

#include <vector>

#include "kvtransfer/bench/bench_common.h"

namespace podserve::bench {

// Fill `rows`; return a process exit code (0 ok, 2 skipped for lack of GPUs, 1 error).
int run_nccl_bench(const BenchOptions& options, std::vector<BenchRow>& rows);
int run_staged_bench(const BenchOptions& options, std::vector<BenchRow>& rows);

// Per size: raw NCCL, packed pages and their ratio; host-staged UCX, its stage bound and ratio;
// then, when swept, the packed pages' ratio per chunk size.
void print_gpu_summary(const std::vector<BenchRow>& rows);

}  // namespace podserve::bench
