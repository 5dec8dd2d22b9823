#include "kvtransfer/kv_fabric.h"

#include <algorithm>

#include "core/wire.h"
#include "kvtransfer/cuda_ipc_transport.h"
#include "kvtransfer/host_staged_transport.h"
#include "kvtransfer/ucx_transport.h"

namespace podserve {

std::string resolve_transfer_backend(const std::string& configured, MemoryKind kv_memory,
                                     bool spans_hosts) {
  if (configured != "auto") return configured;
  return kv_memory == MemoryKind::kDevice && !spans_hosts ? "cuda_ipc" : "ucx";
}

Result<std::unique_ptr<KvFabric>> KvFabric::open(const KvFabricOptions& options,
                                                 MemoryKind kv_memory) {
  std::unique_ptr<KvFabric> fabric(new KvFabric());
  fabric->kv_memory_ = kv_memory;
  const std::string backend =
      resolve_transfer_backend(options.backend, kv_memory, options.spans_hosts);
  if (backend == "cuda_ipc") {
    if (kv_memory != MemoryKind::kDevice) {
      return invalid_argument(
          "config key 'kv_transfer.backend': cuda_ipc moves GPU pages, and this rank's KV cache "
          "is in host memory (CPU backend): use ucx");
    }
    if (options.spans_hosts) {
      return invalid_argument(
          "config key 'kv_transfer.backend': cuda_ipc connects the ranks of one host, and this "
          "deployment spans hosts: use ucx");
    }
    PODSERVE_ASSIGN_OR_RETURN(fabric->transport_,
                              make_cuda_ipc_transport({options.cuda_device, options.faults}));
    return fabric;
  }
  if (backend != "ucx") {
    // The NCCL channel (nccl_transport.h) is two-sided: the decode rank would post a matching
    // receive for every shipment, a protocol the service does not run yet.
    return unimplemented("config key 'kv_transfer.backend': '" + backend +
                         "' is built and benchmarked (podserve-kvtransfer-bench) but the service "
                         "ships KV pages over ucx or cuda_ipc only");
  }
  UcxOptions ucx_options;
  ucx_options.faults = options.faults;
  ucx_options.peer_error_handling = options.peer_error_handling == "on" ||
                                    (options.peer_error_handling == "auto" && options.spans_hosts);
  PODSERVE_ASSIGN_OR_RETURN(auto ucx, make_ucx_transport(ucx_options));
  PODSERVE_ASSIGN_OR_RETURN(fabric->transport_,
                            make_transport_for(std::move(ucx), kv_memory,
                                               {options.cuda_device, options.delivery_stream}));
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

Result<std::vector<std::uint8_t>> KvFabric::register_kv_cache(std::span<const KvCacheView> layers) {
  if (!local_regions_.empty()) return internal_error("the KV cache is registered already");
  WireWriter w;
  const auto address = transport_->local_address();
  w.put_vector(std::span<const std::uint8_t>(address));
  w.put<std::int32_t>(static_cast<std::int32_t>(layers.size()));
  for (const KvCacheView& view : layers) {
    const std::uint64_t page_bytes = view.page_elements() * dtype_size(view.dtype);
    if (page_bytes_ != 0 && page_bytes != page_bytes_)
      return invalid_argument("KV cache layers differ in page size");
    page_bytes_ = page_bytes;
    int region = 0;
    if (auto allocated = allocated_regions_.find(view.data);
        allocated != allocated_regions_.end()) {
      region = allocated->second;
    } else {
      PODSERVE_ASSIGN_OR_RETURN(
          region, transport_->register_region(view.data, page_bytes * view.num_pages, kv_memory_));
    }
    local_regions_.push_back(region);
    PODSERVE_ASSIGN_OR_RETURN(const auto descriptor, transport_->region_descriptor(region));
    w.put_vector(std::span<const std::uint8_t>(descriptor.descriptor));
  }
  return w.take();
}

Status KvFabric::connect(int peer, std::span<const std::uint8_t> address) {
  WireReader r(address);
  std::vector<std::uint8_t> transport_address;
  std::int32_t layers = 0;
  PODSERVE_RETURN_IF_ERROR(r.get_vector(transport_address));
  PODSERVE_RETURN_IF_ERROR(r.get(layers));
  PODSERVE_RETURN_IF_ERROR(transport_->connect(peer, transport_address));
  for (int layer = 0; layer < layers; ++layer) {
    RemoteRegion region;
    PODSERVE_RETURN_IF_ERROR(r.get_vector(region.descriptor));
    PODSERVE_ASSIGN_OR_RETURN(const int handle, transport_->add_remote_region(peer, region));
    remote_regions_[{peer, layer}] = handle;
  }
  return Status::Ok();
}

Status KvFabric::deliver(std::span<const std::int32_t> pages) {
  if (local_regions_.empty()) return Status::Ok();
  // Every layer's cache has the same page layout, so one segment list serves them all.
  std::vector<PutSegment> segments;
  segments.reserve(pages.size());
  for (const std::int32_t page : pages) {
    const std::uint64_t offset = static_cast<std::uint64_t>(page) * page_bytes_;
    segments.push_back({offset, offset, page_bytes_});
  }
  for (const int region : local_regions_)
    PODSERVE_RETURN_IF_ERROR(transport_->deliver(region, segments));
  return Status::Ok();
}

}  // namespace podserve
