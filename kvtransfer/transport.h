// KV transport: moves KV-cache pages from a prefill rank into pages a decode rank reserved
// (docs/design.md sections 2, 4 and 8). The interface is one-sided: the target registers memory and
// hands out an opaque descriptor; the initiator posts non-blocking puts of segment lists into
// it and polls for completion. No UCX or CUDA type appears here; backends live beside it
// (ucx_transport.h; NCCL, which is two-sided, has its own channel in nccl_transport.h).
//
// Contract:
// - Not thread-safe: one thread (the rank's loop) owns a transport and makes every call.
// - Nothing blocks but deliver(). post_put only queues work; progress() and poll() drive it.
//   Both sides must call progress() regularly: some transports (TCP) apply puts in the target's
//   progress.
// - Memory: the caller owns registered memory and keeps it alive and mapped until the region's
//   transport is destroyed; the transport owns its bookkeeping only.
// - Every TransferState except kPending is final and fenced: once poll() returned it, no byte
//   of that transfer is written to the target any more. kDone additionally means every byte
//   reached the target; the target makes them visible in its registered memory with deliver()
//   (a no-op unless the transport stages device memory through a host mirror). Timeouts are
//   enforced in progress()/poll() from the post time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace podserve {

enum class MemoryKind : std::uint8_t { kHost, kDevice };

// A peer's registered region as received out of band: opaque bytes (base address, length and
// the backend's packed remote key). Produced by region_descriptor(), consumed by
// add_remote_region() on another process.
struct RemoteRegion {
  std::vector<std::uint8_t> descriptor;
};

// Copies local_region[local_offset, +bytes) to remote_region[remote_offset, +bytes).
struct PutSegment {
  std::uint64_t local_offset = 0;
  std::uint64_t remote_offset = 0;
  std::uint64_t bytes = 0;

  friend bool operator==(const PutSegment&, const PutSegment&) = default;
};

enum class TransferState : std::uint8_t {
  kPending,    // still moving; poll again
  kDone,       // every byte visible at the target
  kFailed,     // transport error, injected drop, or a fence that had to give up on the peer
  kTimedOut,   // deadline passed; the transfer was fenced before this was reported
  kCancelled,  // cancel() was called; fenced
};

std::string_view to_string(TransferState state);

// Counters for metrics (monotonic since the transport was created).
struct TransportStats {
  std::uint64_t bytes_completed = 0;      // bytes of kDone transfers
  std::uint64_t transfers_completed = 0;  // kDone
  std::uint64_t transfers_failed = 0;     // kFailed
  std::uint64_t transfers_timed_out = 0;  // kTimedOut
  std::uint64_t transfers_cancelled = 0;  // kCancelled
};

// Merges runs of segments that are adjacent on both sides ([a][b] with a's ends equal to b's
// starts) and drops empty ones. Order is kept; non-adjacent segments are never reordered.
std::vector<PutSegment> coalesce_segments(std::span<const PutSegment> segments);

// A contiguous byte range of one side's buffer.
struct ByteRange {
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;

  friend bool operator==(const ByteRange&, const ByteRange&) = default;
};
enum class SegmentSide : std::uint8_t { kLocal, kRemote };
// The bytes the segments cover on one side, sorted by offset and merged where ranges touch or
// overlap: what a staging copy of that side moves, one copy per range instead of one per segment
// (a TP-split shipment's per-slot segments are strided on the receiver but back to back on the
// sender). Empty segments are dropped.
std::vector<ByteRange> covered_ranges(std::span<const PutSegment> segments, SegmentSide side);

// kOutOfRange naming the first segment whose `side` range leaves [0, region_bytes):
// "<what> [offset, N bytes] outside <region>".
Status check_segments_within(std::span<const PutSegment> segments, SegmentSide side,
                             std::uint64_t region_bytes, std::string_view what,
                             std::string_view region);

