#include "kvtransfer/nccl_transport.h"

#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "kvtransfer/cuda_check.h"
#include "kvtransfer/page_gather.h"
#include "kvtransfer/pack_layout.h"

namespace podserve {

// NCCL return codes as Status, so PODSERVE_CHECK works on them (CUDA's: cuda_check.h).
inline Status check_result(ncclResult_t result, std::string_view expr, std::string_view file,
                           int line) {
  if (result == ncclSuccess || result == ncclInProgress) return Status::Ok();
  return detail::check_failure(StatusCode::kInternal, "NCCL", ncclGetErrorString(result), expr,
                               file, line);
}

namespace {

using Clock = std::chrono::steady_clock;

// Pipelined gathers and scatters run beside NCCL's kernels: they get at most this many blocks
// (256 threads) per SM, half an SM's threads, so NCCL's next kernel is resident at once instead of
// waiting for a GPU-wide copy to drain. ~8 MiB of loads stay in flight on 132 SMs, plenty for HBM.
constexpr int kSideBlocksPerSm = 4;

// What the packed transfers of one direction (send or receive) of a channel take turns on.
struct PackLane {
  std::uint8_t* staging = nullptr;  // [capacity]: the packed message
  std::uint64_t capacity = 0;
  CudaEventPtr released;        // recorded after its last user's final operation
  std::vector<void*> outgrown;  // earlier buffers, possibly still read by queued work
  // Pipelined transfers: the pack (send) or unpack (receive) stream and its hand-offs.
  cudaStream_t side_stream = nullptr;
  unsigned side_blocks = 0;               // the copy kernels' cap there (kSideBlocksPerSm)
  std::vector<CudaEventPtr> chunk_ready;  // per chunk: gathered (send) or received (receive)
  CudaEventPtr caller_reached;            // send: the caller's stream reached the transfer
  CudaEventPtr side_done;                 // the side stream's last gather or scatter of a transfer
  bool in_group = false;  // a transfer of the caller's open group uses this direction
};

struct Transfer {
  CudaEventPtr done;
  bool recorded = false;  // `done` was enqueued (inside a group: by group_end)
  bool released = false;  // released inside its group: forgotten by finish_post
  Clock::time_point deadline;
  TransferState state = TransferState::kPending;
  // Until finish_post: what to launch and where.
  bool send = true;
  int peer = 0;
  ncclComm_t comm = nullptr;
  int cuda_device = 0;
  cudaStream_t stream = nullptr;
  PackLane* lane = nullptr;                // of its direction
  bool packed = false;                     // `message` is the lane's staging buffer
  std::uint8_t* scattered_base = nullptr;  // packed: the caller's buffer
  std::uint8_t* message = nullptr;         // what the NCCL calls move
  // message[packed_offset, +bytes) per NCCL call; packed: the pieces to gather or scatter.
  std::vector<PackedChunk> chunks;
};

// Packed in several chunks: gathers or scatters run on the lane's side stream.
bool pipelined(const Transfer& transfer) { return transfer.packed && transfer.chunks.size() > 1; }

// The caller's group_start()/group_end() nesting on this thread, and the transfers posted inside
// it, which group_end launches.
struct GroupNesting {
  int depth = 0;
  std::vector<std::pair<NcclKvChannel*, std::uint64_t>> posted;
};
thread_local GroupNesting group_nesting;

// Makes `stream` wait for the lane's previous user, grows the staging buffer to `bytes`, and for
// a transfer of `chunks` chunks (more than one) provides the side stream and the events. The
// current device is the lane's.
Status take_lane(PackLane& lane, cudaStream_t stream, std::uint64_t bytes, std::size_t chunks) {
  if (lane.released) {
    PODSERVE_CHECK(cudaStreamWaitEvent(stream, lane.released.get()));
  } else {
    PODSERVE_ASSIGN_OR_RETURN(lane.released, make_cuda_event());
  }
  if (lane.capacity < bytes) {
    // The old buffer may still be used by queued work: keep it until the channel goes.
    if (lane.staging != nullptr) lane.outgrown.push_back(lane.staging);
    lane.staging = nullptr;
    lane.capacity = 0;
    std::uint64_t capacity = std::uint64_t{1} << 20;
    while (capacity < bytes) capacity *= 2;
    PODSERVE_CHECK(cudaMalloc(reinterpret_cast<void**>(&lane.staging), capacity));
    lane.capacity = capacity;
  }
  if (chunks < 2) return Status::Ok();
  if (lane.side_stream == nullptr) {
    int device = 0;
    int sms = 0;
    PODSERVE_CHECK(cudaGetDevice(&device));
    PODSERVE_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    lane.side_blocks = static_cast<unsigned>(sms * kSideBlocksPerSm);
    PODSERVE_CHECK(cudaStreamCreateWithFlags(&lane.side_stream, cudaStreamNonBlocking));
    PODSERVE_ASSIGN_OR_RETURN(lane.caller_reached, make_cuda_event());
    PODSERVE_ASSIGN_OR_RETURN(lane.side_done, make_cuda_event());
  }
  while (lane.chunk_ready.size() < chunks) {
    PODSERVE_ASSIGN_OR_RETURN(CudaEventPtr event, make_cuda_event());
    lane.chunk_ready.push_back(std::move(event));
  }
  return Status::Ok();
}

// Gathers chunk `index` of a packed send into the staging buffer: on the caller's stream for a
// single chunk, else on the pack stream, marking the chunk ready.
Status gather_chunk(Transfer& transfer, std::size_t index) {
  const std::span<const PackedSegment> pieces = transfer.chunks[index].segments;
  if (!pipelined(transfer)) {
    return launch_pack(PackDirection::kGather, transfer.scattered_base, transfer.message, pieces, 0,
                       transfer.stream);
  }
  PackLane& lane = *transfer.lane;
  PODSERVE_RETURN_IF_ERROR(launch_pack(PackDirection::kGather, transfer.scattered_base,
                                       transfer.message, pieces, lane.side_blocks,
                                       lane.side_stream));
  PODSERVE_CHECK(cudaEventRecord(lane.chunk_ready[index].get(), lane.side_stream));
  return Status::Ok();
}

// Before chunk `index`'s NCCL group: a pipelined send gathers the next chunk ahead, and its
// stream waits for this chunk's gather.
Status prepare_chunk(Transfer& transfer, std::size_t index) {
  if (!transfer.send || !pipelined(transfer)) return Status::Ok();
  CudaDeviceScope device;
  PODSERVE_RETURN_IF_ERROR(device.enter(transfer.cuda_device));
  if (index + 1 < transfer.chunks.size()) {
    PODSERVE_RETURN_IF_ERROR(gather_chunk(transfer, index + 1));
  }
  PODSERVE_CHECK(cudaStreamWaitEvent(transfer.stream, transfer.lane->chunk_ready[index].get()));
  return Status::Ok();
}

// Inside chunk `index`'s NCCL group: its ncclSend or ncclRecv on the caller's stream.
Status enqueue_chunk(Transfer& transfer, std::size_t index) {
  const PackedChunk& chunk = transfer.chunks[index];
  std::uint8_t* data = transfer.message + chunk.packed_offset;
  CudaDeviceScope device;
  PODSERVE_RETURN_IF_ERROR(device.enter(transfer.cuda_device));
  if (transfer.send) {
    PODSERVE_CHECK(
        ncclSend(data, chunk.bytes, ncclUint8, transfer.peer, transfer.comm, transfer.stream));
  } else {
    PODSERVE_CHECK(
        ncclRecv(data, chunk.bytes, ncclUint8, transfer.peer, transfer.comm, transfer.stream));
  }
  return Status::Ok();
}

// After chunk `index`'s NCCL group: a packed receive scatters the chunk, on the caller's stream
// for a single chunk, else on the unpack stream once the caller's stream received it.
Status complete_chunk(Transfer& transfer, std::size_t index) {
  if (transfer.send || !transfer.packed) return Status::Ok();
  CudaDeviceScope device;
  PODSERVE_RETURN_IF_ERROR(device.enter(transfer.cuda_device));
  const std::span<const PackedSegment> pieces = transfer.chunks[index].segments;
  if (!pipelined(transfer)) {
    return launch_pack(PackDirection::kScatter, transfer.scattered_base, transfer.message, pieces,
                       0, transfer.stream);
  }
  PackLane& lane = *transfer.lane;
  cudaEvent_t received = lane.chunk_ready[index].get();
  PODSERVE_CHECK(cudaEventRecord(received, transfer.stream));
  PODSERVE_CHECK(cudaStreamWaitEvent(lane.side_stream, received));
  return launch_pack(PackDirection::kScatter, transfer.scattered_base, transfer.message, pieces,
                     lane.side_blocks, lane.side_stream);
}

Status check_options(const NcclChannelOptions& options) {
  if (options.pack_chunk_bytes == 0 || options.pack_chunk_bytes % kPackAlignment != 0) {
    return invalid_argument("NcclChannelOptions::pack_chunk_bytes must be a positive multiple of " +
                            std::to_string(kPackAlignment) + ", got " +
                            std::to_string(options.pack_chunk_bytes));
  }
  return Status::Ok();
}

// Chunk `index` of every transfer that has one, as one NCCL group: both sides of a transfer have
// the same chunks, so each ncclSend meets its peer's ncclRecv in the same group.
Status launch_round(std::span<Transfer* const> transfers, std::size_t index) {
  for (Transfer* transfer : transfers) {
    if (index < transfer->chunks.size()) {
      PODSERVE_RETURN_IF_ERROR(prepare_chunk(*transfer, index));
    }
  }
  PODSERVE_CHECK(ncclGroupStart());
  Status enqueued = Status::Ok();
  for (Transfer* transfer : transfers) {
    if (enqueued.ok() && index < transfer->chunks.size()) {
      enqueued = enqueue_chunk(*transfer, index);
    }
  }
  // Closed even after a failed call, so NCCL's group nesting stays balanced.
  const Status ended = check_result(ncclGroupEnd(), "ncclGroupEnd()", __FILE__, __LINE__);
  PODSERVE_RETURN_IF_ERROR(enqueued);
  PODSERVE_RETURN_IF_ERROR(ended);
  for (Transfer* transfer : transfers) {
    if (index < transfer->chunks.size()) {
      PODSERVE_RETURN_IF_ERROR(complete_chunk(*transfer, index));
    }
  }
  return Status::Ok();
}

}  // namespace

struct NcclKvChannel::State {
  ncclComm_t comm = nullptr;
  int rank = 0;
  int cuda_device = 0;
  NcclChannelOptions options;
  bool aborted = false;
  std::unordered_map<std::uint64_t, Transfer> transfers;
  std::uint64_t next_transfer_id = 1;
  PackLane send_lane;
  PackLane recv_lane;
};

NcclKvChannel::NcclKvChannel(std::unique_ptr<State> state) : state_(std::move(state)) {}

NcclKvChannel::~NcclKvChannel() {
  if (state_->comm == nullptr) return;
  CudaDeviceScope device;
  if (!device.enter(state_->cuda_device).ok()) return;
  state_->transfers.clear();
  // Queued kernels and NCCL operations may still use the staging buffers (after an abort, NCCL
  // has stopped its own): wait for the last users before freeing them.
  for (PackLane* lane : {&state_->send_lane, &state_->recv_lane}) {
    if (lane->side_stream != nullptr) cudaStreamSynchronize(lane->side_stream);
    if (lane->released) cudaEventSynchronize(lane->released.get());
    for (void* outgrown : lane->outgrown) cudaFree(outgrown);
    cudaFree(lane->staging);
    if (lane->side_stream != nullptr) cudaStreamDestroy(lane->side_stream);
  }
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
    std::span<const std::uint8_t> unique_id, int num_ranks, int rank, int cuda_device,
    const NcclChannelOptions& options) {
  PODSERVE_RETURN_IF_ERROR(check_options(options));
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    return invalid_argument("NCCL unique id must be " + std::to_string(sizeof(id.internal)) +
                            " bytes");
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  auto state = std::make_unique<State>();
  state->rank = rank;
  state->cuda_device = cuda_device;
  state->options = options;
  CudaDeviceScope device;
  PODSERVE_RETURN_IF_ERROR(device.enter(cuda_device));
  PODSERVE_CHECK(ncclCommInitRank(&state->comm, num_ranks, id, rank));
  return std::unique_ptr<NcclKvChannel>(new NcclKvChannel(std::move(state)));
}

Result<std::vector<std::unique_ptr<NcclKvChannel>>> NcclKvChannel::create_local(
    std::span<const int> devices, const NcclChannelOptions& options) {
  PODSERVE_RETURN_IF_ERROR(check_options(options));
  std::vector<ncclComm_t> comms(devices.size());
  PODSERVE_CHECK(ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data()));
  std::vector<std::unique_ptr<NcclKvChannel>> channels;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto state = std::make_unique<State>();
    state->comm = comms[i];
    state->rank = static_cast<int>(i);
    state->cuda_device = devices[i];
    state->options = options;
    channels.push_back(std::unique_ptr<NcclKvChannel>(new NcclKvChannel(std::move(state))));
  }
  return channels;
}

