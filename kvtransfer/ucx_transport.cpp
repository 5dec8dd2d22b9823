#include "kvtransfer/ucx_transport.h"

#include <spdlog/spdlog.h>
#include <ucp/api/ucp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtransfer/transfer_table.h"
#include "kvtransfer/ucx_check.h"

namespace podserve {
namespace {

using Clock = std::chrono::steady_clock;

// Upper bound on ucp_worker_progress rounds per progress()/poll() call, so that neither blocks
// while a peer floods us.
constexpr int kMaxProgressRounds = 64;
constexpr std::uint32_t kDescriptorMagic = 0x314b5650;  // "PVK1"

struct ConfigRelease {
  void operator()(ucp_config_t* config) const { ucp_config_release(config); }
};
struct ContextCleanup {
  void operator()(ucp_context_h context) const { ucp_cleanup(context); }
};
struct WorkerDestroy {
  void operator()(ucp_worker_h worker) const { ucp_worker_destroy(worker); }
};
struct MemUnmap {
  ucp_context_h context = nullptr;
  void operator()(ucp_mem_h memh) const { ucp_mem_unmap(context, memh); }
};
struct RkeyBufferRelease {
  void operator()(void* buffer) const { ucp_rkey_buffer_release(buffer); }
};
struct RequestFree {
  void operator()(void* request) const { ucp_request_free(request); }
};
using RequestPtr = std::unique_ptr<void, RequestFree>;

// One non-blocking UCX operation: the request while in flight, then its final status.
class Operation {
 public:
  Operation() = default;
  explicit Operation(ucs_status_ptr_t pointer) : status_(ucx_pointer_status(pointer)) {
    if (status_ == UCS_INPROGRESS) request_.reset(pointer);
  }
  // UCS_INPROGRESS while pending, else the final status.
  ucs_status_t check() {
    if (request_) {
      ucs_status_t status = ucp_request_check_status(request_.get());
      if (status == UCS_INPROGRESS) return status;
      status_ = status;
      request_.reset();
    }
    return status_;
  }

 private:
  RequestPtr request_;
  ucs_status_t status_ = UCS_OK;
};

void append_u64(std::vector<std::uint8_t>& out, std::uint64_t value) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(value));
}

std::uint64_t read_u64(std::span<const std::uint8_t> in, std::size_t offset) {
  std::uint64_t value = 0;
  std::memcpy(&value, in.data() + offset, sizeof(value));
  return value;
}

// Remote region as decoded from its descriptor.
struct RemoteRegionInfo {
  int peer_id = 0;
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
  std::vector<std::uint8_t> packed_rkey;
};

// One ucp endpoint to a peer and the rkeys unpacked on it. Closed (forced) on destruction.
class Endpoint {
 public:
  static Result<std::shared_ptr<Endpoint>> create(ucp_worker_h worker,
                                                  std::span<const std::uint8_t> address,
                                                  bool peer_error_handling) {
    std::shared_ptr<Endpoint> endpoint(new Endpoint(worker));
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(address.data());
    params.err_mode = peer_error_handling ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    params.err_handler.cb = &Endpoint::on_error;
    params.err_handler.arg = endpoint.get();
    PODSERVE_CHECK(ucp_ep_create(worker, &params, &endpoint->ep_));
    return endpoint;
  }

  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  ~Endpoint() { force_close(); }

  ucp_ep_h handle() const { return ep_; }
  bool usable() const { return ep_ != nullptr && error_ == UCS_OK; }

  Result<ucp_rkey_h> rkey(int remote_handle, const RemoteRegionInfo& region) {
    auto found = rkeys_.find(remote_handle);
    if (found != rkeys_.end()) return found->second;
    ucp_rkey_h rkey = nullptr;
    PODSERVE_CHECK(ucp_ep_rkey_unpack(ep_, region.packed_rkey.data(), &rkey));
    rkeys_.emplace(remote_handle, rkey);
    return rkey;
  }

  // Releases the endpoint without the peer's confirmation: UCX completes every outstanding
  // request on it with UCS_ERR_CANCELED. Waits only for UCX's local teardown.
  void force_close() {
    if (ep_ == nullptr) return;
    for (auto& [handle, rkey] : rkeys_) ucp_rkey_destroy(rkey);
    rkeys_.clear();
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    Operation close(ucp_ep_close_nbx(ep_, &param));
    ep_ = nullptr;
    while (close.check() == UCS_INPROGRESS) ucp_worker_progress(worker_);
  }

