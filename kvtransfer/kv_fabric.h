// One rank's end of disaggregated mode's KV data path (docs/design.md sections 2 and 4): its KV
// transport, the regions of its KV cache (one per layer) and, on a prefill rank, the remote
// regions of every decode rank it ships to. Set-up, once per process:
//   open() (before the model: on a host backend the KV cache can live in transport memory,
//   kv_cache_allocator) -> register_kv_cache(the model's per-layer views), which returns this
//   rank's fabric address -> exchange the addresses out of band (the cluster uses MPI) ->
//   connect(peer, address) for every decode rank (prefill ranks only).
// Then a prefill rank posts puts between local_region(layer) and remote_region(peer, layer)
// (kv_shipper.h), and a decode rank calls deliver() for pages whose transfers are final.
//
// Contract: one thread (the rank's loop) makes every call; progress() must be called regularly
// on every fabric rank (decode ranks too: some transports need the target to progress).
// Registered KV memory belongs to the caller and must outlive the fabric; memory handed out
// by kv_cache_allocator() belongs to the transport. No MPI here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

// kv_transfer.backend with `auto` resolved: cuda_ipc for a KV cache in device memory when every
// rank is on one host, else ucx (host staging wraps it for GPU pages when UCX has no CUDA
// transports). Other values are returned as configured.
std::string resolve_transfer_backend(const std::string& configured, MemoryKind kv_memory,
                                     bool spans_hosts);

struct KvFabricOptions {
  std::string backend = "auto";              // ucx, cuda_ipc or auto (nccl is refused)
  std::string peer_error_handling = "auto";  // UCX peer-failure detection: on, off, auto
  bool spans_hosts = false;                  // the deployment's ranks are on several hosts
  FaultInjection faults;
  int cuda_device = 0;  // the GPU of a device KV cache
  // The model's stream (Backend::native_stream()) for host-staged deliveries, so they are
  // queued before the next forward pass instead of waited for; nullptr: waited for.
  void* delivery_stream = nullptr;
};

class KvFabric {
 public:
  // kv_memory: where the backend keeps the KV cache. Device memory over a UCX without CUDA
  // transports is staged through pinned host memory (make_transport_for, detected at run time).
  // kInvalidArgument / kUnimplemented for a backend that cannot serve (naming the config key).
  static Result<std::unique_ptr<KvFabric>> open(const KvFabricOptions& options,
                                                MemoryKind kv_memory);

  // For ModelOptions::kv_cache_allocator on host backends: KV layers in transport-owned memory,
  // which peers write in one copy over shared memory.
  std::function<Result<DeviceBuffer>(std::size_t)> kv_cache_allocator();

  // Registers the KV cache, one view per layer, every layer with the same page layout (memory
  // from kv_cache_allocator() is already registered), and returns this rank's fabric address:
  // the transport address and every layer's region descriptor. Once.
  Result<std::vector<std::uint8_t>> register_kv_cache(std::span<const KvCacheView> layers);
  // Connects to decode rank `peer` (any id the caller chooses, e.g. its MPI world rank) from the
  // fabric address it registered, and adds its layer regions.
  Status connect(int peer, std::span<const std::uint8_t> address);
  // Decode ranks connected.
  std::size_t num_peers() const {
    return remote_regions_.size() / std::max<std::size_t>(1, local_regions_.size());
  }

  KvTransport& transport() { return *transport_; }
  // True when the transport moved anything.
  bool progress() { return transport_->progress(); }
  // Decode side, once every transfer into `pages` is final and done: makes their bytes visible
  // in this rank's KV cache, every layer (KvTransport::deliver: a no-op unless the transport
  // stages GPU memory through a host mirror). Blocks until done (or until queued on the
  // delivery stream).
  Status deliver(std::span<const std::int32_t> pages);

  // Remote region handle of `peer`'s layer `layer`.
  int remote_region(int peer, int layer) const { return remote_regions_.at({peer, layer}); }
  int local_region(int layer) const { return local_regions_.at(layer); }

 private:
  KvFabric() = default;

  std::unique_ptr<KvTransport> transport_;
  MemoryKind kv_memory_ = MemoryKind::kHost;
  std::uint64_t page_bytes_ = 0;                       // one page of one layer
  std::map<void*, int> allocated_regions_;             // base -> region id (transport memory)
  std::vector<int> local_regions_;                     // per layer
  std::map<std::pair<int, int>, int> remote_regions_;  // (peer, layer) -> handle
};

}  // namespace podserve
