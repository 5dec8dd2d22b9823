// NCCL backend for KV pages between GPUs of one node (built only with PODSERVE_ENABLE_CUDA).
// NCCL is two-sided, so it does not pretend to be a KvTransport: both ranks post matching
// operations. The sender calls send_segments() with a segment list and the receiver calls
// recv_segments() with the same list (same order, same sizes, after the same coalescing): the
// sender reads base + local_offset, the receiver writes base + remote_offset. Operations are
// enqueued on the caller's CUDA stream and complete asynchronously; poll() reads a CUDA event
// recorded after them and the communicator's asynchronous error.
//
// Contract:
// - One thread drives a channel; nothing blocks except create() (NCCL init is collective: every
//   rank of the communicator calls it with the same unique id) and abort().
// - Streams are opaque handles (a cudaStream_t passed as void*; nullptr = legacy default
//   stream). Device memory is owned by the caller and must stay valid until poll() is final.
// - Fence: NCCL cannot withdraw an enqueued send/recv. A transfer that timed out is fenced only
//   by abort(): ncclCommAbort stops every pending operation of the communicator, after which the
//   channel is dead (every pending transfer reads kFailed) and must be recreated from a new
//   unique id by both ranks.
// - Single-process use with several GPUs (tests, benchmark): create_local() builds every rank's
//   channel at once, and calls posted on several channels from one thread go between
//   group_start() and group_end().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "kvtransfer/transport.h"

namespace podserve {

class NcclKvChannel {
 public:
  // A fresh ncclUniqueId as bytes, for rank 0 to send to the others (the cluster uses MPI).
  static Result<std::vector<std::uint8_t>> make_unique_id();
  // Joins the communicator of `num_ranks` ranks as `rank`, on CUDA device `cuda_device`.
  static Result<std::unique_ptr<NcclKvChannel>> create(std::span<const std::uint8_t> unique_id,
                                                       int num_ranks, int rank, int cuda_device);
  // One channel per device (rank i on devices[i]), all in this process (ncclCommInitAll).
  static Result<std::vector<std::unique_ptr<NcclKvChannel>>> create_local(
      std::span<const int> devices);
  static Status group_start();
  static Status group_end();

  ~NcclKvChannel();
  NcclKvChannel(const NcclKvChannel&) = delete;
  NcclKvChannel& operator=(const NcclKvChannel&) = delete;

  int rank() const;
  int cuda_device() const;

  // Enqueues ncclSend of base[local_offset, +bytes) to `peer` for each coalesced segment, as
  // one NCCL group, then records the completion event. Returns the transfer id.
  Result<std::uint64_t> send_segments(int peer, const void* device_base,
                                      std::span<const PutSegment> segments, void* stream,
                                      std::chrono::milliseconds timeout);
  // Enqueues the matching ncclRecv into base[remote_offset, +bytes) from `peer`.
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

  std::unique_ptr<State> state_;
};

}  // namespace podserve