Status NcclKvChannel::group_start() {
  ++group_nesting.depth;
  return Status::Ok();
}

Status NcclKvChannel::group_end() {
  if (group_nesting.depth == 0) return invalid_argument("NCCL group_end without group_start");
  if (--group_nesting.depth > 0) return Status::Ok();
  const auto posted = std::move(group_nesting.posted);
  group_nesting.posted.clear();
  return launch(posted);
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
  PackLane& lane = send ? state_->send_lane : state_->recv_lane;
  if (group_nesting.depth > 0 && lane.in_group) {
    return invalid_argument("NCCL channel: one send and one receive per channel per group");
  }
  CudaDeviceScope device;
  PODSERVE_RETURN_IF_ERROR(device.enter(state_->cuda_device));
  const std::vector<PutSegment> merged = coalesce_segments(segments);
  Transfer transfer;
  PODSERVE_ASSIGN_OR_RETURN(transfer.done, make_cuda_event());
  transfer.deadline = Clock::now() + timeout;
  transfer.send = send;
  transfer.peer = peer;
  transfer.comm = state_->comm;
  transfer.cuda_device = state_->cuda_device;
  transfer.stream = static_cast<cudaStream_t>(stream);
  transfer.lane = &lane;
  if (merged.size() == 1) {
    // One run: straight from or into the caller's buffer.
    const PutSegment& run = merged.front();
    transfer.message = device_base + (send ? run.local_offset : run.remote_offset);
    transfer.chunks.push_back({0, run.bytes, {}});
  } else if (merged.size() > 1) {
    const PackedLayout layout = pack_layout(merged, send ? PackSide::kSender : PackSide::kReceiver);
    transfer.chunks = chunk_packed_layout(
        layout, pipeline_chunk_bytes(layout.packed_bytes, state_->options.pack_chunk_bytes));
    if (const std::optional<std::uint64_t> origin = contiguous_origin(layout)) {
      // This side's runs lie back to back in list order (only the peer's are scattered): the
      // chunks go straight from or into the caller's buffer, cut where the peer cuts them.
      transfer.message = device_base + *origin;
      for (PackedChunk& chunk : transfer.chunks) chunk.segments = {};
    } else {
      PODSERVE_RETURN_IF_ERROR(
          take_lane(lane, transfer.stream, layout.packed_bytes, transfer.chunks.size()));
      transfer.packed = true;
      transfer.scattered_base = device_base;
      transfer.message = lane.staging;
      if (send && pipelined(transfer)) {
        // The gathers read what the caller's stream wrote before this post, into a buffer whose
        // previous user the caller's stream has just waited for.
        PODSERVE_CHECK(cudaEventRecord(lane.caller_reached.get(), transfer.stream));
        PODSERVE_CHECK(cudaStreamWaitEvent(lane.side_stream, lane.caller_reached.get()));
      }
      if (send) PODSERVE_RETURN_IF_ERROR(gather_chunk(transfer, 0));
    }
  }
  const std::uint64_t id = state_->next_transfer_id++;
  state_->transfers.emplace(id, std::move(transfer));
  if (group_nesting.depth > 0) {
    lane.in_group = true;
    group_nesting.posted.emplace_back(this, id);
    return id;
  }
  const std::pair<NcclKvChannel*, std::uint64_t> posted[] = {{this, id}};
  Status launched = launch(posted);
  if (!launched.ok()) {
    state_->transfers.erase(id);
    return launched;
  }
  return id;
}

