// NCCL backend for KV pages between GPUs of one node (built only with PODSERVE_ENABLE_CUDA).
// NCCL is two-sided, so it does not pretend to be a KvTransport: both ranks post matching
// operations. The sender calls send_segments() with a segment list and the receiver calls
// recv_segments() with the same list (same order, same sizes, after the same coalescing): the
// sender reads base + local_offset, the receiver writes base + remote_offset. Operations are
// enqueued on the caller's CUDA stream and complete asynchronously; poll() reads a CUDA event
// recorded after them and the communicator's asynchronous error.
//
// Page runs: a list that coalesces to one segment goes as one ncclSend/ncclRecv straight from and
// into the caller's buffer. A longer list is packed (pack_layout.h) into a contiguous device
// staging buffer owned by the channel (one per direction, grown on demand and kept; outgrown ones
// are freed with the channel): the sender gathers the segments into it with a copy kernel, sends
// it, and the receiver receives it into its staging buffer and scatters it with the same kernel.
// A staging buffer's next user waits (on the GPU) for its previous one, whatever streams they ran
// on. A side whose own runs lie back to back in list order (pack_layout.h contiguous_origin: e.g.
// a decode instance that reserved one run of pages for a request the prefill side holds in
// several) skips its copy kernel and moves the packed message straight from or into its buffer;
// only the other side gathers or scatters.
// - A packed message below two chunks (NcclChannelOptions::pack_chunk_bytes) is one message:
//   gather, ncclSend, ncclRecv and scatter all on the caller's stream, one after another.
// - A longer one is cut into chunks (chunk_packed_layout) that go as a pipeline: the sender
//   gathers chunk i+1 on the channel's own pack stream while the caller's stream sends chunk i
//   (it waits for chunk i's gather first); the receiver receives chunk i on the caller's stream
//   while the channel's own unpack stream scatters chunk i-1. Each chunk is its own NCCL
//   operation, and the pack/unpack stream joins the caller's stream before the completion event,
//   so poll() and the caller's later work on that stream see the transfer whole.
//
// Contract:
// - One thread drives a channel; nothing blocks except create() (NCCL init is collective: every
//   rank of the communicator calls it with the same unique id) and abort().
// - Both ranks post matching transfers in the same order with the same pack_chunk_bytes, and
//   bracket them the same way: a packed message of n chunks is n NCCL operations on each side,
//   posted group by group (below), so mismatched grouping can deadlock.
// - Streams are opaque handles (a cudaStream_t passed as void*; nullptr = legacy default
//   stream). Device memory is owned by the caller and must stay valid until poll() is final.
// - Fence: NCCL cannot withdraw an enqueued send/recv. A transfer that timed out is fenced only
//   by abort(): ncclCommAbort stops every pending operation of the communicator, after which the
//   channel is dead (every pending transfer reads kFailed) and must be recreated from a new
//   unique id by both ranks.
// - Groups: calls posted on several channels from one thread (create_local(): tests, benchmark;
//   required there, since each side's NCCL operation must be launched together with the peer's)
//   go between group_start() and group_end(). Inside a group nothing is launched; group_end()
//   launches the group's transfers chunk by chunk: one NCCL group (ncclGroupStart/End) per chunk
//   index holding that chunk of every transfer posted in the group (a transfer of one chunk or a
//   direct one is in the first only), each chunk's gather before it and its scatter after it.
//   Both sides of a transfer have the same chunks, so every ncclSend of chunk i is in the same
//   NCCL group as the peer's ncclRecv of chunk i. Outside a group, a post launches its chunks at
//   once, one NCCL group each (a rank driven by its own thread or process). Inside one group a
//   channel takes at most one send and one receive (so the chunk order on the wire is that of an
//   ungrouped rank), and no channel may be destroyed.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

