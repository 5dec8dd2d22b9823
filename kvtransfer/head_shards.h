// Which bytes of a KV page move where when the prefill and decode instances split the KV heads
// over different tensor-parallel degrees (docs/design.md section 2). Every layer's KV cache is
// laid out [num_pages, 2, page_size, heads_per_rank, head_dim] on each rank, and TP rank r of a
// group of tp holds heads [r * H / tp, (r + 1) * H / tp) of the model's H KV heads. A prefill
// rank writes its share of a request's pages into every decode rank whose heads overlap its own:
// TP 2 -> 1 merges heads, 1 -> 2 splits them, equal head sets move whole pages.
//
// Pure arithmetic, no I/O; the segments are the same for every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvtransfer/transport.h"

namespace podserve {

// One layer's KV page geometry, for the whole model (not per rank).
struct KvPageLayout {
  std::int32_t num_kv_heads = 0;  // H, divisible by both TP degrees
  std::int32_t head_dim = 0;
  std::int32_t page_size = 0;     // tokens per page
  std::size_t element_bytes = 0;  // bytes of one K or V element
};

// One rank of a tensor-parallel group.
struct TpShard {
  std::int32_t tp = 1;
  std::int32_t rank = 0;  // in [0, tp)
};

// The segments (source-region offset, destination-region offset, bytes) that move `source`'s
// heads of pages source_pages[i] into `dest`'s pages dest_pages[i], for i below the shorter list;
// empty when the two ranks share no head. Whole pages, one segment each, when both hold the same
// heads; otherwise one segment of the shared heads per (page, K/V, slot), in that order.
// Not coalesced (coalesce_segments merges runs contiguous on both sides).
std::vector<PutSegment> shard_segments(const KvPageLayout& layout, TpShard source, TpShard dest,
                                       std::span<const std::int32_t> source_pages,
                                       std::span<const std::int32_t> dest_pages);

}  // namespace podserve