Status NcclKvChannel::launch(std::span<const std::pair<NcclKvChannel*, std::uint64_t>> posted) {
  std::vector<Transfer*> transfers;
  std::size_t rounds = 0;
  for (const auto& [channel, transfer_id] : posted) {
    auto found = channel->state_->transfers.find(transfer_id);
    if (found == channel->state_->transfers.end()) continue;
    transfers.push_back(&found->second);
    rounds = std::max(rounds, found->second.chunks.size());
  }
  Status launched = Status::Ok();
  for (std::size_t index = 0; index < rounds && launched.ok(); ++index) {
    launched = launch_round(transfers, index);
  }
  Status first_error = launched;
  for (const auto& [channel, transfer_id] : posted) {
    Status finished = channel->finish_post(transfer_id, launched.ok());
    if (first_error.ok()) first_error = std::move(finished);
  }
  return first_error;
}

Status NcclKvChannel::finish_post(std::uint64_t transfer_id, bool launched) {
  auto found = state_->transfers.find(transfer_id);
  if (found == state_->transfers.end()) return Status::Ok();
  Transfer& transfer = found->second;
  PackLane& lane = *transfer.lane;
  lane.in_group = false;
  CudaDeviceScope device;
  Status status = device.enter(state_->cuda_device);
  // The side stream's gathers or scatters belong to the transfer (all of them, even after a
  // failed launch): the caller's stream joins it before the release and the completion.
  if (status.ok() && pipelined(transfer)) {
    status = check_result(cudaEventRecord(lane.side_done.get(), lane.side_stream),
                          "cudaEventRecord(side done)", __FILE__, __LINE__);
    if (status.ok()) {
      status = check_result(cudaStreamWaitEvent(transfer.stream, lane.side_done.get()),
                            "cudaStreamWaitEvent(side done)", __FILE__, __LINE__);
    }
  }
  if (status.ok() && transfer.packed) {
    status = check_result(cudaEventRecord(lane.released.get(), transfer.stream),
                          "cudaEventRecord(staging released)", __FILE__, __LINE__);
  }
  if (status.ok() && launched) {
    status = check_result(cudaEventRecord(transfer.done.get(), transfer.stream),
                          "cudaEventRecord(done)", __FILE__, __LINE__);
  }
  transfer.recorded = status.ok() && launched;
  if (!transfer.recorded) transfer.state = TransferState::kFailed;
  transfer.chunks = {};
  if (transfer.released) state_->transfers.erase(found);
  return status;
}

