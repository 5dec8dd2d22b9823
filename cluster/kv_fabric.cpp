#include "cluster/kv_fabric.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "cluster/mpi_check.h"
#include "core/wire.h"
#include "kvtransfer/cuda_ipc_transport.h"
#include "kvtransfer/host_staged_transport.h"
#include "kvtransfer/ucx_transport.h"

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

std::string resolve_transfer_backend(const std::string& configured, MemoryKind kv_memory,
                                     bool spans_hosts) {
  if (configured != "auto") return configured;
  return kv_memory == MemoryKind::kDevice && !spans_hosts ? "cuda_ipc" : "ucx";
}

Result<std::unique_ptr<KvFabric>> KvFabric::open(const Topology& topology,
                                                 const ServiceConfig& config, MemoryKind kv_memory,
                                                 int cuda_device, void* delivery_stream) {
  if (!in_fabric(topology, config)) return std::unique_ptr<KvFabric>{};
  FaultInjection faults;
  faults.drop_probability = config.kv_transfer.inject_drop_rate;
  faults.stall_probability = config.kv_transfer.inject_stall_rate;
  faults.seed = config.model.seed * 7919 + static_cast<std::uint64_t>(topology.world_rank());
  std::unique_ptr<KvFabric> fabric(new KvFabric());
  fabric->kv_memory_ = kv_memory;
  const std::string backend =
      resolve_transfer_backend(config.kv_transfer.backend, kv_memory, spans_hosts(topology));
  if (backend == "cuda_ipc") {
    if (kv_memory != MemoryKind::kDevice) {
      return invalid_argument(
          "config key 'kv_transfer.backend': cuda_ipc moves GPU pages, and this rank's KV cache "
          "is in host memory (CPU backend): use ucx");
    }
    if (spans_hosts(topology)) {
      return invalid_argument(
          "config key 'kv_transfer.backend': cuda_ipc connects the ranks of one host, and this "
          "deployment spans hosts: use ucx");
    }
    PODSERVE_ASSIGN_OR_RETURN(fabric->transport_, make_cuda_ipc_transport({cuda_device, faults}));
    return fabric;
  }
  if (backend != "ucx") {
    // The NCCL channel (kvtransfer/nccl_transport.h) is two-sided: the decode rank would post a
    // matching receive for every shipment, a protocol the service does not run yet.
    return unimplemented("config key 'kv_transfer.backend': '" + backend +
                         "' is built and benchmarked (podserve-kvtransfer-bench) but the service "
                         "ships KV pages over ucx or cuda_ipc only");
  }
  UcxOptions options;
  options.faults = faults;
  options.peer_error_handling =
      config.kv_transfer.peer_error_handling == "on" ||
      (config.kv_transfer.peer_error_handling == "auto" && spans_hosts(topology));
  PODSERVE_ASSIGN_OR_RETURN(auto ucx, make_ucx_transport(options));
  PODSERVE_ASSIGN_OR_RETURN(fabric->transport_, make_transport_for(std::move(ucx), kv_memory,
                                                                   {cuda_device, delivery_stream}));
  return fabric;
}

std::function<Result<DeviceBuffer>(std::size_t)> KvFabric::kv_cache_allocator() {
  return [this](std::size_t bytes) -> Result<DeviceBuffer> {
    PODSERVE_ASSIGN_OR_RETURN(const auto region, transport_->allocate_region(bytes));
    allocated_regions_[region.base] = region.id;
    // The transport owns and frees the memory.
    return DeviceBuffer(region.base, bytes, [](void*) {});
  };
}

