// Packed layout of a segment list, for transports that move page-scattered segments as one
// contiguous message (NcclKvChannel: gather kernel -> ncclSend -> ncclRecv -> scatter kernel),
// and its cut into chunks that are gathered, sent and scattered as a pipeline. Pure C++, so both
// sides' agreement is unit-tested without a GPU.
//
// Contract: both sides call pack_layout with the same (coalesced) segment list and get the same
// packed offsets and size; the sender's scattered offsets are the segments' local_offset, the
// receiver's their remote_offset. Each packed offset is a multiple of kPackAlignment, so a copy
// between a 16-byte-aligned scattered address and the staging buffer can move 16-byte vectors.
// chunk_packed_layout depends only on the packed offsets and sizes, so both sides given the same
// chunk size cut the message at the same places.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvtransfer/transport.h"

namespace podserve {

inline constexpr std::uint64_t kPackAlignment = 16;

enum class PackSide : std::uint8_t { kSender, kReceiver };

struct PackedSegment {
  std::uint64_t scattered_offset = 0;  // in the caller's buffer
  std::uint64_t packed_offset = 0;     // in the staging buffer; a multiple of kPackAlignment
  std::uint64_t bytes = 0;

  friend bool operator==(const PackedSegment&, const PackedSegment&) = default;
};

struct PackedLayout {
  std::vector<PackedSegment> segments;  // in the order of the input
  std::uint64_t packed_bytes = 0;       // the message: end of the last packed segment
};

PackedLayout pack_layout(std::span<const PutSegment> segments, PackSide side);

// Where the packed message already lies, as is, in the caller's buffer: the scattered offset of
// packed byte 0 when every segment sits at that origin plus its packed offset (the segments are
// back to back there, in list order, with no alignment gaps); nullopt otherwise. Such a side moves
// the message straight from or into its own buffer, with no gather or scatter, whatever the peer
// does: both sides still cut the same chunks.
std::optional<std::uint64_t> contiguous_origin(const PackedLayout& layout);

// One piece of a packed message: packed[packed_offset, +bytes), and the parts of the layout's
// segments that lie in it (a segment crossing a chunk boundary is split; its parts keep the
// segment's scattered-to-packed distance, so 16-byte alignment carries over).
struct PackedChunk {
  std::uint64_t packed_offset = 0;  // a multiple of kPackAlignment
  std::uint64_t bytes = 0;
  std::vector<PackedSegment> segments;  // packed offsets absolute (from the message's start)
};

// Cuts `layout`'s message into floor(packed_bytes / chunk_bytes) chunks of equal size (rounded up
// to kPackAlignment; the last one takes the rest), each one at least `chunk_bytes` except
// possibly the last: one chunk (the whole message) below two chunks, none for an empty message.
// `chunk_bytes` must be a positive multiple of kPackAlignment.
std::vector<PackedChunk> chunk_packed_layout(const PackedLayout& layout, std::uint64_t chunk_bytes);

// The most chunks a message is cut into: NCCL moves a large operation faster than several small
// ones (on 2x H100, 16 MiB operations at 61% of a 256 MiB one's rate), so a long message gets
// fewer, larger chunks rather than more pipeline stages.
inline constexpr std::uint64_t kMaxPipelineChunks = 4;
// The chunk size for a message of `packed_bytes` with `min_chunk_bytes` (a positive multiple of
// kPackAlignment) the smallest chunk: at least that, and large enough for at most
// kMaxPipelineChunks chunks, rounded up to kPackAlignment. Depends only on its arguments, so
// both sides agree.
std::uint64_t pipeline_chunk_bytes(std::uint64_t packed_bytes, std::uint64_t min_chunk_bytes);

}  // namespace podserve
