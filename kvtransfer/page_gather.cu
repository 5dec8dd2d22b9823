#include <algorithm>

#include "kvtransfer/cuda_check.h"
#include "kvtransfer/page_gather.h"

namespace podserve {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // 16-byte vectors in flight per thread
// Bytes one block moves per round of its loop; sets how many blocks a segment gets.
constexpr std::uint64_t kBlockRoundBytes = kThreads * kUnroll * 16;
constexpr std::uint64_t kMaxBlocksPerSegment = 1024;
// Segments travel as kernel parameters (no host buffer to keep alive while the launch is
// queued), in one of a few capacities so a short list does not pay for copying the longest:
// 1024 x 24 bytes fits the 32 KiB parameter limit of CUDA 12.1+ on sm_70+.
constexpr std::size_t kSegmentCapacities[] = {64, 256, 1024};
constexpr std::size_t kSegmentsPerLaunch = kSegmentCapacities[2];

template <std::size_t kCapacity>
struct PackParams {
  const std::uint8_t* source_base = nullptr;
  std::uint8_t* target_base = nullptr;
  bool gather = true;  // source offsets are the scattered ones
  unsigned count = 0;  // segments in use
  PackedSegment segments[kCapacity];
};
static_assert(sizeof(PackParams<kSegmentsPerLaunch>) < 32000,
              "kernel parameters are limited to 32764 bytes");

// Copies one segment with the blocks of one grid row: 16-byte vectors strided over the row's
// blocks when both ends are 16-byte aligned (the bytes past the last whole vector one by one),
// bytes otherwise.
__device__ void copy_segment(const std::uint8_t* source, std::uint8_t* target,
                             std::uint64_t bytes) {
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  const std::uint64_t first = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  std::uint64_t bytes_done = 0;
  if (((reinterpret_cast<std::uintptr_t>(source) | reinterpret_cast<std::uintptr_t>(target)) &
       15) == 0) {
    const std::uint64_t vectors = bytes / 16;
    const auto* source_vectors = reinterpret_cast<const uint4*>(source);
    auto* target_vectors = reinterpret_cast<uint4*>(target);
    std::uint64_t i = first;
    for (; i + (kUnroll - 1) * stride < vectors; i += kUnroll * stride) {
      uint4 values[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) values[u] = source_vectors[i + u * stride];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) target_vectors[i + u * stride] = values[u];
    }
    for (; i < vectors; i += stride) target_vectors[i] = source_vectors[i];
    bytes_done = vectors * 16;
  }
  for (std::uint64_t i = bytes_done + first; i < bytes; i += stride) target[i] = source[i];
}

// Grid row y copies segments y, y + gridDim.y, ... (one each unless the grid was capped).
template <std::size_t kCapacity>
__global__ void __launch_bounds__(kThreads)
    pack_kernel(const __grid_constant__ PackParams<kCapacity> params) {
  for (unsigned index = blockIdx.y; index < params.count; index += gridDim.y) {
    const PackedSegment& segment = params.segments[index];
    const std::uint64_t source_offset =
        params.gather ? segment.scattered_offset : segment.packed_offset;
    const std::uint64_t target_offset =
        params.gather ? segment.packed_offset : segment.scattered_offset;
    copy_segment(params.source_base + source_offset, params.target_base + target_offset,
                 segment.bytes);
  }
}

// One launch for segments.size() <= kCapacity segments, of at most `max_blocks` blocks (0: no
// cap).
template <std::size_t kCapacity>
Status launch_pack_kernel(bool gather, std::uint8_t* scattered, std::uint8_t* packed,
                          std::span<const PackedSegment> segments, unsigned max_blocks,
                          cudaStream_t stream) {
  PackParams<kCapacity> params;
  params.source_base = gather ? scattered : packed;
  params.target_base = gather ? packed : scattered;
  params.gather = gather;
  params.count = static_cast<unsigned>(segments.size());
  std::uint64_t largest = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    params.segments[i] = segments[i];
    largest = std::max(largest, segments[i].bytes);
  }
  unsigned rows = params.count;
  auto columns = static_cast<unsigned>(std::clamp<std::uint64_t>(
      (largest + kBlockRoundBytes - 1) / kBlockRoundBytes, 1, kMaxBlocksPerSegment));
  if (max_blocks > 0) {
    rows = std::min(rows, max_blocks);
    columns = std::clamp(max_blocks / rows, 1u, columns);
  }
  pack_kernel<kCapacity><<<dim3(columns, rows), kThreads, 0, stream>>>(params);
  PODSERVE_CHECK(cudaGetLastError());
  return Status::Ok();
}

}  // namespace

Status launch_pack(PackDirection direction, std::uint8_t* scattered, std::uint8_t* packed,
                   std::span<const PackedSegment> segments, unsigned max_blocks, void* stream) {
  const bool gather = direction == PackDirection::kGather;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  for (std::size_t first = 0; first < segments.size(); first += kSegmentsPerLaunch) {
    const auto launch =
        segments.subspan(first, std::min<std::size_t>(kSegmentsPerLaunch, segments.size() - first));
    if (launch.size() <= kSegmentCapacities[0]) {
      PODSERVE_RETURN_IF_ERROR(launch_pack_kernel<kSegmentCapacities[0]>(
          gather, scattered, packed, launch, max_blocks, cuda_stream));
    } else if (launch.size() <= kSegmentCapacities[1]) {
      PODSERVE_RETURN_IF_ERROR(launch_pack_kernel<kSegmentCapacities[1]>(
          gather, scattered, packed, launch, max_blocks, cuda_stream));
    } else {
      PODSERVE_RETURN_IF_ERROR(launch_pack_kernel<kSegmentCapacities[2]>(
          gather, scattered, packed, launch, max_blocks, cuda_stream));
    }
  }
  return Status::Ok();
}

}  // namespace podserve
