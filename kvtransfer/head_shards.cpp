#include "kvtransfer/head_shards.h"

#include <algorithm>

namespace podserve {

std::vector<PutSegment> shard_segments(const KvPageLayout& layout, TpShard source, TpShard dest,
                                       std::span<const std::int32_t> source_pages,
                                       std::span<const std::int32_t> dest_pages) {
  const std::int64_t head_dim = layout.head_dim, page_size = layout.page_size;
  const std::int64_t src_rank = source.rank, dst_rank = dest.rank;
  const std::int64_t src_heads = layout.num_kv_heads / source.tp;
  const std::int64_t dst_heads = layout.num_kv_heads / dest.tp;
  const std::int64_t lo = std::max(src_rank * src_heads, dst_rank * dst_heads);
  const std::int64_t hi = std::min((src_rank + 1) * src_heads, (dst_rank + 1) * dst_heads);
  std::vector<PutSegment> segments;
  if (lo >= hi) return segments;
  const std::size_t pages = std::min(source_pages.size(), dest_pages.size());
  const std::uint64_t es = layout.element_bytes;
  // Page layout [2, page_size, heads, head_dim]: whole pages when both sides hold the same heads.
  if (lo == src_rank * src_heads && hi - lo == src_heads && src_heads == dst_heads) {
    const std::uint64_t page_bytes = 2ull * page_size * src_heads * head_dim * es;
    for (std::size_t p = 0; p < pages; ++p) {
      segments.push_back({static_cast<std::uint64_t>(source_pages[p]) * page_bytes,
                          static_cast<std::uint64_t>(dest_pages[p]) * page_bytes, page_bytes});
    }
    return segments;
  }
  // Otherwise one run of (hi - lo) heads per (page, K/V, slot).
  const std::uint64_t run_bytes = static_cast<std::uint64_t>(hi - lo) * head_dim * es;
  for (std::size_t p = 0; p < pages; ++p) {
    for (std::int64_t kv = 0; kv < 2; ++kv) {
      for (std::int64_t slot = 0; slot < page_size; ++slot) {
        const std::int64_t src_row = (source_pages[p] * 2 + kv) * page_size + slot;
        const std::int64_t dst_row = (dest_pages[p] * 2 + kv) * page_size + slot;
        segments.push_back({static_cast<std::uint64_t>(
                                (src_row * src_heads + (lo - src_rank * src_heads)) * head_dim) *
                                es,
                            static_cast<std::uint64_t>(
                                (dst_row * dst_heads + (lo - dst_rank * dst_heads)) * head_dim) *
                                es,
                            run_bytes});
      }
    }
  }
  return segments;
}

}  // namespace podserve
