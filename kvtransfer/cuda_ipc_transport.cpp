#include "kvtransfer/cuda_ipc_transport.h"

#include <cuda.h>  // CUdeviceptr, CUresult: cuMemGetAddressRange through the runtime's entry point
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/wire.h"
#include "kvtransfer/cuda_check.h"
#include "kvtransfer/cuda_poll.h"
#include "kvtransfer/page_gather.h"
#include "kvtransfer/transfer_table.h"

namespace podserve {
namespace {

using Clock = std::chrono::steady_clock;

// How a put's coalesced segments are copied. The copy engines move a long run at the link's
// full rate (390 GB/s GPU to GPU on H100 NVLink, above NCCL's 344) but cost about a microsecond
// per copy, so 64 KiB pages in separate copies (or one cudaMemcpyBatchAsync of them) reach only
// ~60 GB/s; the pack kernel (page_gather.h, gathering into the peer's mapped memory) copies up to
// 1,024 runs per launch with the SMs (~345 GB/s for 64 KiB pages). Runs of at least this many
// bytes on average, or fewer than kKernelMinSegments runs, go to the copy engines.
constexpr std::uint64_t kCopyEngineMinMeanBytes = 1 << 20;
constexpr std::size_t kKernelMinSegments = 4;

// This boot of this host: two processes share device memory over IPC only when these match.
std::string host_boot_id() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (file && std::getline(file, id) && !id.empty()) return id;
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return std::string("host:") + name;
}

struct Address {
  std::string boot_id;
  std::int64_t pid = 0;
};

std::vector<std::uint8_t> encode(const Address& address) {
  WireWriter w;
  w.put_string(address.boot_id);
  w.put(address.pid);
  return w.take();
}

Result<Address> decode_address(std::span<const std::uint8_t> bytes) {
  WireReader r(bytes);
  Address address;
  PODSERVE_RETURN_IF_ERROR(r.get_string(address.boot_id));
  PODSERVE_RETURN_IF_ERROR(r.get(address.pid));
  return address;
}

struct Descriptor {
  cudaIpcMemHandle_t handle{};
  std::uint64_t offset = 0;  // of the region's base in the exported allocation
  std::uint64_t bytes = 0;
};

// The start of the allocation holding `pointer` (cudaIpcGetMemHandle exports whole allocations,
// and an importer's mapping starts there).
Result<std::uint8_t*> allocation_base(void* pointer) {
  using GetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  static GetAddressRange get_address_range = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &function, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      function = nullptr;
    }
    return reinterpret_cast<GetAddressRange>(function);
  }();
  if (get_address_range == nullptr) {
    return internal_error("CUDA IPC: the driver has no cuMemGetAddressRange");
  }
  CUdeviceptr base = 0;
  size_t size = 0;
  const CUresult result = get_address_range(&base, &size, reinterpret_cast<CUdeviceptr>(pointer));
  if (result != CUDA_SUCCESS) {
    return internal_error("CUDA IPC: cuMemGetAddressRange failed with CUresult " +
                          std::to_string(static_cast<int>(result)));
  }
  return reinterpret_cast<std::uint8_t*>(base);
}

struct LocalRegion {
  std::uint8_t* base = nullptr;
  std::uint64_t bytes = 0;
  Descriptor descriptor;
};

struct RemoteRegionState {
  int peer_id = 0;
  std::uint8_t* base = nullptr;  // in this process's mapping of the peer's allocation
  std::uint64_t bytes = 0;
};

struct Transfer {
  CudaEventPtr copied;  // null for a transfer dropped by fault injection (already final)
  std::uint64_t bytes = 0;
  Clock::time_point deadline;
  bool stalled = false;  // fault injection: the copy runs, its completion is never reported
  bool cancel_requested = false;
  bool released = false;
  TransferState state = TransferState::kPending;
};

