#include "kvtransfer/pack_layout.h"

#include <algorithm>

namespace podserve {

PackedLayout pack_layout(std::span<const PutSegment> segments, PackSide side) {
  PackedLayout layout;
  layout.segments.reserve(segments.size());
  std::uint64_t next = 0;
  for (const PutSegment& segment : segments) {
    const std::uint64_t packed = (next + kPackAlignment - 1) / kPackAlignment * kPackAlignment;
    layout.segments.push_back(
        {side == PackSide::kSender ? segment.local_offset : segment.remote_offset, packed,
         segment.bytes});
    next = packed + segment.bytes;
    layout.packed_bytes = next;
  }
  return layout;
}

std::optional<std::uint64_t> contiguous_origin(const PackedLayout& layout) {
  if (layout.segments.empty()) return std::nullopt;
  const std::uint64_t origin = layout.segments.front().scattered_offset;  // packed offset 0
  for (const PackedSegment& segment : layout.segments) {
    if (segment.scattered_offset != origin + segment.packed_offset) return std::nullopt;
  }
  return origin;
}

std::vector<PackedChunk> chunk_packed_layout(const PackedLayout& layout,
                                             std::uint64_t chunk_bytes) {
  std::vector<PackedChunk> chunks;
  const std::uint64_t total = layout.packed_bytes;
  if (total == 0) return chunks;
  const std::uint64_t count = std::max<std::uint64_t>(1, total / chunk_bytes);
  const std::uint64_t per_chunk =
      ((total + count - 1) / count + kPackAlignment - 1) / kPackAlignment * kPackAlignment;
  chunks.reserve(count);
  // Segments are in packed order; `next` is the first one not wholly placed in earlier chunks.
  std::size_t next = 0;
  for (std::uint64_t begin = 0; begin < total; begin += per_chunk) {
    PackedChunk chunk{begin, std::min(per_chunk, total - begin), {}};
    const std::uint64_t end = begin + chunk.bytes;
    for (; next < layout.segments.size(); ++next) {
      const PackedSegment& segment = layout.segments[next];
      const std::uint64_t from = std::max(segment.packed_offset, begin);
      const std::uint64_t to = std::min(segment.packed_offset + segment.bytes, end);
      if (from >= end) break;  // starts in a later chunk
      if (to > from) {
        chunk.segments.push_back(
            {segment.scattered_offset + (from - segment.packed_offset), from, to - from});
      }
      if (segment.packed_offset + segment.bytes > end) break;  // goes on in the next chunk
    }
    chunks.push_back(std::move(chunk));
  }
  return chunks;
}

std::uint64_t pipeline_chunk_bytes(std::uint64_t packed_bytes, std::uint64_t min_chunk_bytes) {
  const std::uint64_t per_chunk = (packed_bytes + kMaxPipelineChunks - 1) / kMaxPipelineChunks;
  const std::uint64_t aligned = (per_chunk + kPackAlignment - 1) / kPackAlignment * kPackAlignment;
  return std::max(min_chunk_bytes, aligned);
}

}  // namespace podserve
