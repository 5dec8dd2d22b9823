#include "kvtransfer/host_staged_transport.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvtransfer/cuda_check.h"
#include "kvtransfer/cuda_poll.h"
#include "kvtransfer/transfer_table.h"

namespace podserve {
namespace {

using Clock = std::chrono::steady_clock;

// A registered device region and its pinned host mirror (owned by the inner transport).
struct StagedRegion {
  std::uint8_t* device = nullptr;
  std::uint8_t* mirror = nullptr;
  std::size_t bytes = 0;
};

struct Transfer {
  // Device -> mirror copy of a staged transfer; null once the inner put is posted, and for
  // transfers from host regions (posted to the inner transport at once).
  CudaEventPtr copied;
  std::optional<std::uint64_t> inner_id;
  int mirror_region = 0;
  int remote_handle = 0;
  std::vector<PutSegment> segments;  // coalesced; kept until the inner put is posted
  std::uint64_t bytes = 0;
  Clock::time_point deadline;
  bool cancel_requested = false;
  bool released = false;
  TransferState state = TransferState::kPending;
};

class HostStagedTransport final : public KvTransport {
 public:
  static Result<std::unique_ptr<KvTransport>> create(std::unique_ptr<KvTransport> inner,
                                                     const HostStagingOptions& options) {
    if (!inner) return invalid_argument("host staging: no inner transport");
    std::unique_ptr<HostStagedTransport> transport(
        new HostStagedTransport(std::move(inner), options.cuda_device));
    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(options.cuda_device));
    PODSERVE_ASSIGN_OR_RETURN(transport->stream_, make_cuda_stream());
    transport->delivery_stream_ = static_cast<cudaStream_t>(options.delivery_stream);
    return std::unique_ptr<KvTransport>(std::move(transport));
  }

  ~HostStagedTransport() override {
    CudaDeviceScope scope;
    if (!scope.enter(device_).ok()) return;
    // Copies in flight write the mirrors: let them finish before the mirrors are unpinned.
    if (stream_) cudaStreamSynchronize(stream_.get());
    transfers_.clear();
    stream_.reset();
    for (auto& [id, region] : staged_) cudaHostUnregister(region.mirror);
  }

  std::string name() const override { return inner_->name() + "+host-staging"; }
  bool supports_device_memory() const override { return true; }
  std::vector<std::uint8_t> local_address() const override { return inner_->local_address(); }
  Status connect(int peer_id, std::span<const std::uint8_t> peer_address) override {
    return inner_->connect(peer_id, peer_address);
  }

  Result<int> register_region(void* base, std::size_t bytes, MemoryKind kind) override {
    if (kind == MemoryKind::kHost) return inner_->register_region(base, bytes, kind);
    if (base == nullptr || bytes == 0) {
      return invalid_argument("host staging register_region: empty region");
    }
    cudaPointerAttributes attributes{};
    PODSERVE_CHECK(cudaPointerGetAttributes(&attributes, base));
    if (attributes.type != cudaMemoryTypeDevice || attributes.device != device_) {
      return invalid_argument("host staging register_region: not device memory of CUDA device " +
                              std::to_string(device_));
    }
    PODSERVE_ASSIGN_OR_RETURN(const AllocatedRegion mirror, inner_->allocate_region(bytes));
    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
    PODSERVE_CHECK(cudaHostRegister(mirror.base, bytes, cudaHostRegisterPortable));
    staged_.emplace(mirror.id, StagedRegion{static_cast<std::uint8_t*>(base),
                                            static_cast<std::uint8_t*>(mirror.base), bytes});
    return mirror.id;
  }

  Result<AllocatedRegion> allocate_region(std::size_t bytes) override {
    return inner_->allocate_region(bytes);
  }
  Result<RemoteRegion> region_descriptor(int local_region_id) const override {
    return inner_->region_descriptor(local_region_id);
  }
  Result<int> add_remote_region(int peer_id, const RemoteRegion& region) override {
    return inner_->add_remote_region(peer_id, region);
  }

  Result<std::uint64_t> post_put(int local_region_id, int remote_region_handle,
                                 std::span<const PutSegment> segments,
                                 std::chrono::milliseconds timeout) override {
    Transfer transfer;
    transfer.deadline = Clock::now() + timeout;
    transfer.mirror_region = local_region_id;
    transfer.remote_handle = remote_region_handle;
    transfer.segments = coalesce_segments(segments);
    for (const PutSegment& segment : transfer.segments) transfer.bytes += segment.bytes;

    auto staged = staged_.find(local_region_id);
    if (staged == staged_.end()) {
      PODSERVE_ASSIGN_OR_RETURN(
          transfer.inner_id,
          inner_->post_put(local_region_id, remote_region_handle, transfer.segments, timeout));
      transfer.segments.clear();
    } else {
      const StagedRegion& region = staged->second;
      PODSERVE_RETURN_IF_ERROR(check_segments_within(
          transfer.segments, SegmentSide::kLocal, region.bytes, "host staging post_put: segment",
          "local region " + std::to_string(local_region_id)));
      CudaDeviceScope scope;
      PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
      for (const ByteRange& range : covered_ranges(transfer.segments, SegmentSide::kLocal)) {
        PODSERVE_CHECK(cudaMemcpyAsync(region.mirror + range.offset, region.device + range.offset,
                                       range.bytes, cudaMemcpyDeviceToHost, stream_.get()));
      }
      PODSERVE_ASSIGN_OR_RETURN(transfer.copied, make_cuda_event());
      PODSERVE_CHECK(cudaEventRecord(transfer.copied.get(), stream_.get()));
    }
    const std::uint64_t id = next_transfer_id_++;
    transfers_.emplace(id, std::move(transfer));
    return id;
  }