Status KvFabric::exchange(KvFabric* fabric, const Topology& topology, const ServiceConfig& config,
                          LlamaModel* model) {
  if (config.scheduler.mode != SchedulerMode::kDisaggregated) return Status::Ok();
  std::vector<std::uint8_t> blob;
  if (fabric != nullptr) {
    fabric->model_ = model;
    WireWriter w;
    const auto address = fabric->transport_->local_address();
    w.put_vector(std::span<const std::uint8_t>(address));
    const int layers = model->config().num_layers;
    w.put<std::int32_t>(layers);
    for (int layer = 0; layer < layers; ++layer) {
      const auto view = model->kv_cache(layer);
      int region = 0;
      if (auto allocated = fabric->allocated_regions_.find(view.data);
          allocated != fabric->allocated_regions_.end()) {
        region = allocated->second;
      } else {
        const std::size_t bytes = view.page_elements() * view.num_pages * dtype_size(view.dtype);
        PODSERVE_ASSIGN_OR_RETURN(
            region, fabric->transport_->register_region(view.data, bytes, fabric->kv_memory_));
      }
      fabric->local_regions_.push_back(region);
      PODSERVE_ASSIGN_OR_RETURN(const auto descriptor,
                                fabric->transport_->region_descriptor(region));
      w.put_vector(std::span<const std::uint8_t>(descriptor.descriptor));
    }
    blob = w.take();
  }
  PODSERVE_ASSIGN_OR_RETURN(const auto blobs, all_gather_blobs(blob));
  if (fabric == nullptr || topology.instance().role != InstanceRole::kPrefill) return Status::Ok();

  // Prefill ranks connect to every decode rank and learn its layer regions.
  for (const auto& instance : topology.instances()) {
    if (instance.role != InstanceRole::kDecode) continue;
    for (int rank = instance.first_rank; rank < instance.first_rank + instance.tp; ++rank) {
      WireReader r(blobs[rank]);
      std::vector<std::uint8_t> address;
      std::int32_t layers = 0;
      PODSERVE_RETURN_IF_ERROR(r.get_vector(address));
      PODSERVE_RETURN_IF_ERROR(r.get(layers));
      PODSERVE_RETURN_IF_ERROR(fabric->transport_->connect(rank, address));
      for (int layer = 0; layer < layers; ++layer) {
        RemoteRegion region;
        PODSERVE_RETURN_IF_ERROR(r.get_vector(region.descriptor));
        PODSERVE_ASSIGN_OR_RETURN(const int handle,
                                  fabric->transport_->add_remote_region(rank, region));
        fabric->remote_regions_[{rank, layer}] = handle;
      }
    }
  }
  spdlog::info("KV fabric ready: {} connected to {} decode ranks over {}", topology.role_name(),
               fabric->remote_regions_.size() / std::max(1, model->config().num_layers),
               fabric->transport_->name());
  return Status::Ok();
}

Status KvFabric::deliver(std::span<const std::int32_t> pages) {
  if (local_regions_.empty()) return Status::Ok();
  // Every layer's cache has the same page layout, so one segment list serves them all.
  const auto view = model_->kv_cache(0);
  const std::uint64_t page_bytes = view.page_elements() * dtype_size(view.dtype);
  std::vector<PutSegment> segments;
  segments.reserve(pages.size());
  for (const std::int32_t page : pages) {
    const std::uint64_t offset = static_cast<std::uint64_t>(page) * page_bytes;
    segments.push_back({offset, offset, page_bytes});
  }
  for (const int region : local_regions_)
    PODSERVE_RETURN_IF_ERROR(transport_->deliver(region, segments));
  return Status::Ok();
}

KvShipper::KvShipper(KvFabric& fabric, const Topology& topology, const ServiceConfig& config,
                     const ModelConfig& model)
    : fabric_(fabric),
      topology_(topology),
      model_(model),
      layout_{model.num_kv_heads, model.head_dim, config.kv_cache.page_size,
              dtype_size(fabric.model().kv_cache(0).dtype)},
      timeout_(config.kv_transfer.timeout_ms),
      retries_(config.kv_transfer.retries) {}

