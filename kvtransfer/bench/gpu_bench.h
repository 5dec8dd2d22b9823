// NCCL mode of podserve-kvtransfer-bench (CUDA builds): GPU0 -> GPU1 send/recv in one process,
// against cudaMemcpyPeer measured in the same run.
#pragma once

#include <vector>

#include "kvtransfer/bench/bench_common.h"

namespace podserve::bench {

// Fills `rows`; returns a process exit code (0 ok, 2 skipped for lack of GPUs, 1 error).
int run_nccl_bench(const BenchOptions& options, std::vector<BenchRow>& rows);

}  // namespace podserve::bench
