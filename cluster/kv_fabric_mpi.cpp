#include "cluster/kv_fabric_mpi.h"

#include <spdlog/spdlog.h>

#include <vector>

#include "cluster/mpi_check.h"

namespace podserve {
namespace {

bool spans_hosts(const Topology& topology) {
  for (const auto& endpoint : topology.endpoints())
    if (endpoint.host != topology.endpoints().front().host) return true;
  return false;
}

bool in_fabric(const Topology& topology, const ServiceConfig& config) {
  return config.scheduler.mode == SchedulerMode::kDisaggregated && !topology.is_router();
}

// Every rank's blob (empty for ranks outside the fabric), gathered on every rank.
Result<std::vector<std::vector<std::uint8_t>>> all_gather_blobs(
    const std::vector<std::uint8_t>& mine) {
  int world = 0;
  PODSERVE_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world));
  int my_size = static_cast<int>(mine.size());
  std::vector<int> sizes(world), offsets(world);
  PODSERVE_MPI(MPI_Allgather(&my_size, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD));
  int total = 0;
  for (int r = 0; r < world; ++r) {
    offsets[r] = total;
    total += sizes[r];
  }
  std::vector<std::uint8_t> all(static_cast<std::size_t>(total));
  PODSERVE_MPI(MPI_Allgatherv(mine.data(), my_size, MPI_BYTE, all.data(), sizes.data(),
                              offsets.data(), MPI_BYTE, MPI_COMM_WORLD));
  std::vector<std::vector<std::uint8_t>> blobs(world);
  for (int r = 0; r < world; ++r)
    blobs[r].assign(all.begin() + offsets[r], all.begin() + offsets[r] + sizes[r]);
  return blobs;
}

}  // namespace

Result<std::unique_ptr<KvFabric>> open_kv_fabric(const Topology& topology,
                                                 const ServiceConfig& config, MemoryKind kv_memory,
                                                 int cuda_device, void* delivery_stream) {
  if (!in_fabric(topology, config)) return std::unique_ptr<KvFabric>{};
  KvFabricOptions options;
  options.backend = config.kv_transfer.backend;
  options.peer_error_handling = config.kv_transfer.peer_error_handling;
  options.spans_hosts = spans_hosts(topology);
  options.faults.drop_probability = config.kv_transfer.inject_drop_rate;
  options.faults.stall_probability = config.kv_transfer.inject_stall_rate;
  options.faults.seed =
      config.model.seed * 7919 + static_cast<std::uint64_t>(topology.world_rank());
  options.cuda_device = cuda_device;
  options.delivery_stream = delivery_stream;
  return KvFabric::open(options, kv_memory);
}

Status exchange_kv_fabric(KvFabric* fabric, const Topology& topology, const ServiceConfig& config,
                          std::span<const KvCacheView> layers) {
  if (config.scheduler.mode != SchedulerMode::kDisaggregated) return Status::Ok();
  std::vector<std::uint8_t> address;
  if (fabric != nullptr) {
    PODSERVE_ASSIGN_OR_RETURN(address, fabric->register_kv_cache(layers));
  }
  PODSERVE_ASSIGN_OR_RETURN(const auto addresses, all_gather_blobs(address));
  if (fabric == nullptr || topology.instance().role != InstanceRole::kPrefill) return Status::Ok();

  // Prefill ranks connect to every decode rank and learn its layer regions.
  for (const auto& instance : topology.instances()) {
    if (instance.role != InstanceRole::kDecode) continue;
    for (int rank = instance.first_rank; rank < instance.first_rank + instance.tp; ++rank)
      PODSERVE_RETURN_IF_ERROR(fabric->connect(rank, addresses[rank]));
  }
  spdlog::info("KV fabric ready: {} connected to {} decode ranks over {}", topology.role_name(),
               fabric->num_peers(), fabric->transport().name());
  return Status::Ok();
}

KvShipperOptions kv_shipper_options(const Topology& topology, const ServiceConfig& config,
                                    const ModelConfig& model, DType kv_dtype) {
  KvShipperOptions options;
  options.layout = {model.num_kv_heads, model.head_dim, config.kv_cache.page_size,
                    dtype_size(kv_dtype)};
  options.shard = {topology.instance().tp, topology.tp_rank()};
  options.num_layers = model.num_layers;
  options.timeout = std::chrono::milliseconds(config.kv_transfer.timeout_ms);
  options.retries = config.kv_transfer.retries;
  for (const auto& instance : topology.instances()) {
    if (instance.role == InstanceRole::kDecode)
      options.decode_instances[instance.id] = {instance.first_rank, instance.tp};
  }
  return options;
}

}  // namespace podserve
