// CUDA IPC backend of KvTransport: GPU pages between processes of one host, one-sided, with the
// GPUs' own copy engines over NVLink / PCIe peer-to-peer and no host memory on the way (the path
// host staging takes when UCX has no CUDA transports). For a disaggregated deployment whose
// prefill and decode instances share a node (README "KV transfer backends").
//
// - local_address() is the host's boot id and the process id; connect() refuses a peer on
//   another host (or another boot) and this process itself.
// - register_region(base, bytes, kDevice) exports the allocation holding `base` with
//   cudaIpcGetMemHandle; region_descriptor() is (handle, offset of base in it, bytes). Device
//   memory of HostStagingOptions-style `cuda_device` only; host memory is refused (use ucx).
//   add_remote_region() opens the peer's handle once per allocation (cudaIpcOpenMemHandle with
//   lazy peer access) and keeps it open until the transport is destroyed.
// - post_put copies every coalesced segment local -> peer memory on the transport's own
//   non-blocking stream (cudaMemcpyAsync per run on the copy engines for a few long runs; the
//   pack kernel of page_gather.h, one launch per 1,024 runs, for many short ones) and records an
//   event; progress()/poll() read it. kDone: every byte is in the peer's memory.
// - Fence: a copy handed to the GPU cannot be withdrawn, so cancel() and a passed deadline wait
//   (without blocking: the transfer reads kPending) for the copy's event, then read kCancelled /
//   kTimedOut; nothing of the transfer is written after that. A copy that fails reads kFailed. A
//   post_put that returns an error waits for any copy it had queued first.
// - deliver() checks its ranges only: the copies write the target's memory in place.
//
// Contract beyond KvTransport's: the local bytes of a post_put must be final when it is called
// (the transport's stream does not wait for the caller's streams); a target must keep its
// exported memory allocated until every importer destroyed its transport (importers map it).
// CUDA builds only: make_cuda_ipc_transport returns kUnimplemented without CUDA.
#pragma once

#include <memory>

#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

struct CudaIpcOptions {
  int cuda_device = 0;  // the device of every registered region; the copy stream lives there
  FaultInjection faults;
};

Result<std::unique_ptr<KvTransport>> make_cuda_ipc_transport(const CudaIpcOptions& options);

}  // namespace podserve
