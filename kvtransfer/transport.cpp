#include "kvtransfer/transport.h"

#include <algorithm>

#include "kvtransfer/cuda_ipc_transport.h"
#include "kvtransfer/host_staged_transport.h"

namespace podserve {

std::string_view to_string(TransferState state) {
  switch (state) {
    case TransferState::kPending: return "pending";
    case TransferState::kDone: return "done";
    case TransferState::kFailed: return "failed";
    case TransferState::kTimedOut: return "timed_out";
    case TransferState::kCancelled: return "cancelled";
  }
  return "unknown";
}

std::vector<PutSegment> coalesce_segments(std::span<const PutSegment> segments) {
  std::vector<PutSegment> merged;
  merged.reserve(segments.size());
  for (const PutSegment& segment : segments) {
    if (segment.bytes == 0) continue;
    if (!merged.empty()) {
      PutSegment& last = merged.back();
      if (last.local_offset + last.bytes == segment.local_offset &&
          last.remote_offset + last.bytes == segment.remote_offset) {
        last.bytes += segment.bytes;
        continue;
      }
    }
    merged.push_back(segment);
  }
  return merged;
}

std::vector<ByteRange> covered_ranges(std::span<const PutSegment> segments, SegmentSide side) {
  std::vector<ByteRange> ranges;
  ranges.reserve(segments.size());
  for (const PutSegment& segment : segments) {
    if (segment.bytes == 0) continue;
    ranges.push_back({side == SegmentSide::kLocal ? segment.local_offset : segment.remote_offset,
                      segment.bytes});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  std::vector<ByteRange> merged;
  merged.reserve(ranges.size());
  for (const ByteRange& range : ranges) {
    if (!merged.empty() && range.offset <= merged.back().offset + merged.back().bytes) {
      ByteRange& last = merged.back();
      last.bytes = std::max(last.offset + last.bytes, range.offset + range.bytes) - last.offset;
      continue;
    }
    merged.push_back(range);
  }
  return merged;
}

Status check_segments_within(std::span<const PutSegment> segments, SegmentSide side,
                             std::uint64_t region_bytes, std::string_view what,
                             std::string_view region) {
  for (const PutSegment& segment : segments) {
    const std::uint64_t offset =
        side == SegmentSide::kLocal ? segment.local_offset : segment.remote_offset;
    if (offset > region_bytes || segment.bytes > region_bytes - offset) {
      return out_of_range(std::string(what) + " [" + std::to_string(offset) + ", " +
                          std::to_string(segment.bytes) + " bytes] outside " + std::string(region));
    }
  }
  return Status::Ok();
}

InjectedFault draw_fault(const FaultInjection& faults, std::mt19937_64& rng) {
  const double draw = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  if (draw < faults.drop_probability) return InjectedFault::kDrop;
  if (draw < faults.drop_probability + faults.stall_probability) return InjectedFault::kStall;
  return InjectedFault::kNone;
}

#ifndef PODSERVE_KVTRANSFER_HAS_CUDA
// Builds without CUDA have no device memory to stage (host_staged_transport.cpp is CUDA-only).
Result<std::unique_ptr<KvTransport>> make_host_staged_transport(std::unique_ptr<KvTransport>,
                                                                const HostStagingOptions&) {
  return unimplemented("host staging of GPU memory needs a CUDA build (PODSERVE_ENABLE_CUDA=ON)");
}
// Likewise cuda_ipc_transport.cpp.
Result<std::unique_ptr<KvTransport>> make_cuda_ipc_transport(const CudaIpcOptions&) {
  return unimplemented("the cuda_ipc KV transport needs a CUDA build (PODSERVE_ENABLE_CUDA=ON)");
}
#endif

}  // namespace podserve