 private:
  explicit Endpoint(ucp_worker_h worker) : worker_(worker) {}

  static void on_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* endpoint = static_cast<Endpoint*>(arg);
    SPDLOG_WARN("UCX endpoint error: {}", ucs_status_string(status));
    endpoint->error_ = status;
  }

  ucp_worker_h worker_;
  ucp_ep_h ep_ = nullptr;
  ucs_status_t error_ = UCS_OK;
  std::unordered_map<int, ucp_rkey_h> rkeys_;
};

struct LocalRegion {
  std::uint8_t* base = nullptr;
  std::size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  std::unique_ptr<ucp_mem, MemUnmap> memh;
  RemoteRegion descriptor;
};

struct Peer {
  std::vector<std::uint8_t> address;
  std::shared_ptr<Endpoint> endpoint;  // null until first use or after a forced close
};

struct Transfer {
  std::shared_ptr<Endpoint> endpoint;
  std::vector<Operation> puts;
  Operation flush;
  Clock::time_point deadline;
  std::uint64_t bytes = 0;
  bool stalled = false;   // injected: completion is never reported
  bool released = false;  // forget once final
  TransferState state = TransferState::kPending;
  // Fence in progress: the state to report when its flush completes.
  TransferState fence_result = TransferState::kPending;
  std::optional<Operation> fence_flush;
  Clock::time_point fence_deadline;
};

class UcxTransportImpl final : public UcxTransport {
 public:
  static Result<std::unique_ptr<UcxTransport>> create(const UcxOptions& options) {
    std::unique_ptr<UcxTransportImpl> transport(new UcxTransportImpl(options));
    PODSERVE_RETURN_IF_ERROR(transport->init());
    return std::unique_ptr<UcxTransport>(std::move(transport));
  }

  std::string name() const override { return "ucx"; }
  bool supports_device_memory() const override { return supports_device_memory_; }
  std::vector<std::uint8_t> local_address() const override { return address_; }

  void set_fault_injection(const FaultInjection& faults) override {
    options_.faults = faults;
    rng_.seed(faults.seed);
  }

  Status connect(int peer_id, std::span<const std::uint8_t> peer_address) override {
    if (peer_address.empty()) return invalid_argument("UCX connect: empty peer address");
    if (peers_.contains(peer_id)) {
      return invalid_argument("UCX connect: peer " + std::to_string(peer_id) +
                              " already connected");
    }
    Peer peer;
    peer.address.assign(peer_address.begin(), peer_address.end());
    PODSERVE_ASSIGN_OR_RETURN(
        peer.endpoint, Endpoint::create(worker_.get(), peer.address, options_.peer_error_handling));
    peers_.emplace(peer_id, std::move(peer));
    return Status::Ok();
  }

  Result<int> register_region(void* base, std::size_t bytes, MemoryKind kind) override {
    if (base == nullptr || bytes == 0) return invalid_argument("UCX register_region: empty region");
    if (kind == MemoryKind::kDevice && !supports_device_memory_) {
      return unimplemented("UCX has no CUDA transports: stage through host memory");
    }
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                        UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.address = base;
    params.length = bytes;
    params.memory_type = kind == MemoryKind::kDevice ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    ucp_mem_h memh = nullptr;
    PODSERVE_CHECK(ucp_mem_map(context_.get(), &params, &memh));
    return add_local_region(memh, base, bytes, kind);
  }

  Result<AllocatedRegion> allocate_region(std::size_t bytes) override {
    if (bytes == 0) return invalid_argument("UCX allocate_region: empty region");
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                        UCP_MEM_MAP_PARAM_FIELD_FLAGS | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.address = nullptr;
    params.length = bytes;
    params.flags = UCP_MEM_MAP_ALLOCATE;
    params.memory_type = UCS_MEMORY_TYPE_HOST;
    ucp_mem_h memh = nullptr;
    PODSERVE_CHECK(ucp_mem_map(context_.get(), &params, &memh));
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
    if (Status status =
            check_result(ucp_mem_query(memh, &attr), "ucp_mem_query", __FILE__, __LINE__);
        !status.ok()) {
      ucp_mem_unmap(context_.get(), memh);
      return status;
    }
    PODSERVE_ASSIGN_OR_RETURN(const int id,
                              add_local_region(memh, attr.address, bytes, MemoryKind::kHost));
    return AllocatedRegion{id, attr.address};
  }

