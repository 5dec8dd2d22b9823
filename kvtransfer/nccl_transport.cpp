#include "kvtransfer/nccl_transport.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

namespace podserve {

// CUDA and NCCL return codes as Status, so PODSERVE_CHECK works on both.
inline Status check_result(cudaError_t error, std::string_view expr, std::string_view file,
                           int line) {
  if (error == cudaSuccess) return Status::Ok();
  return detail::check_failure(StatusCode::kInternal, "CUDA", cudaGetErrorString(error), expr, file,
                               line);
}

inline Status check_result(ncclResult_t result, std::string_view expr, std::string_view file,
                           int line) {
  if (result == ncclSuccess || result == ncclInProgress) return Status::Ok();
  return detail::check_failure(StatusCode::kInternal, "NCCL", ncclGetErrorString(result), expr,
                               file, line);
}

namespace {

using Clock = std::chrono::steady_clock;

// Makes `device` current for the scope and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous_);
    cudaSetDevice(device);
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

struct EventDestroy {
  void operator()(CUevent_st* event) const { cudaEventDestroy(event); }
};
using EventPtr = std::unique_ptr<CUevent_st, EventDestroy>;

struct Transfer {
  EventPtr done;
  Clock::time_point deadline;
  TransferState state = TransferState::kPending;
};

}  // namespace

struct NcclKvChannel::State {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int cuda_device = 0;
  bool aborted = false;
  std::unordered_map<std::uint64_t, Transfer> transfers;
  std::uint64_t next_transfer_id = 1;
};

NcclKvChannel::NcclKvChannel(std::unique_ptr<State> state) : state_(std::move(state)) {}

NcclKvChannel::~NcclKvChannel() {
  if (state_->comm == nullptr) return;
  DeviceScope device(state_->cuda_device);
  state_->transfers.clear();
  if (state_->aborted) return;
  ncclCommDestroy(state_->comm);
}

Result<std::vector<std::uint8_t>> NcclKvChannel::make_unique_id() {
  ncclUniqueId id;
  PODSERVE_CHECK(ncclGetUniqueId(&id));
  std::vector<std::uint8_t> bytes(sizeof(id.internal));
  std::memcpy(bytes.data(), id.internal, bytes.size());
  return bytes;
}

Result<std::unique_ptr<NcclKvChannel>> NcclKvChannel::create(
    std::span<const std::uint8_t> unique_id, int num_ranks, int rank, int cuda_device) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return invalid_argument("NCCL unique id must be " + std::to_string(sizeof(id.internal)) +
                            " bytes");
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  auto state = std::make_unique<State>();
  state->rank = rank;
  state->cuda_device = cuda_device;
  DeviceScope device(cuda_device);
  PODSERVE_CHECK(ncclCommInitRank(&state->comm, num_ranks, id, rank));
  return std::unique_ptr<NcclKvChannel>(new NcclKvChannel(std::move(state)));
}

Result<std::vector<std::unique_ptr<NcclKvChannel>>> NcclKvChannel::create_local(
    std::span<const int> devices) {
  std::vector<ncclComm_t> comms(devices.size());
  PODSERVE_CHECK(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()));
  std::vector<std::unique_ptr<NcclKvChannel>> channels;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto state = std::make_unique<State>();
    state->comm = comms[i];
    state->rank = static_cast<int>(i);
    state->cuda_device = devices[i];
    channels.push_back(std::unique_ptr<NcclKvChannel>(new NcclKvChannel(std::move(state))));
  }
  return channels;
}

Status NcclKvChannel::group_start() {
  PODSERVE_CHECK(ncclGroupStart());
  return Status::Ok();
}

Status NcclKvChannel::group_end() {
  PODSERVE_CHECK(ncclGroupEnd());
  return Status::Ok();
}

int NcclKvChannel::rank() const { return state_->rank; }
int NcclKvChannel::cuda_device() const { return state_->cuda_device; }

Result<std::uint64_t> NcclKvChannel::send_segments(int peer, const void* device_base,
                                                   std::span<const PutSegment> segments,
                                                   void* stream,
                                                   std::chrono::milliseconds timeout) {
  // ncclSend only reads the buffer; post() takes one pointer type for both directions.
  return post(true, peer, static_cast<std::uint8_t*>(const_cast<void*>(device_base)), segments,
              stream, timeout);
}

Result<std::uint64_t> NcclKvChannel::recv_segments(int peer, void* device_base,
                                                   std::span<const PutSegment> segments,
                                                   void* stream,
                                                   std::chrono::milliseconds timeout) {
  return post(false, peer, static_cast<std::uint8_t*>(device_base), segments, stream, timeout);
}

Result<std::uint64_t> NcclKvChannel::post(bool send, int peer, std::uint8_t* device_base,
                                          std::span<const PutSegment> segments, void* stream,
                                          std::chrono::milliseconds timeout) {
  if (state_->aborted) return unavailable("NCCL channel was aborted: create a new one");
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  DeviceScope device(state_->cuda_device);
  const std::vector<PutSegment> merged = coalesce_segments(segments);
  PODSERVE_CHECK(ncclGroupStart());
  for (const PutSegment& segment : merged) {
    if (send) {
      PODSERVE_CHECK(ncclSend(device_base + segment.local_offset, segment.bytes, ncclUint8, peer,
                              state_->comm, cuda_stream));
    } else {
      PODSERVE_CHECK(ncclRecv(device_base + segment.remote_offset, segment.bytes, ncclUint8, peer,
                              state_->comm, cuda_stream));
    }
  }
  PODSERVE_CHECK(ncclGroupEnd());
  cudaEvent_t event = nullptr;
  PODSERVE_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  Transfer transfer;
  transfer.done.reset(event);
  transfer.deadline = Clock::now() + timeout;
  PODSERVE_CHECK(cudaEventRecord(event, cuda_stream));
  const std::uint64_t id = state_->next_transfer_id++;
  state_->transfers.emplace(id, std::move(transfer));
  return id;
}

TransferState NcclKvChannel::poll(std::uint64_t transfer_id) {
  auto found = state_->transfers.find(transfer_id);
  if (found == state_->transfers.end()) return TransferState::kFailed;
  Transfer& transfer = found->second;
  if (transfer.state != TransferState::kPending) return transfer.state;
  if (state_->aborted) return transfer.state = TransferState::kFailed;
  DeviceScope device(state_->cuda_device);
  const cudaError_t query = cudaEventQuery(transfer.done.get());
  if (query == cudaSuccess) return transfer.state = TransferState::kDone;
  ncclResult_t async_error = ncclSuccess;
  if (query != cudaErrorNotReady ||
      ncclCommGetAsyncError(state_->comm, &async_error) != ncclSuccess ||
      (async_error != ncclSuccess && async_error != ncclInProgress)) {
    return transfer.state = TransferState::kFailed;
  }
  if (Clock::now() >= transfer.deadline) return TransferState::kTimedOut;
  return TransferState::kPending;
}

void NcclKvChannel::release(std::uint64_t transfer_id) { state_->transfers.erase(transfer_id); }

void NcclKvChannel::abort() {
  if (state_->aborted || state_->comm == nullptr) return;
  DeviceScope device(state_->cuda_device);
  ncclCommAbort(state_->comm);
  state_->aborted = true;
}

}  // namespace podserve
