// Disaggregated mode's KV data path (docs/design.md sections 2 and 4). At start-up every rank of a
// prefill or decode instance joins the fabric: it registers its KV cache (one region per layer)
// with the KV transport, and every rank's transport address and region descriptors are
// exchanged over MPI, after which prefill ranks hold a connection and remote regions for every
// decode rank. A prefill rank then ships its share of a request's KV pages (its KV heads) to
// the decode ranks that hold those heads, as one-sided puts into the pages the decode instance
// reserved — so prefill TP 2 -> decode TP 1 merges heads and 1 -> 2 splits them.
//
// KvShipper tracks each shipment (all layers at once, or layer by layer), retries a failed or
// timed-out transfer `retries` times, and reports a shipment final only when every one of its
// transfers completed or was fenced (cancelled, so no byte of it lands later).
// Used by one thread per rank (the rank's loop); progress() must be called regularly on every
// fabric rank (decode ranks too: some transports need the target to progress).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/topology.h"
#include "core/batch_plan.h"
#include "core/config.h"
#include "core/model_config.h"
#include "kvtransfer/head_shards.h"
#include "kvtransfer/transport.h"
#include "worker/model.h"

namespace podserve {

// kv_transfer.backend with `auto` resolved: cuda_ipc for a KV cache in device memory when every
// rank is on one host, else ucx (host staging wraps it for GPU pages when UCX has no CUDA
// transports). Other values are returned as configured.
std::string resolve_transfer_backend(const std::string& configured, MemoryKind kv_memory,
                                     bool spans_hosts);

class KvFabric {
 public:
  // Local: this rank's transport, or nullptr on ranks outside the fabric (the router, and
  // every rank in colocated mode). Create it before the model, so the model can place its KV
  // cache in transport memory (kv_cache_allocator), and destroy it after the model.
  // kv_memory: where the backend keeps the KV cache. Device memory over a UCX without CUDA
  // transports is staged through pinned host memory (make_transport_for, detected at run time)
  // on CUDA device cuda_device.
  // delivery_stream: the model's stream (Backend::native_stream()) for host-staged deliveries,
  // so they are queued before the next forward pass instead of waited for; nullptr: waited for.
  static Result<std::unique_ptr<KvFabric>> open(const Topology& topology,
                                                const ServiceConfig& config, MemoryKind kv_memory,
                                                int cuda_device, void* delivery_stream = nullptr);
  // Collective over MPI_COMM_WORLD in disaggregated mode (every rank calls it; ranks outside
  // the fabric pass nullptrs): registers the model's KV layers, exchanges addresses and region
  // descriptors, and connects prefill ranks to every decode rank.
  static Status exchange(KvFabric* fabric, const Topology& topology, const ServiceConfig& config,
                         LlamaModel* model);

  // For ModelOptions::kv_cache_allocator on host backends: KV layers in transport-owned memory,
  // which peers write in one copy over shared memory. Must outlive nothing of the fabric.
  std::function<Result<DeviceBuffer>(std::size_t)> kv_cache_allocator();

  KvTransport& transport() { return *transport_; }
  // True when the transport moved anything.
  bool progress() { return transport_->progress(); }
  // Decode side, once every transfer into `pages` is final and done: makes their bytes visible
  // in this rank's KV cache, every layer (KvTransport::deliver: a no-op unless the transport
  // stages GPU memory through a host mirror). Blocks until done.
  Status deliver(std::span<const std::int32_t> pages);

  const LlamaModel& model() const { return *model_; }
  // Remote region handle of `world_rank`'s layer `layer`.
  int remote_region(int world_rank, int layer) const {
    return remote_regions_.at({world_rank, layer});
  }
  int local_region(int layer) const { return local_regions_.at(layer); }

 private:
  KvFabric() = default;

  std::unique_ptr<KvTransport> transport_;
  MemoryKind kv_memory_ = MemoryKind::kHost;
  LlamaModel* model_ = nullptr;
  std::map<void*, int> allocated_regions_;             // base -> region id (transport memory)
  std::vector<int> local_regions_;                     // per layer
  std::map<std::pair<int, int>, int> remote_regions_;  // (world rank, layer) -> handle
};

// One prefill rank's shipments.
class KvShipper {
 public:
  KvShipper(KvFabric& fabric, const Topology& topology, const ServiceConfig& config,
            const ModelConfig& model);

  // Posts this rank's share of `shipment` for one layer, or for every layer (nullopt).
  Status post(const KvShipment& shipment, std::optional<std::int32_t> layer);

  struct Finished {
    RequestId id = 0;
    std::int32_t decode_instance = 0;  // where it went
    bool ok = true;
    std::uint64_t bytes = 0;
    std::uint64_t runs = 0;     // page runs moved (one put or NCCL message each), all layers
    double seconds = 0.0;       // first post -> final
    double tail_seconds = 0.0;  // start of the last post (the compute it waited for is done)
                                // -> final: the transfer time not hidden behind compute
    std::int32_t failed_attempts = 0;
  };
  // Progresses the transport, retries failures, and returns the shipments that became final.
  std::vector<Finished> poll();
  bool idle() const { return shipments_.empty(); }

 private:
  struct Transfer {
    int local_region = 0;
    int remote_region = 0;
    std::shared_ptr<const std::vector<PutSegment>> segments;  // shared by every layer
    std::uint64_t bytes = 0;
    std::uint64_t transfer_id = 0;
    std::int32_t attempts = 1;
    TransferState state = TransferState::kPending;
  };
  struct Shipment {
    std::int32_t decode_instance = 0;
    // Per decode TP rank: the segments of one layer (the same for every layer), coalesced into
    // runs contiguous on both sides; null when that rank holds none of this rank's heads.
    std::vector<std::shared_ptr<const std::vector<PutSegment>>> segments_by_dest;
    std::vector<Transfer> transfers;
    std::int32_t layers_posted = 0;
    std::int32_t failed_attempts = 0;
    bool failed = false;
    std::chrono::steady_clock::time_point start;
    std::chrono::steady_clock::time_point last_post;
  };

  KvFabric& fabric_;
  const Topology& topology_;
  const ModelConfig& model_;
  KvPageLayout layout_;
  std::chrono::milliseconds timeout_;
  std::int32_t retries_;
  std::unordered_map<RequestId, Shipment> shipments_;
};

}  // namespace podserve