// Test hook: makes transfers misbehave on purpose (decided per post_put from `seed`).
struct FaultInjection {
  double drop_probability = 0.0;   // reported kFailed; nothing is written
  double stall_probability = 0.0;  // written, but completion is never reported: hits its timeout
  std::uint64_t seed = 1;
};
enum class InjectedFault : std::uint8_t { kNone, kDrop, kStall };
// One post_put's draw: kDrop with drop_probability, else kStall with stall_probability.
InjectedFault draw_fault(const FaultInjection& faults, std::mt19937_64& rng);

// A region the transport allocated (see KvTransport::allocate_region).
struct AllocatedRegion {
  int id = 0;
  void* base = nullptr;
};

class KvTransport {
 public:
  virtual ~KvTransport() = default;

  virtual std::string name() const = 0;
  // Whether register_region accepts MemoryKind::kDevice. When false, wrap the transport with
  // make_transport_for (host_staged_transport.h), which stages GPU pages through pinned host
  // memory (README "Host staging").
  virtual bool supports_device_memory() const = 0;

  // This process's address, to be exchanged out of band (the cluster uses MPI).
  virtual std::vector<std::uint8_t> local_address() const = 0;
  // Connects to peer `peer_id` (any int chosen by the caller, e.g. the MPI world rank). Local
  // and cheap: no message is exchanged with the peer. Connecting an id twice is an error.
  virtual Status connect(int peer_id, std::span<const std::uint8_t> peer_address) = 0;

  // Registers [base, base + bytes) so peers may write into it; returns its local id.
  virtual Result<int> register_region(void* base, std::size_t bytes, MemoryKind kind) = 0;
  // Allocates `bytes` of host memory owned by the transport (freed when it is destroyed) and
  // registers it like register_region. Backends may place it where peers write it with a single
  // copy (UCX: shared memory that posix/sysv map into the peer), so prefer it for receive
  // buffers and staging areas. Returns the region id and its base address.
  virtual Result<AllocatedRegion> allocate_region(std::size_t bytes) = 0;
  // The descriptor to send to peers for a registered region.
  virtual Result<RemoteRegion> region_descriptor(int local_region_id) const = 0;
  // Makes a connected peer's region usable as a put target; returns a handle for post_put.
  virtual Result<int> add_remote_region(int peer_id, const RemoteRegion& region) = 0;

  // Posts one-sided puts of every segment (adjacent ones coalesced), then a remote-completion
  // flush to the region's peer. Segments are bounds-checked against both regions. Returns the
  // transfer id; the transfer becomes kTimedOut (fenced) if not done within `timeout`.
  virtual Result<std::uint64_t> post_put(int local_region_id, int remote_region_handle,
                                         std::span<const PutSegment> segments,
                                         std::chrono::milliseconds timeout) = 0;

  // Drives communication and enforces deadlines and fences of every transfer. Never blocks.
  // True when it moved anything (a caller's idle loop should not sleep then: a target that
  // applies incoming puts in its progress would otherwise throttle the sender).
  virtual bool progress() = 0;
  // Progresses and returns the transfer's state. Unknown ids read as kFailed.
  virtual TransferState poll(std::uint64_t transfer_id) = 0;
  // Abandons a pending transfer: it reads kPending until its fence completed, then kCancelled
  // (or kFailed when the fence had to give up on the peer). No-op for final or unknown ids.
  virtual void cancel(std::uint64_t transfer_id) = 0;
  // Forgets a final transfer. Releasing a pending one cancels it and forgets it once fenced.
  virtual void release(std::uint64_t transfer_id) = 0;

  // Target side: makes the bytes that completed transfers wrote into `segments`' remote ranges
  // of this local region visible in the registered memory. Blocks until done. Call it after the
  // initiator reported kDone (over the control plane) and before reading those bytes. A no-op
  // (bounds checks only) for transports that write in place; the host-staging wrapper copies
  // its host mirror into the device region here (host_staged_transport.h).
  virtual Status deliver(int local_region_id, std::span<const PutSegment> segments) = 0;

  virtual TransportStats stats() const = 0;
};

}  // namespace podserve