  Result<RemoteRegion> region_descriptor(int local_region_id) const override {
    auto found = regions_.find(local_region_id);
    if (found == regions_.end()) {
      return not_found("UCX: no local region " + std::to_string(local_region_id));
    }
    return found->second.descriptor;
  }

  Result<int> add_remote_region(int peer_id, const RemoteRegion& region) override {
    if (!peers_.contains(peer_id)) {
      return not_found("UCX add_remote_region: peer " + std::to_string(peer_id) + " not connected");
    }
    const std::span<const std::uint8_t> in = region.descriptor;
    constexpr std::size_t kHeader = 3 * sizeof(std::uint64_t);
    if (in.size() <= kHeader || read_u64(in, 0) != kDescriptorMagic) {
      return invalid_argument("UCX add_remote_region: not a UCX region descriptor");
    }
    RemoteRegionInfo info;
    info.peer_id = peer_id;
    info.base = read_u64(in, 8);
    info.bytes = read_u64(in, 16);
    info.packed_rkey.assign(in.begin() + kHeader, in.end());
    const int handle = next_remote_handle_++;
    auto endpoint = endpoint_for(peer_id);
    if (!endpoint.ok()) return endpoint.status();
    // Unpack now so a bad descriptor fails here rather than at the first put.
    if (auto rkey = (*endpoint)->rkey(handle, info); !rkey.ok()) return rkey.status();
    remote_regions_.emplace(handle, std::move(info));
    return handle;
  }

  Result<std::uint64_t> post_put(int local_region_id, int remote_region_handle,
                                 std::span<const PutSegment> segments,
                                 std::chrono::milliseconds timeout) override {
    auto local = regions_.find(local_region_id);
    if (local == regions_.end()) {
      return not_found("UCX post_put: no local region " + std::to_string(local_region_id));
    }
    auto remote = remote_regions_.find(remote_region_handle);
    if (remote == remote_regions_.end()) {
      return not_found("UCX post_put: no remote region " + std::to_string(remote_region_handle));
    }
    const std::vector<PutSegment> merged = coalesce_segments(segments);
    std::uint64_t total = 0;
    for (const PutSegment& segment : merged) {
      if (segment.local_offset > local->second.bytes ||
          segment.bytes > local->second.bytes - segment.local_offset ||
          segment.remote_offset > remote->second.bytes ||
          segment.bytes > remote->second.bytes - segment.remote_offset) {
        return out_of_range("UCX post_put: segment [" + std::to_string(segment.local_offset) +
                            " -> " + std::to_string(segment.remote_offset) + ", " +
                            std::to_string(segment.bytes) + " bytes] outside its regions");
      }
      total += segment.bytes;
    }

    const std::uint64_t id = next_transfer_id_++;
    Transfer transfer;
    transfer.bytes = total;
    transfer.deadline = Clock::now() + timeout;
    const InjectedFault fault = draw_fault(options_.faults, rng_);
    if (fault == InjectedFault::kDrop) {
      finish(transfer, TransferState::kFailed);
      transfers_.emplace(id, std::move(transfer));
      return id;
    }
    transfer.stalled = fault == InjectedFault::kStall;

    PODSERVE_ASSIGN_OR_RETURN(transfer.endpoint, endpoint_for(remote->second.peer_id));
    PODSERVE_ASSIGN_OR_RETURN(ucp_rkey_h rkey,
                              transfer.endpoint->rkey(remote_region_handle, remote->second));
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE | UCP_OP_ATTR_FIELD_MEMH;
    param.memory_type =
        local->second.kind == MemoryKind::kDevice ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    param.memh = local->second.memh.get();
    transfer.puts.reserve(merged.size());
    for (const PutSegment& segment : merged) {
      transfer.puts.emplace_back(
          ucp_put_nbx(transfer.endpoint->handle(), local->second.base + segment.local_offset,
                      segment.bytes, remote->second.base + segment.remote_offset, rkey, &param));
    }
    ucp_request_param_t flush_param{};
    transfer.flush = Operation(ucp_ep_flush_nbx(transfer.endpoint->handle(), &flush_param));
    update(transfer, Clock::now());
    transfers_.emplace(id, std::move(transfer));
    return id;
  }

  bool progress() override {
    const bool moved = drive_worker() > 0;
    const auto now = Clock::now();
    kvtransfer_detail::update_transfers(transfers_, [&](Transfer& transfer) {
      update(transfer, now);
      return false;  // what moved is the worker's count above
    });
    return moved;
  }