Status KvShipper::post(const KvShipment& shipment, std::optional<std::int32_t> layer) {
  const auto& dest = topology_.instances().at(shipment.decode_instance);
  auto [it, inserted] = shipments_.try_emplace(shipment.seq_id);
  auto& state = it->second;
  const auto now = std::chrono::steady_clock::now();
  if (inserted) {
    state.start = now;
    state.decode_instance = shipment.decode_instance;
    for (int dest_tp_rank = 0; dest_tp_rank < dest.tp; ++dest_tp_rank) {
      auto segments = coalesce_segments(
          shard_segments(layout_, {topology_.instance().tp, topology_.tp_rank()},
                         {dest.tp, dest_tp_rank}, shipment.source_pages, shipment.dest_pages));
      state.segments_by_dest.push_back(
          segments.empty() ? nullptr
                           : std::make_shared<const std::vector<PutSegment>>(std::move(segments)));
    }
  }
  state.last_post = now;  // the compute this post waited for is done
  const std::int32_t first = layer.value_or(0);
  const std::int32_t last = layer ? *layer + 1 : model_.num_layers;
  for (int dest_tp_rank = 0; dest_tp_rank < dest.tp; ++dest_tp_rank) {
    const auto& segments = state.segments_by_dest[dest_tp_rank];
    if (!segments) continue;
    std::uint64_t bytes = 0;
    for (const auto& s : *segments) bytes += s.bytes;
    for (std::int32_t l = first; l < last; ++l) {
      Transfer t;
      t.local_region = fabric_.local_region(l);
      t.remote_region = fabric_.remote_region(dest.first_rank + dest_tp_rank, l);
      t.segments = segments;
      t.bytes = bytes;
      PODSERVE_ASSIGN_OR_RETURN(
          t.transfer_id,
          fabric_.transport().post_put(t.local_region, t.remote_region, *t.segments, timeout_));
      state.transfers.push_back(std::move(t));
    }
  }
  state.layers_posted += last - first;
  return Status::Ok();
}

std::vector<KvShipper::Finished> KvShipper::poll() {
  std::vector<Finished> finished;
  if (shipments_.empty()) return finished;
  auto& transport = fabric_.transport();
  transport.progress();
  for (auto it = shipments_.begin(); it != shipments_.end();) {
    auto& shipment = it->second;
    bool all_final = shipment.layers_posted >= model_.num_layers;
    for (auto& t : shipment.transfers) {
      if (t.state != TransferState::kPending) continue;
      const auto state = transport.poll(t.transfer_id);
      if (state == TransferState::kPending) {
        all_final = false;
        continue;
      }
      transport.release(t.transfer_id);
      if (state == TransferState::kDone) {
        t.state = state;
        continue;
      }
      ++shipment.failed_attempts;
      if (t.attempts <= retries_ && !shipment.failed) {
        auto reposted = transport.post_put(t.local_region, t.remote_region, *t.segments, timeout_);
        if (reposted.ok()) {
          ++t.attempts;
          t.transfer_id = *reposted;
          all_final = false;
          continue;
        }
        spdlog::warn("KV transfer for request {} could not be reposted: {}", it->first,
                     reposted.status().to_string());
      }
      t.state = state;
      shipment.failed = true;
    }
    if (shipment.failed) {
      // Fence the rest: nothing of a failed shipment may land after it is reported.
      for (auto& t : shipment.transfers) {
        if (t.state == TransferState::kPending) transport.cancel(t.transfer_id);
      }
    }
    if (!all_final) {
      ++it;
      continue;
    }
    Finished f;
    f.id = it->first;
    f.decode_instance = shipment.decode_instance;
    f.ok = !shipment.failed;
    f.failed_attempts = shipment.failed_attempts;
    const auto now = std::chrono::steady_clock::now();
    f.seconds = std::chrono::duration<double>(now - shipment.start).count();
    f.tail_seconds = std::chrono::duration<double>(now - shipment.last_post).count();
    for (const auto& t : shipment.transfers)
      if (t.state == TransferState::kDone) {
        f.bytes += t.bytes;
        f.runs += t.segments->size();
      }
    finished.push_back(f);
    it = shipments_.erase(it);
  }
  return finished;
}

}  // namespace podserve
