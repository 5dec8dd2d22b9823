// Internal to kvtransfer's CUDA sources (CUDA builds): the page gather/scatter kernels that move
// page-scattered segments to and from a contiguous device staging buffer (pack_layout.h), so a
// page list travels as one NCCL message (or a pipeline of chunks, each gathered or scattered by
// its own launch). The CUDA IPC transport gathers with a peer's mapped memory as `packed`, which
// makes it a copy of many runs into another GPU in one launch. Copies
// 16 bytes per load/store where both addresses allow it, bytes otherwise. Enqueued on the given
// stream (a cudaStream_t as void*); checks the launch error.
#pragma once

#include <cstdint>
#include <span>

#include "core/status.h"
#include "kvtransfer/pack_layout.h"

namespace podserve {

enum class PackDirection : std::uint8_t {
  kGather,   // scattered[scattered_offset..] -> packed[packed_offset..]
  kScatter,  // packed[packed_offset..] -> scattered[scattered_offset..]
};

// `scattered` and `packed` are device pointers the current device can access (its own memory or
// a peer's, mapped); the packed ranges of `segments` lie inside `packed`. Segments must not
// overlap on the written side. Each launch (of up to 1024 segments) uses at most `max_blocks`
// blocks of 256 threads (0: no cap, one block per 16 KiB of the largest segment for each segment),
// so a copy beside NCCL can leave it room.
Status launch_pack(PackDirection direction, std::uint8_t* scattered, std::uint8_t* packed,
                   std::span<const PackedSegment> segments, unsigned max_blocks, void* stream);

}  // namespace podserve