  TransferState poll(std::uint64_t transfer_id) override {
    auto found = transfers_.find(transfer_id);
    if (found == transfers_.end()) return TransferState::kFailed;
    drive_worker();
    update(found->second, Clock::now());
    return found->second.state;
  }

  void cancel(std::uint64_t transfer_id) override {
    auto found = transfers_.find(transfer_id);
    if (found == transfers_.end()) return;
    Transfer& transfer = found->second;
    if (transfer.state != TransferState::kPending || transfer.fence_flush) return;
    start_fence(transfer, TransferState::kCancelled, Clock::now());
  }

  void release(std::uint64_t transfer_id) override {
    kvtransfer_detail::release_transfer(transfers_, transfer_id,
                                        [this](std::uint64_t id) { cancel(id); });
  }

  // UCX writes into the registered memory itself: nothing to copy, only the ranges to check.
  Status deliver(int local_region_id, std::span<const PutSegment> segments) override {
    auto found = regions_.find(local_region_id);
    if (found == regions_.end()) {
      return not_found("UCX deliver: no local region " + std::to_string(local_region_id));
    }
    for (const PutSegment& segment : segments) {
      if (segment.remote_offset > found->second.bytes ||
          segment.bytes > found->second.bytes - segment.remote_offset) {
        return out_of_range("UCX deliver: range [" + std::to_string(segment.remote_offset) + ", " +
                            std::to_string(segment.bytes) + " bytes] outside region " +
                            std::to_string(local_region_id));
      }
    }
    return Status::Ok();
  }

  TransportStats stats() const override { return stats_; }

  Result<std::string> describe_connection(int peer_id) const override {
    auto found = peers_.find(peer_id);
    if (found == peers_.end() || !found->second.endpoint || !found->second.endpoint->usable()) {
      return not_found("UCX: no open endpoint to peer " + std::to_string(peer_id));
    }
    char* text = nullptr;
    std::size_t length = 0;
    FILE* stream = open_memstream(&text, &length);
    if (stream == nullptr) return internal_error("open_memstream failed");
    ucp_ep_print_info(found->second.endpoint->handle(), stream);
    std::fclose(stream);
    std::string description(text, length);
    std::free(text);
    return description;
  }

 private:
  explicit UcxTransportImpl(const UcxOptions& options)
      : options_(options), rng_(options.faults.seed) {}

  Status init() {
    ucp_config_t* raw_config = nullptr;
    PODSERVE_CHECK(ucp_config_read(nullptr, nullptr, &raw_config));
    std::unique_ptr<ucp_config_t, ConfigRelease> config(raw_config);

    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_RMA;
    ucp_context_h context = nullptr;
    PODSERVE_CHECK(ucp_init(&params, config.get(), &context));
    context_.reset(context);

    ucp_context_attr_t attr{};
    attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    PODSERVE_CHECK(ucp_context_query(context_.get(), &attr));
    supports_device_memory_ = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;

    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    ucp_worker_h worker = nullptr;
    PODSERVE_CHECK(ucp_worker_create(context_.get(), &worker_params, &worker));
    worker_.reset(worker);

    ucp_address_t* address = nullptr;
    std::size_t address_bytes = 0;
    PODSERVE_CHECK(ucp_worker_get_address(worker_.get(), &address, &address_bytes));
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(address);
    address_.assign(bytes, bytes + address_bytes);
    ucp_worker_release_address(worker_.get(), address);
    return Status::Ok();
  }

  // Takes ownership of `memh` and publishes it as a region.
  Result<int> add_local_region(ucp_mem_h memh, void* base, std::size_t bytes, MemoryKind kind) {
    LocalRegion region;
    region.base = static_cast<std::uint8_t*>(base);
    region.bytes = bytes;
    region.kind = kind;
    region.memh = std::unique_ptr<ucp_mem, MemUnmap>(memh, MemUnmap{context_.get()});
    void* packed = nullptr;
    std::size_t packed_bytes = 0;
    PODSERVE_CHECK(ucp_rkey_pack(context_.get(), memh, &packed, &packed_bytes));
    std::unique_ptr<void, RkeyBufferRelease> packed_owner(packed);
    std::vector<std::uint8_t>& out = region.descriptor.descriptor;
    append_u64(out, kDescriptorMagic);
    append_u64(out, reinterpret_cast<std::uintptr_t>(base));
    append_u64(out, bytes);
    const auto* rkey_bytes = static_cast<const std::uint8_t*>(packed);
    out.insert(out.end(), rkey_bytes, rkey_bytes + packed_bytes);
    const int id = next_region_id_++;
    regions_.emplace(id, std::move(region));
    return id;
  }

