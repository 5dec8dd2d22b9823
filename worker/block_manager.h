// The paged KV cache's page allocator: a fixed pool of `num_pages` page ids, each holding
// `page_size` token positions of every layer's K and V (page layout: core/backend.h
// KvCacheView). It hands out pages all-or-nothing, keeps one page table per sequence, and
// takes pages back on finish, abort and preemption. A page is never handed out twice and
// used_pages() returns to zero once every sequence is released (tests assert on it).
//
// Placement keeps a sequence's pages in consecutive runs, because a KV shipment between
// instances costs one transfer per run it covers (and the NCCL transport skips its gather or
// scatter kernel on a side that is one run). A request for k pages takes, in order of
// preference: the k pages right after the sequence's last page (reserve() on a sequence that
// holds pages; its table stays one run as it grows), the lowest run of k free pages (first
// fit), else k pages in the fewest runs (the longest free runs whole, the remainder from the
// shortest run that holds it). So it fails only when fewer than k pages are free. Measured
// (docs/perf.md "Page allocation and transfer count"): under random churn a request's pages lie in
// 4.9 runs against 20.9 when always taking the lowest free pages; with chunked prefill and decode
// growth on a nearly full pool, 4.6 against 47.7 (the unit test's churn).
//
// Cost: free_pages() O(1); growing into the next page O(1); otherwise an O(num_pages / 64)
// word scan plus O(k), and without a run of k free pages a sort of the free runs. free() is O(pages
// freed), with no allocation.
//
// Contract: single-threaded (owned by one scheduler); plain value, movable. Freeing a page that
// is not in use is an error Status, never a silent no-op.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

class BlockManager {
 public:
  BlockManager(std::int32_t num_pages, std::int32_t page_size);

  std::int32_t num_pages() const { return num_pages_; }
  std::int32_t page_size() const { return page_size_; }
  std::int32_t free_pages() const { return free_count_; }
  std::int32_t used_pages() const { return num_pages_ - free_pages(); }
  // Pages needed to hold `num_tokens` positions.
  std::int32_t pages_for_tokens(std::int64_t num_tokens) const;

  // Raw pool: `count` pages (the lowest run of `count` free pages when there is one) or
  // kResourceExhausted with nothing taken.
  Result<std::vector<std::int32_t>> allocate(std::int32_t count);
  // Returns pages to the pool; any page out of range or not in use fails the whole call
  // before anything is freed.
  Status free(std::span<const std::int32_t> pages);

  // Per-sequence page tables. reserve() grows `seq`'s table (creating it when absent) to cover
  // positions [0, num_tokens); all or nothing (kResourceExhausted).
  Status reserve(RequestId seq, std::int64_t num_tokens);
  // Positions `seq` could grow to with its current pages plus every free page.
  std::int64_t max_tokens_reachable(RequestId seq) const;
  // The pages of `seq` in position order (empty when it holds none).
  std::span<const std::int32_t> page_table(RequestId seq) const;
  // Frees every page of `seq` and forgets it; kNotFound when it holds no table.
  Status release(RequestId seq);
  std::size_t num_sequences() const { return tables_.size(); }

 private:
  // `count` pages placed as the header describes; `preferred_first` is where the sequence's
  // next page would continue its last run, or -1 for none.
  Result<std::vector<std::int32_t>> allocate_near(std::int32_t count, std::int32_t preferred_first);
  // Whether pages [first, first + count) all exist and are free.
  bool run_is_free(std::int32_t first, std::int32_t count) const;
  // First page of the lowest run of `count` free pages, or -1 when there is none.
  std::int32_t lowest_free_run(std::int32_t count) const;
  // `count` free pages (at most free_pages()) in the fewest runs, ascending.
  std::vector<std::int32_t> fewest_runs(std::int32_t count) const;

  std::int32_t num_pages_;
  std::int32_t page_size_;
  // [ceil(num_pages / 64)] bit (p % 64) of word (p / 64) is set while page p is free; bits past
  // num_pages stay clear.
  std::vector<std::uint64_t> free_words_;
  std::int32_t free_count_;
  std::unordered_map<RequestId, std::vector<std::int32_t>> tables_;
};

}  // namespace podserve