TransferState NcclKvChannel::poll(std::uint64_t transfer_id) {
  auto found = state_->transfers.find(transfer_id);
  if (found == state_->transfers.end()) return TransferState::kFailed;
  Transfer& transfer = found->second;
  if (transfer.state != TransferState::kPending) return transfer.state;
  if (state_->aborted) return transfer.state = TransferState::kFailed;
  const bool past_deadline = Clock::now() >= transfer.deadline;
  if (!transfer.recorded) return past_deadline ? TransferState::kTimedOut : TransferState::kPending;
  CudaDeviceScope device;
  if (!device.enter(state_->cuda_device).ok()) return transfer.state = TransferState::kFailed;
  const cudaError_t query = cudaEventQuery(transfer.done.get());
  if (query == cudaSuccess) return transfer.state = TransferState::kDone;
  ncclResult_t async_error = ncclSuccess;
  if (query != cudaErrorNotReady ||
      ncclCommGetAsyncError(state_->comm, &async_error) != ncclSuccess ||
      (async_error != ncclSuccess && async_error != ncclInProgress)) {
    return transfer.state = TransferState::kFailed;
  }
  return past_deadline ? TransferState::kTimedOut : TransferState::kPending;
}

void NcclKvChannel::release(std::uint64_t transfer_id) {
  auto found = state_->transfers.find(transfer_id);
  if (found == state_->transfers.end()) return;
  // Posted inside a group that has not ended: its trailing operations are still to come.
  if (!found->second.recorded && found->second.state == TransferState::kPending &&
      group_nesting.depth > 0) {
    found->second.released = true;
    return;
  }
  state_->transfers.erase(found);
}

void NcclKvChannel::abort() {
  if (state_->aborted || state_->comm == nullptr) return;
  CudaDeviceScope device;
  if (!device.enter(state_->cuda_device).ok()) return;
  ncclCommAbort(state_->comm);
  state_->aborted = true;
}

}  // namespace podserve