  // Returns the number of rounds that made progress.
  int drive_worker() {
    int rounds = 0;
    while (rounds < kMaxProgressRounds && ucp_worker_progress(worker_.get()) != 0) ++rounds;
    return rounds;
  }

  // The usable endpoint to `peer_id`, reconnecting when the last one was force-closed or failed.
  Result<std::shared_ptr<Endpoint>> endpoint_for(int peer_id) {
    auto found = peers_.find(peer_id);
    if (found == peers_.end())
      return not_found("UCX: peer " + std::to_string(peer_id) + " not connected");
    Peer& peer = found->second;
    if (!peer.endpoint || !peer.endpoint->usable()) {
      if (peer.endpoint) peer.endpoint->force_close();
      PODSERVE_ASSIGN_OR_RETURN(peer.endpoint, Endpoint::create(worker_.get(), peer.address,
                                                                options_.peer_error_handling));
    }
    return peer.endpoint;
  }

  void finish(Transfer& transfer, TransferState state) {
    transfer.state = state;
    transfer.puts.clear();
    transfer.flush = Operation();
    transfer.fence_flush.reset();
    transfer.endpoint.reset();
    kvtransfer_detail::count_final(stats_, state, transfer.bytes);
  }

  // Gives up on the transfer's endpoint: every request on it completes as cancelled, nothing
  // more is written through it, and the next post_put to the peer reconnects.
  void abandon(Transfer& transfer) {
    transfer.endpoint->force_close();
    finish(transfer, TransferState::kFailed);
  }

  void start_fence(Transfer& transfer, TransferState result, Clock::time_point now) {
    transfer.fence_result = result;
    if (!transfer.endpoint->usable()) {
      abandon(transfer);
      return;
    }
    ucp_request_param_t param{};
    transfer.fence_flush.emplace(ucp_ep_flush_nbx(transfer.endpoint->handle(), &param));
    transfer.fence_deadline = now + options_.fence_timeout;
    update(transfer, now);
  }

  void update(Transfer& transfer, Clock::time_point now) {
    if (transfer.state != TransferState::kPending) return;
    if (transfer.fence_flush) {
      const ucs_status_t status = transfer.fence_flush->check();
      if (status == UCS_OK) {
        finish(transfer, transfer.fence_result);
      } else if (status != UCS_INPROGRESS || !transfer.endpoint->usable() ||
                 (options_.peer_error_handling && now >= transfer.fence_deadline)) {
        abandon(transfer);
      }
      return;
    }
    bool in_progress = false;
    bool failed = !transfer.endpoint->usable();
    for (Operation& put : transfer.puts) {
      const ucs_status_t status = put.check();
      in_progress |= status == UCS_INPROGRESS;
      failed |= status != UCS_INPROGRESS && status != UCS_OK;
    }
    const ucs_status_t flush_status = transfer.flush.check();
    in_progress |= flush_status == UCS_INPROGRESS;
    failed |= flush_status != UCS_INPROGRESS && flush_status != UCS_OK;
    if (failed) {
      abandon(transfer);
    } else if (!in_progress && !transfer.stalled) {
      finish(transfer, TransferState::kDone);
    } else if (now >= transfer.deadline) {
      start_fence(transfer, TransferState::kTimedOut, now);
    }
  }

  // Destruction runs bottom-up: transfers (requests) and endpoints before the registrations,
  // registrations before the worker, the worker before the context.
  UcxOptions options_;
  std::mt19937_64 rng_;
  std::unique_ptr<ucp_context, ContextCleanup> context_;
  std::unique_ptr<ucp_worker, WorkerDestroy> worker_;
  bool supports_device_memory_ = false;
  std::vector<std::uint8_t> address_;
  std::unordered_map<int, LocalRegion> regions_;
  std::unordered_map<int, RemoteRegionInfo> remote_regions_;
  std::unordered_map<int, Peer> peers_;
  kvtransfer_detail::TransferTable<Transfer> transfers_;
  TransportStats stats_;
  int next_region_id_ = 0;
  int next_remote_handle_ = 0;
  std::uint64_t next_transfer_id_ = 1;
};

}  // namespace

Result<std::unique_ptr<UcxTransport>> make_ucx_transport(const UcxOptions& options) {
  return UcxTransportImpl::create(options);
}

}  // namespace podserve