  bool progress() override {
    const bool moved = inner_->progress();
    const auto now = Clock::now();
    return kvtransfer_detail::progress_on_device(
               transfers_, device_, "host staging",
               [&](Transfer& transfer) { return update(transfer, now); }) ||
           moved;
  }

  TransferState poll(std::uint64_t transfer_id) override {
    return kvtransfer_detail::poll_on_device(
        transfers_, transfer_id, device_, "host staging",
        [this](Transfer& transfer) { update(transfer, Clock::now()); });
  }

  void cancel(std::uint64_t transfer_id) override {
    auto found = transfers_.find(transfer_id);
    if (found == transfers_.end() || found->second.state != TransferState::kPending) return;
    Transfer& transfer = found->second;
    if (transfer.inner_id) {
      inner_->cancel(*transfer.inner_id);
    } else {
      transfer.cancel_requested = true;
    }
  }

  void release(std::uint64_t transfer_id) override {
    kvtransfer_detail::release_transfer(transfers_, transfer_id,
                                        [this](std::uint64_t id) { cancel(id); });
  }

  Status deliver(int local_region_id, std::span<const PutSegment> segments) override {
    auto staged = staged_.find(local_region_id);
    if (staged == staged_.end()) return inner_->deliver(local_region_id, segments);
    const StagedRegion& region = staged->second;
    PODSERVE_RETURN_IF_ERROR(check_segments_within(segments, SegmentSide::kRemote, region.bytes,
                                                   "host staging deliver: range",
                                                   "region " + std::to_string(local_region_id)));
    CudaDeviceScope scope;
    PODSERVE_RETURN_IF_ERROR(scope.enter(device_));
    // Only the remote ranges matter here: one copy per merged range of the target, on the
    // delivery stream (no wait: later work there is ordered after) or our own (wait).
    cudaStream_t stream = delivery_stream_ != nullptr ? delivery_stream_ : stream_.get();
    for (const ByteRange& range : covered_ranges(segments, SegmentSide::kRemote)) {
      PODSERVE_CHECK(cudaMemcpyAsync(region.device + range.offset, region.mirror + range.offset,
                                     range.bytes, cudaMemcpyHostToDevice, stream));
    }
    if (delivery_stream_ == nullptr) PODSERVE_CHECK(cudaStreamSynchronize(stream));
    return Status::Ok();
  }

  TransportStats stats() const override { return stats_; }

 private:
  HostStagedTransport(std::unique_ptr<KvTransport> inner, int device)
      : inner_(std::move(inner)), device_(device) {}

  // Moves a pending transfer along; true when its state or stage changed. Needs device_ current.
  bool update(Transfer& transfer, Clock::time_point now) {
    if (transfer.state != TransferState::kPending) return false;
    if (!transfer.inner_id) {
      const cudaError_t copied = cudaEventQuery(transfer.copied.get());
      // The copy only writes the local mirror: a cancel or deadline waits for it, never sends.
      if (copied == cudaErrorNotReady) return false;
      if (copied != cudaSuccess) {
        SPDLOG_WARN("host staging: device-to-host copy failed: {}", cudaGetErrorString(copied));
        finish(transfer, TransferState::kFailed);
        return true;
      }
      transfer.copied.reset();
      if (transfer.cancel_requested) {
        finish(transfer, TransferState::kCancelled);
        return true;
      }
      if (now >= transfer.deadline) {
        finish(transfer, TransferState::kTimedOut);
        return true;
      }
      const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(transfer.deadline - now);
      auto posted = inner_->post_put(transfer.mirror_region, transfer.remote_handle,
                                     transfer.segments, remaining);
      if (!posted.ok()) {
        SPDLOG_WARN("host staging: inner put failed: {}", posted.status().to_string());
        finish(transfer, TransferState::kFailed);
        return true;
      }
      transfer.inner_id = *posted;
      transfer.segments = {};
    }
    const TransferState state = inner_->poll(*transfer.inner_id);
    if (state == TransferState::kPending) return false;
    inner_->release(*transfer.inner_id);
    finish(transfer, state);
    return true;
  }

  void finish(Transfer& transfer, TransferState state) {
    transfer.state = state;
    transfer.copied.reset();
    transfer.segments = {};
    kvtransfer_detail::count_final(stats_, state, transfer.bytes);
  }

  // Destroyed last (declared first): the mirrors are its memory.
  std::unique_ptr<KvTransport> inner_;
  const int device_;
  CudaStreamPtr stream_;
  cudaStream_t delivery_stream_ = nullptr;        // HostStagingOptions::delivery_stream
  std::unordered_map<int, StagedRegion> staged_;  // mirror region id -> region
  kvtransfer_detail::TransferTable<Transfer> transfers_;
  TransportStats stats_;
  std::uint64_t next_transfer_id_ = 1;
};

}  // namespace

Result<std::unique_ptr<KvTransport>> make_host_staged_transport(std::unique_ptr<KvTransport> inner,
                                                                const HostStagingOptions& options) {
  return HostStagedTransport::create(std::move(inner), options);
}

}  // namespace podserve