// Default NcclChannelOptions::pack_chunk_bytes, the smallest pipeline chunk. A packed message of
// at least two chunks goes as floor(bytes / chunk) pipelined chunks, at most kMaxPipelineChunks
// (pipeline_chunk_bytes: longer messages get larger chunks): the first gather and the last
// scatter (one chunk each) are not overlapped, 16 MiB is ~50 us on the wire at NVLink speeds,
// well above the host's cost to post one chunk on both sides, and NCCL runs few large
// operations faster than many small ones (2x H100, 256 MiB one-sided: 0.87 of NCCL's own rate in
// 64 MiB chunks, 0.76 in 16 MiB chunks).
inline constexpr std::uint64_t kNcclPackChunkBytes = std::uint64_t{16} << 20;

struct NcclChannelOptions {
  // The smallest chunk packed messages are cut into (a positive multiple of 16; see
  // pipeline_chunk_bytes): the same on every rank.
  std::uint64_t pack_chunk_bytes = kNcclPackChunkBytes;
};

class NcclKvChannel {
 public:
  // A fresh ncclUniqueId as bytes, for rank 0 to send to the others (the cluster uses MPI).
  static Result<std::vector<std::uint8_t>> make_unique_id();
  // Joins the communicator of `num_ranks` ranks as `rank`, on CUDA device `cuda_device`.
  static Result<std::unique_ptr<NcclKvChannel>> create(std::span<const std::uint8_t> unique_id,
                                                       int num_ranks, int rank, int cuda_device,
                                                       const NcclChannelOptions& options = {});
  // One channel per device (rank i on devices[i]), all in this process (ncclCommInitAll).
  static Result<std::vector<std::unique_ptr<NcclKvChannel>>> create_local(
      std::span<const int> devices, const NcclChannelOptions& options = {});
  // Brackets posts on several channels (see the contract). group_end() launches the group's
  // transfers; its error is the first launch error (those transfers read kFailed).
  static Status group_start();
  static Status group_end();

  ~NcclKvChannel();
  NcclKvChannel(const NcclKvChannel&) = delete;
  NcclKvChannel& operator=(const NcclKvChannel&) = delete;

  int rank() const;
  int cuda_device() const;

  // Enqueues the send of base[local_offset, +bytes) of every segment to `peer` (direct for one
  // coalesced segment, else gathered into the staging buffer first, chunk by chunk for a long
  // message), then the completion event; inside a group, at group_end(). Returns the transfer id.
  Result<std::uint64_t> send_segments(int peer, const void* device_base,
                                      std::span<const PutSegment> segments, void* stream,
                                      std::chrono::milliseconds timeout);
  // Enqueues the matching receive into base[remote_offset, +bytes) from `peer` (for several
  // coalesced segments: into the staging buffer, then the scatter kernel, chunk by chunk for a
  // long message).
  Result<std::uint64_t> recv_segments(int peer, void* device_base,
                                      std::span<const PutSegment> segments, void* stream,
                                      std::chrono::milliseconds timeout);
  // kDone once the stream passed the transfer; kFailed on a communicator error or after
  // abort(); kTimedOut once past the deadline (not fenced: call abort()).
  TransferState poll(std::uint64_t transfer_id);
  void release(std::uint64_t transfer_id);
  // Aborts the communicator: the fence for timed-out transfers. The channel is unusable after.
  void abort();

 private:
  struct State;
  explicit NcclKvChannel(std::unique_ptr<State> state);

  Result<std::uint64_t> post(bool send, int peer, std::uint8_t* device_base,
                             std::span<const PutSegment> segments, void* stream,
                             std::chrono::milliseconds timeout);
  // Launches the chunks of the transfers posted (in one group, or one transfer outside a group),
  // then finishes each.
  static Status launch(std::span<const std::pair<NcclKvChannel*, std::uint64_t>> posted);
  // What follows a transfer's last chunk on its stream (the pack/unpack stream's join, the
  // staging buffer's release, the completion event). `launched` false: a launch failed, the
  // transfer reads kFailed.
  Status finish_post(std::uint64_t transfer_id, bool launched);

  std::unique_ptr<State> state_;
};

}  // namespace podserve
