// The KV fabric's choice of transport: kv_transfer.backend: auto takes CUDA IPC only for GPU KV
// caches on one host; a named backend is kept as configured. (The fabric itself runs under
// mpirun in tests/integration.)
#include "kvtransfer/kv_fabric.h"

#include <gtest/gtest.h>

#include <string>

namespace podserve {
namespace {

TEST(KvTransferBackend, AutoPicksCudaIpcForGpuPagesOnOneHostOnly) {
  EXPECT_EQ(resolve_transfer_backend("auto", MemoryKind::kDevice, false), "cuda_ipc");
  EXPECT_EQ(resolve_transfer_backend("auto", MemoryKind::kDevice, true), "ucx");
  EXPECT_EQ(resolve_transfer_backend("auto", MemoryKind::kHost, false), "ucx");
  EXPECT_EQ(resolve_transfer_backend("auto", MemoryKind::kHost, true), "ucx");
  for (const std::string configured : {"ucx", "cuda_ipc", "nccl"}) {
    EXPECT_EQ(resolve_transfer_backend(configured, MemoryKind::kDevice, false), configured);
    EXPECT_EQ(resolve_transfer_backend(configured, MemoryKind::kHost, true), configured);
  }
}

}  // namespace
}  // namespace podserve