class CudaIpcTransport final : public KvTransport {
 public:
  static Result<std::unique_ptr<KvTransport>> create(const CudaIpcOptions& options) {
    std::unique_ptr<CudaIpcTransport> transport(new CudaIpcTransport(options));
    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(options.cuda_device));
    PODSERVE_ASSIGN_OR_RETURN(transport->stream_, make_cuda_stream());
    return std::unique_ptr<KvTransport>(std::move(transport));
  }

  ~CudaIpcTransport() override {
    CudaDeviceScope scope;
    if (!scope.enter(device_).ok()) return;
    // Copies in flight write the peers' memory through the mappings: finish them first.
    if (stream_) cudaStreamSynchronize(stream_.get());
    transfers_.clear();
    stream_.reset();
    for (auto& [handle, mapping] : mappings_) cudaIpcCloseMemHandle(mapping);
  }

  std::string name() const override { return "cuda-ipc"; }
  bool supports_device_memory() const override { return true; }
  std::vector<std::uint8_t> local_address() const override { return encode(address_); }

  Status connect(int peer_id, std::span<const std::uint8_t> peer_address) override {
    if (peers_.contains(peer_id)) {
      return invalid_argument("CUDA IPC connect: peer " + std::to_string(peer_id) +
                              " is already connected");
    }
    PODSERVE_ASSIGN_OR_RETURN(const Address peer, decode_address(peer_address));
    if (peer.boot_id != address_.boot_id) {
      return unavailable("CUDA IPC connect: peer " + std::to_string(peer_id) +
                         " runs on another host (or boot); cuda_ipc connects the "
                         "ranks of one host only: use ucx across hosts");
    }
    if (peer.pid == address_.pid) {
      return unavailable("CUDA IPC connect: peer " + std::to_string(peer_id) +
                         " is this process (CUDA IPC cannot map a process's own memory)");
    }
    peers_.emplace(peer_id, peer);
    return Status::Ok();
  }

  Result<int> register_region(void* base, std::size_t bytes, MemoryKind kind) override {
    if (kind != MemoryKind::kDevice) {
      return invalid_argument(
          "CUDA IPC register_region: device memory only (host KV caches "
          "move over ucx)");
    }
    if (base == nullptr || bytes == 0) {
      return invalid_argument("CUDA IPC register_region: empty region");
    }
    cudaPointerAttributes attributes{};
    PODSERVE_CHECK(cudaPointerGetAttributes(&attributes, base));
    if (attributes.type != cudaMemoryTypeDevice || attributes.device != device_) {
      return invalid_argument("CUDA IPC register_region: not device memory of CUDA device " +
                              std::to_string(device_));
    }
    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
    LocalRegion region;
    region.base = static_cast<std::uint8_t*>(base);
    region.bytes = bytes;
    PODSERVE_ASSIGN_OR_RETURN(std::uint8_t* const allocation, allocation_base(base));
    PODSERVE_CHECK(cudaIpcGetMemHandle(&region.descriptor.handle, base));
    region.descriptor.offset = static_cast<std::uint64_t>(region.base - allocation);
    region.descriptor.bytes = bytes;
    const int id = next_region_id_++;
    local_.emplace(id, region);
    return id;
  }

  Result<AllocatedRegion> allocate_region(std::size_t) override {
    return unimplemented(
        "CUDA IPC allocate_region: the transport moves device memory the "
        "caller registers; it allocates none");
  }

  Result<RemoteRegion> region_descriptor(int local_region_id) const override {
    auto found = local_.find(local_region_id);
    if (found == local_.end()) {
      return not_found("CUDA IPC: no local region " + std::to_string(local_region_id));
    }
    RemoteRegion region;
    region.descriptor.resize(sizeof(Descriptor));
    std::memcpy(region.descriptor.data(), &found->second.descriptor, sizeof(Descriptor));
    return region;
  }

  Result<int> add_remote_region(int peer_id, const RemoteRegion& region) override {
    if (!peers_.contains(peer_id)) {
      return unavailable("CUDA IPC add_remote_region: peer " + std::to_string(peer_id) +
                         " is not connected");
    }
    if (region.descriptor.size() != sizeof(Descriptor)) {
      return invalid_argument("CUDA IPC add_remote_region: descriptor of " +
                              std::to_string(region.descriptor.size()) + " bytes, expected " +
                              std::to_string(sizeof(Descriptor)));
    }
    Descriptor descriptor;
    std::memcpy(&descriptor, region.descriptor.data(), sizeof(Descriptor));
    // One mapping per exported allocation: a handle opens once per process.
    const std::string key(reinterpret_cast<const char*>(&descriptor.handle),
                          sizeof(descriptor.handle));
    auto mapping = mappings_.find(key);
    if (mapping == mappings_.end()) {
      CudaDeviceScope scope;
      PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
      void* mapped = nullptr;
      PODSERVE_CHECK(
          cudaIpcOpenMemHandle(&mapped, descriptor.handle, cudaIpcMemLazyEnablePeerAccess));
      mapping = mappings_.emplace(key, mapped).first;
    }
    const int handle = next_region_id_++;
    remote_.emplace(
        handle,
        RemoteRegionState{peer_id, static_cast<std::uint8_t*>(mapping->second) + descriptor.offset,
                          descriptor.bytes});
    return handle;
  }

  Result<std::uint64_t> post_put(int local_region_id, int remote_region_handle,
                                 std::span<const PutSegment> segments,
                                 std::chrono::milliseconds timeout) override {
    auto local = local_.find(local_region_id);
    if (local == local_.end()) {
      return not_found("CUDA IPC post_put: no local region " + std::to_string(local_region_id));
    }
    auto remote = remote_.find(remote_region_handle);
    if (remote == remote_.end()) {
      return not_found("CUDA IPC post_put: no remote region " +
                       std::to_string(remote_region_handle));
    }
    const std::vector<PutSegment> coalesced = coalesce_segments(segments);
    PODSERVE_RETURN_IF_ERROR(check_segments_within(
        coalesced, SegmentSide::kLocal, local->second.bytes, "CUDA IPC post_put: segment",
        "local region " + std::to_string(local_region_id)));
    PODSERVE_RETURN_IF_ERROR(check_segments_within(
        coalesced, SegmentSide::kRemote, remote->second.bytes, "CUDA IPC post_put: segment",
        "remote region " + std::to_string(remote_region_handle)));

    Transfer transfer;
    transfer.deadline = Clock::now() + timeout;
    for (const PutSegment& segment : coalesced) transfer.bytes += segment.bytes;
    const std::uint64_t id = next_transfer_id_++;
    const InjectedFault fault = draw_fault(options_.faults, rng_);
    if (fault == InjectedFault::kDrop) {
      finish(transfer, TransferState::kFailed);
      transfers_.emplace(id, std::move(transfer));
      return id;
    }
    transfer.stalled = fault == InjectedFault::kStall;

    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
    if (Status queued = queue_copies(coalesced, transfer, local->second.base, remote->second.base);
        !queued.ok()) {
      // Some copies may be queued already: the error is final only once none can still write
      // (the fence an error return owes the caller, who may reuse the target pages at once).
      cudaStreamSynchronize(stream_.get());
      cudaGetLastError();
      return queued;
    }
    transfers_.emplace(id, std::move(transfer));
    return id;
  }

  bool progress() override {
    const auto now = Clock::now();
    return kvtransfer_detail::progress_on_device(
        transfers_, device_, "CUDA IPC", [&](Transfer& transfer) { return update(transfer, now); });
  }

  TransferState poll(std::uint64_t transfer_id) override {
    return kvtransfer_detail::poll_on_device(
        transfers_, transfer_id, device_, "CUDA IPC",
        [this](Transfer& transfer) { update(transfer, Clock::now()); });
  }

  void cancel(std::uint64_t transfer_id) override {
    auto found = transfers_.find(transfer_id);
    if (found == transfers_.end() || found->second.state != TransferState::kPending) return;
    found->second.cancel_requested = true;
  }

  void release(std::uint64_t transfer_id) override {
    kvtransfer_detail::release_transfer(transfers_, transfer_id,
                                        [this](std::uint64_t id) { cancel(id); });
  }

  Status deliver(int local_region_id, std::span<const PutSegment> segments) override {
    auto local = local_.find(local_region_id);
    if (local == local_.end()) {
      return not_found("CUDA IPC deliver: no local region " + std::to_string(local_region_id));
    }
    return check_segments_within(segments, SegmentSide::kRemote, local->second.bytes,
                                 "CUDA IPC deliver: range",
                                 "region " + std::to_string(local_region_id));
  }

  TransportStats stats() const override { return stats_; }

 private:
  explicit CudaIpcTransport(const CudaIpcOptions& options)
      : options_(options),
        device_(options.cuda_device),
        address_{host_boot_id(), static_cast<std::int64_t>(getpid())},
        rng_(options.faults.seed) {}

  // Queues the copies of `segments` (bounds-checked) on the stream. Needs device_ current.
  Status copy(const std::vector<PutSegment>& segments, std::uint64_t bytes, std::uint8_t* local,
              std::uint8_t* remote) {
    if (segments.size() < kKernelMinSegments ||
        bytes / segments.size() >= kCopyEngineMinMeanBytes) {
      for (const PutSegment& segment : segments) {
        PODSERVE_CHECK(cudaMemcpyAsync(remote + segment.remote_offset, local + segment.local_offset,
                                       segment.bytes, cudaMemcpyDefault, stream_.get()));
      }
      return Status::Ok();
    }
    // The pack kernel's gather with the peer's mapping as the "packed" side: local runs ->
    // remote runs, wherever each lies.
    std::vector<PackedSegment> runs(segments.size());
    for (std::size_t i = 0; i < segments.size(); ++i) {
      runs[i] = {segments[i].local_offset, segments[i].remote_offset, segments[i].bytes};
    }
    return launch_pack(PackDirection::kGather, local, remote, runs, 0, stream_.get());
  }

  // The copies of a put and the event after them. Needs device_ current.
  Status queue_copies(const std::vector<PutSegment>& segments, Transfer& transfer,
                      std::uint8_t* local, std::uint8_t* remote) {
    PODSERVE_RETURN_IF_ERROR(copy(segments, transfer.bytes, local, remote));
    PODSERVE_ASSIGN_OR_RETURN(transfer.copied, make_cuda_event());
    PODSERVE_CHECK(cudaEventRecord(transfer.copied.get(), stream_.get()));
    return Status::Ok();
  }

  // Moves a pending transfer along; true when it became final. Needs device_ current.
  bool update(Transfer& transfer, Clock::time_point now) {
    if (transfer.state != TransferState::kPending) return false;
    const cudaError_t copied = cudaEventQuery(transfer.copied.get());
    if (copied == cudaErrorNotReady) return false;
    if (copied != cudaSuccess) {
      SPDLOG_WARN("CUDA IPC: copy failed: {}", cudaGetErrorString(copied));
      cudaGetLastError();
      finish(transfer, TransferState::kFailed);
      return true;
    }
    // The copy is over: nothing of this transfer is written any more (the fence).
    if (transfer.cancel_requested) {
      finish(transfer, TransferState::kCancelled);
      return true;
    }
    if (now >= transfer.deadline) {
      finish(transfer, TransferState::kTimedOut);
      return true;
    }
    if (transfer.stalled) return false;
    finish(transfer, TransferState::kDone);
    return true;
  }

  void finish(Transfer& transfer, TransferState state) {
    transfer.state = state;
    transfer.copied.reset();
    kvtransfer_detail::count_final(stats_, state, transfer.bytes);
  }

  const CudaIpcOptions options_;
  const int device_;
  const Address address_;
  std::mt19937_64 rng_;
  CudaStreamPtr stream_;
  std::unordered_map<int, Address> peers_;
  std::unordered_map<int, LocalRegion> local_;
  std::unordered_map<int, RemoteRegionState> remote_;
  std::map<std::string, void*> mappings_;  // exported handle bytes -> this process's mapping
  int next_region_id_ = 1;
  kvtransfer_detail::TransferTable<Transfer> transfers_;
  TransportStats stats_;
  std::uint64_t next_transfer_id_ = 1;
};

}  // namespace

Result<std::unique_ptr<KvTransport>> make_cuda_ipc_transport(const CudaIpcOptions& options) {
  return CudaIpcTransport::create(options);
}

}  // namespace podserve
