// The KV fabric's wiring (kvtransfer/kv_fabric.h, kvtransfer/kv_shipper.h): which ranks join it,
// its options from the configuration, and the start-up exchange of fabric addresses over MPI,
// after which every prefill rank is connected to every decode rank (peer id: world rank).
#pragma once

#include <memory>
#include <span>

#include "cluster/topology.h"
#include "core/backend.h"
#include "core/config.h"
#include "core/model_config.h"
#include "core/status.h"
#include "kvtransfer/kv_fabric.h"
#include "kvtransfer/kv_shipper.h"

namespace podserve {

// This rank's fabric, or nullptr on ranks outside it (the router, and every rank in colocated
// mode). Create it before the model, so the model can place its KV cache in transport memory
// (KvFabric::kv_cache_allocator), and destroy it after the model. delivery_stream: see
// KvFabricOptions.
Result<std::unique_ptr<KvFabric>> open_kv_fabric(const Topology& topology,
                                                 const ServiceConfig& config, MemoryKind kv_memory,
                                                 int cuda_device, void* delivery_stream = nullptr);

// Collective over MPI_COMM_WORLD in disaggregated mode (every rank calls it; ranks outside the
// fabric pass nullptr and no layers): registers the KV cache's layers, exchanges fabric
// addresses, and connects prefill ranks to every decode rank.
Status exchange_kv_fabric(KvFabric* fabric, const Topology& topology, const ServiceConfig& config,
                          std::span<const KvCacheView> layers);

// A prefill rank's shipper options: the model's KV geometry, this rank's shard, the
// kv_transfer retry policy and every decode instance's ranks.
KvShipperOptions kv_shipper_options(const Topology& topology, const ServiceConfig& config,
                                    const ModelConfig& model, DType kv_dtype);

}  // namespace podserve
