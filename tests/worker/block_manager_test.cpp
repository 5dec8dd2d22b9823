#include "worker/block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <span>
#include <vector>

namespace podserve {
namespace {

TEST(BlockManager, PagesForTokensRoundsUp) {
  BlockManager blocks(8, 16);
  EXPECT_EQ(blocks.pages_for_tokens(0), 0);
  EXPECT_EQ(blocks.pages_for_tokens(1), 1);
  EXPECT_EQ(blocks.pages_for_tokens(16), 1);
  EXPECT_EQ(blocks.pages_for_tokens(17), 2);
}

TEST(BlockManager, AllocateIsAllOrNothing) {
  BlockManager blocks(4, 16);
  auto first = blocks.allocate(3);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(blocks.used_pages(), 3);
  auto too_many = blocks.allocate(2);
  EXPECT_EQ(too_many.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(blocks.free_pages(), 1);
  ASSERT_TRUE(blocks.free(*first).ok());
  EXPECT_EQ(blocks.used_pages(), 0);
}

TEST(BlockManager, DoubleFreeIsAnError) {
  BlockManager blocks(4, 16);
  auto pages = blocks.allocate(2);
  ASSERT_TRUE(pages.ok());
  ASSERT_TRUE(blocks.free(*pages).ok());
  EXPECT_EQ(blocks.free(*pages).code(), StatusCode::kInvalidArgument);
  auto one = blocks.allocate(1);
  ASSERT_TRUE(one.ok());
  const std::vector<std::int32_t> twice{(*one)[0], (*one)[0]};
  EXPECT_EQ(blocks.free(twice).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(blocks.used_pages(), 1);  // the failed call freed nothing
  const std::vector<std::int32_t> out_of_range{7};
  EXPECT_EQ(blocks.free(out_of_range).code(), StatusCode::kInvalidArgument);
}

TEST(BlockManager, SequenceTablesGrowAndRelease) {
  BlockManager blocks(5, 4);
  ASSERT_TRUE(blocks.reserve(1, 5).ok());
  EXPECT_EQ(blocks.page_table(1).size(), 2u);
  ASSERT_TRUE(blocks.reserve(1, 8).ok());  // still 2 pages
  EXPECT_EQ(blocks.page_table(1).size(), 2u);
  ASSERT_TRUE(blocks.reserve(2, 8).ok());
  EXPECT_EQ(blocks.max_tokens_reachable(1), 12);  // 2 held + 1 free, 4 tokens each
  EXPECT_EQ(blocks.reserve(1, 13).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(blocks.page_table(1).size(), 2u);  // unchanged on failure
  EXPECT_EQ(blocks.reserve(3, 13).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(blocks.page_table(3).empty());
  EXPECT_EQ(blocks.num_sequences(), 2u);
  ASSERT_TRUE(blocks.release(1).ok());
  EXPECT_EQ(blocks.release(1).code(), StatusCode::kNotFound);
  ASSERT_TRUE(blocks.release(2).ok());
  EXPECT_EQ(blocks.used_pages(), 0);
}

// A freed run comes back in its original order, so a new sequence's pages stay consecutive (KV
// shipments coalesce into one transfer per run).
TEST(BlockManager, FreedRunsAreHandedBackInOrder) {
  BlockManager blocks(64, 16);
  ASSERT_TRUE(blocks.reserve(1, 10 * 16).ok());
  ASSERT_TRUE(blocks.reserve(2, 10 * 16).ok());
  const std::vector<std::int32_t> first(blocks.page_table(1).begin(), blocks.page_table(1).end());
  for (std::size_t i = 1; i < first.size(); ++i) EXPECT_EQ(first[i], first[i - 1] + 1);
  ASSERT_TRUE(blocks.release(1).ok());
  ASSERT_TRUE(blocks.reserve(3, 10 * 16).ok());
  const auto reused = blocks.page_table(3);
  EXPECT_EQ(std::vector<std::int32_t>(reused.begin(), reused.end()), first);
}

std::vector<std::int32_t> table_of(const BlockManager& blocks, RequestId seq) {
  const auto table = blocks.page_table(seq);
  return {table.begin(), table.end()};
}

std::vector<std::int32_t> page_range(std::int32_t first, std::int32_t count) {
  std::vector<std::int32_t> pages(static_cast<std::size_t>(count));
  for (std::int32_t i = 0; i < count; ++i) pages[static_cast<std::size_t>(i)] = first + i;
  return pages;
}

// A sequence that grows keeps taking the pages right after its last one while they are free,
// even with a lower page free (the table stays one run: one transfer per shipment).
TEST(BlockManager, GrowingSequenceStaysOneRun) {
  BlockManager blocks(64, 16);
  ASSERT_TRUE(blocks.reserve(1, 16).ok());      // page 0
  ASSERT_TRUE(blocks.reserve(2, 4 * 16).ok());  // pages 1..4
  ASSERT_TRUE(blocks.release(1).ok());          // page 0 free, below sequence 2
  for (std::int64_t tokens = 4 * 16 + 1; tokens <= 10 * 16; ++tokens) {  // decode steps
    ASSERT_TRUE(blocks.reserve(2, tokens).ok());
  }
  EXPECT_EQ(table_of(blocks, 2), page_range(1, 10));
  ASSERT_TRUE(blocks.reserve(2, 14 * 16).ok());  // a chunk of 4 pages at once
  EXPECT_EQ(table_of(blocks, 2), page_range(1, 14));
  EXPECT_EQ(blocks.used_pages(), 14);
}

// A fresh reservation takes the lowest run of free pages long enough for it, skipping a lower
// hole that is too small; a smaller one then fills that hole.
TEST(BlockManager, FreshReservationTakesTheLowestRunThatFits) {
  BlockManager blocks(64, 16);
  ASSERT_TRUE(blocks.reserve(1, 10 * 16).ok());  // pages 0..9
  ASSERT_TRUE(blocks.reserve(2, 10 * 16).ok());  // pages 10..19
  ASSERT_TRUE(blocks.release(1).ok());
  ASSERT_TRUE(blocks.reserve(3, 12 * 16).ok());  // the hole 0..9 is too small
  EXPECT_EQ(table_of(blocks, 3), page_range(20, 12));
  ASSERT_TRUE(blocks.reserve(4, 4 * 16).ok());
  EXPECT_EQ(table_of(blocks, 4), page_range(0, 4));
  auto raw = blocks.allocate(3);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, page_range(4, 3));
}

// Without a run of k free pages, k pages go in the fewest runs: the longest holes whole, the
// remainder from the shortest hole that holds it (the lowest of equals); a growing sequence whose
// next page is taken moves to the lowest run that fits.
TEST(BlockManager, FallsBackToTheFewestRunsWithoutARun) {
  BlockManager blocks(16, 16);
  for (RequestId seq = 0; seq < 16; ++seq) ASSERT_TRUE(blocks.reserve(seq, 16).ok());  // page seq
  for (RequestId seq : {1, 2, 5, 9, 10, 11, 14}) ASSERT_TRUE(blocks.release(seq).ok());
  ASSERT_TRUE(blocks.reserve(20, 4 * 16).ok());  // holes {1, 2}, {5}, {9, 10, 11}, {14}
  EXPECT_EQ(table_of(blocks, 20), (std::vector<std::int32_t>{5, 9, 10, 11}));
  ASSERT_TRUE(blocks.reserve(8, 3 * 16).ok());  // page 9 is taken: the run 1, 2
  EXPECT_EQ(table_of(blocks, 8), (std::vector<std::int32_t>{8, 1, 2}));
  EXPECT_EQ(blocks.reserve(13, 3 * 16).code(), StatusCode::kResourceExhausted);  // 1 page free
  EXPECT_EQ(table_of(blocks, 13), (std::vector<std::int32_t>{13}));
  ASSERT_TRUE(blocks.reserve(13, 2 * 16).ok());
  EXPECT_EQ(table_of(blocks, 13), (std::vector<std::int32_t>{13, 14}));
  EXPECT_EQ(blocks.free_pages(), 0);
}

// Five pages over holes of 3, 2, 2 and 1 (lowest first 0-2, 4-5, 7-8, 10): the 3 and the first
// 2 whole, in address order.
TEST(BlockManager, FewestRunsTakesTheLongestHolesWhole) {
  BlockManager blocks(12, 16);
  auto all = blocks.allocate(12);
  ASSERT_TRUE(all.ok());
  ASSERT_TRUE(blocks.free(std::vector<std::int32_t>{0, 1, 2, 4, 5, 7, 8, 10}).ok());
  auto pages = blocks.allocate(5);
  ASSERT_TRUE(pages.ok());
  EXPECT_EQ(*pages, (std::vector<std::int32_t>{0, 1, 2, 4, 5}));
  auto rest = blocks.allocate(2);  // holes 7-8 and 10: the run
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*rest, (std::vector<std::int32_t>{7, 8}));
}

// Free pages live in 64-page words: runs that straddle a word boundary, and a pool whose size is
// not a multiple of 64.
TEST(BlockManager, RunsCrossWordBoundaries) {
  BlockManager blocks(200, 16);
  EXPECT_EQ(blocks.allocate(201).status().code(), StatusCode::kResourceExhausted);
  auto all = blocks.allocate(200);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, page_range(0, 200));
  EXPECT_EQ(blocks.allocate(1).status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(blocks.free(page_range(62, 5)).ok());    // 62..66 spans words 0 and 1
  ASSERT_TRUE(blocks.free(page_range(120, 80)).ok());  // 120..199 spans words 1, 2 and 3
  auto run = blocks.allocate(70);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(*run, page_range(120, 70));
  auto small = blocks.allocate(5);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(*small, page_range(62, 5));
  auto rest = blocks.allocate(10);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*rest, page_range(190, 10));
  EXPECT_EQ(blocks.free_pages(), 0);
}

TEST(BlockManager, RandomChurnNeverHandsOutAPageTwice) {
  std::mt19937 rng(7);
  BlockManager blocks(64, 16);
  std::set<std::int32_t> held;
  std::vector<std::vector<std::int32_t>> groups;
  for (int step = 0; step < 2000; ++step) {
    if (groups.empty() || rng() % 2 == 0) {
      const auto count = static_cast<std::int32_t>(rng() % 9);
      auto pages = blocks.allocate(count);
      if (!pages.ok()) {
        EXPECT_GT(count, 64 - static_cast<std::int32_t>(held.size()));
        continue;
      }
      for (auto p : *pages)
        EXPECT_TRUE(held.insert(p).second) << "page " << p << " handed out twice";
      groups.push_back(*pages);
    } else {
      const std::size_t i = rng() % groups.size();
      ASSERT_TRUE(blocks.free(groups[i]).ok());
      for (auto p : groups[i]) held.erase(p);
      groups.erase(groups.begin() + static_cast<std::ptrdiff_t>(i));
    }
    ASSERT_EQ(blocks.used_pages(), static_cast<std::int32_t>(held.size()));
  }
  for (const auto& g : groups) ASSERT_TRUE(blocks.free(g).ok());
  EXPECT_EQ(blocks.used_pages(), 0);
}

// An independent, naive model of page placement over a flat in-use array: either the policy
// BlockManager documents (contiguous runs) or the lowest free pages only (the allocator before
// it kept runs), for comparison.
class ReferencePagePool {
 public:
  enum class Placement { kContiguousRuns, kLowestFree };

  ReferencePagePool(std::int32_t num_pages, std::int32_t page_size, Placement placement)
      : page_size_(page_size),
        placement_(placement),
        in_use_(static_cast<std::size_t>(num_pages), false),
        free_count_(static_cast<std::size_t>(num_pages)) {}

  bool reserve(RequestId seq, std::int64_t num_tokens) {
    auto& table = tables_[seq];
    const auto needed = static_cast<std::int64_t>((num_tokens + page_size_ - 1) / page_size_) -
                        static_cast<std::int64_t>(table.size());
    if (needed <= 0) return true;
    const auto count = static_cast<std::size_t>(needed);
    if (count > free_count_) {
      if (table.empty()) tables_.erase(seq);
      return false;
    }
    std::vector<std::int32_t> pages;
    if (placement_ == Placement::kContiguousRuns) {
      if (!table.empty()) pages = run_from(static_cast<std::size_t>(table.back()) + 1, count);
      for (std::size_t first = 0; pages.empty() && first < in_use_.size(); ++first) {
        pages = run_from(first, count);
      }
    }
    if (pages.empty() && placement_ == Placement::kContiguousRuns) pages = fewest_runs(count);
    for (std::size_t page = 0; pages.size() < count; ++page) {
      if (!in_use_[page]) pages.push_back(static_cast<std::int32_t>(page));
    }
    for (std::int32_t page : pages) in_use_[static_cast<std::size_t>(page)] = true;
    free_count_ -= count;
    table.insert(table.end(), pages.begin(), pages.end());
    return true;
  }

  void release(RequestId seq) {
    const auto& table = tables_.at(seq);
    for (std::int32_t page : table) in_use_[static_cast<std::size_t>(page)] = false;
    free_count_ += table.size();
    tables_.erase(seq);
  }

  std::span<const std::int32_t> page_table(RequestId seq) const {
    const auto it = tables_.find(seq);
    if (it == tables_.end()) return {};
    return it->second;
  }

 private:
  // `count` free pages (there are that many) in the fewest runs: the maximal free runs sorted by
  // length (longest first, lowest first among equals), whole while they fit, the remainder from
  // the shortest one left that holds it (the lowest of those), the pages then in address order.
  std::vector<std::int32_t> fewest_runs(std::size_t count) const {
    std::vector<std::pair<std::size_t, std::size_t>> runs;  // (first, length)
    for (std::size_t page = 0; page < in_use_.size(); ++page) {
      if (in_use_[page]) continue;
      if (!runs.empty() && runs.back().first + runs.back().second == page) {
        ++runs.back().second;
      } else {
        runs.emplace_back(page, 1);
      }
    }
    std::stable_sort(runs.begin(), runs.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    std::vector<std::int32_t> pages;
    std::size_t remaining = count;
    std::size_t next = 0;
    for (; next < runs.size() && runs[next].second <= remaining; ++next) {
      const auto run = page_range(static_cast<std::int32_t>(runs[next].first),
                                  static_cast<std::int32_t>(runs[next].second));
      pages.insert(pages.end(), run.begin(), run.end());
      remaining -= runs[next].second;
    }
    if (remaining > 0) {
      std::size_t best = next;  // runs[next] is longer than `remaining`
      for (std::size_t i = next; i < runs.size(); ++i) {
        if (runs[i].second < remaining) continue;
        if (runs[i].second < runs[best].second ||
            (runs[i].second == runs[best].second && runs[i].first < runs[best].first)) {
          best = i;
        }
      }
      const auto run = page_range(static_cast<std::int32_t>(runs[best].first),
                                  static_cast<std::int32_t>(remaining));
      pages.insert(pages.end(), run.begin(), run.end());
    }
    std::sort(pages.begin(), pages.end());
    return pages;
  }

  // Pages [first, first + count) when all exist and are free, else none.
  std::vector<std::int32_t> run_from(std::size_t first, std::size_t count) const {
    if (first + count > in_use_.size()) return {};
    for (std::size_t page = first; page < first + count; ++page) {
      if (in_use_[page]) return {};
    }
    return page_range(static_cast<std::int32_t>(first), static_cast<std::int32_t>(count));
  }

  std::int32_t page_size_;
  Placement placement_;
  std::vector<bool> in_use_;  // [num_pages]
  std::size_t free_count_;
  std::map<RequestId, std::vector<std::int32_t>> tables_;
};

// BlockManager checked on every call against the contiguous-runs reference (exact page ids) and
// against pages the test saw handed out.
class CheckedBlockManager {
 public:
  CheckedBlockManager(std::int32_t num_pages, std::int32_t page_size)
      : blocks_(num_pages, page_size),
        reference_(num_pages, page_size, ReferencePagePool::Placement::kContiguousRuns),
        held_(static_cast<std::size_t>(num_pages), false) {}

  bool reserve(RequestId seq, std::int64_t num_tokens) {
    const std::size_t held_before = blocks_.page_table(seq).size();
    const Status status = blocks_.reserve(seq, num_tokens);
    const bool reference_ok = reference_.reserve(seq, num_tokens);
    EXPECT_EQ(status.ok(), reference_ok) << status.message();
    if (!status.ok()) {
      EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
      EXPECT_EQ(blocks_.page_table(seq).size(), held_before);  // all or nothing
      return false;
    }
    const auto table = blocks_.page_table(seq);
    const auto expected = reference_.page_table(seq);
    EXPECT_TRUE(std::equal(table.begin(), table.end(), expected.begin(), expected.end()))
        << "sequence " << seq << " got other pages than the reference";
    for (std::size_t i = held_before; i < table.size(); ++i) {
      const auto page = static_cast<std::size_t>(table[i]);
      EXPECT_FALSE(held_[page]) << "page " << page << " handed out twice";
      held_[page] = true;
      ++held_count_;
    }
    check_counts();
    return true;
  }

  void release(RequestId seq) {
    for (std::int32_t page : blocks_.page_table(seq)) held_[static_cast<std::size_t>(page)] = false;
    held_count_ -= static_cast<std::int32_t>(blocks_.page_table(seq).size());
    EXPECT_TRUE(blocks_.release(seq).ok());
    reference_.release(seq);
    check_counts();
  }

  std::span<const std::int32_t> page_table(RequestId seq) const { return blocks_.page_table(seq); }
  const BlockManager& blocks() const { return blocks_; }

 private:
  void check_counts() const {
    EXPECT_EQ(blocks_.used_pages(), held_count_);
    EXPECT_EQ(blocks_.free_pages(), blocks_.num_pages() - held_count_);
  }

  BlockManager blocks_;
  ReferencePagePool reference_;
  std::vector<bool> held_;  // [num_pages] pages the test saw handed out and not yet released
  std::int32_t held_count_ = 0;
};

std::int32_t count_runs(std::span<const std::int32_t> table) {
  std::int32_t runs = table.empty() ? 0 : 1;
  for (std::size_t i = 1; i < table.size(); ++i) runs += table[i] != table[i - 1] + 1;
  return runs;
}

// A serving-like churn: a request arrives every third round; each round every live sequence
// grows by a prefill chunk or by one page of decode steps, and finishes when its output is done.
// A sequence that does not fit evicts random live sequences (possibly itself, or one not started
// yet) until it does. Returns the mean number of runs in a sequence's page table when its prefill
// completes (what a disaggregated deployment ships). The workload depends only on free page
// counts, so every placement policy sees the same one.
template <typename Pool>
double mean_runs_at_shipping(Pool& pool, std::int32_t page_size) {
  constexpr int kRequests = 3000;
  // The pool stays nearly full and about one request in eight is evicted.
  constexpr int kRoundsPerArrival = 3;
  constexpr std::int64_t kPrefillChunkTokens = 512;
  std::mt19937 rng(20261126);
  std::uniform_int_distribution<std::int64_t> prompt_tokens(16, 4000);
  std::uniform_int_distribution<std::int64_t> output_tokens(16, 1024);
  struct Sequence {
    RequestId id;
    std::int64_t prompt_tokens;
    std::int64_t total_tokens;
    std::int64_t tokens = 0;
  };
  std::vector<Sequence> live;
  std::int64_t runs = 0;
  std::int64_t shipped = 0;
  for (int round = 0; round < kRequests * kRoundsPerArrival; ++round) {
    if (round % kRoundsPerArrival == 0) {
      const std::int64_t prompt = prompt_tokens(rng);
      live.push_back({static_cast<RequestId>(round), prompt, prompt + output_tokens(rng)});
    }
    for (std::size_t i = 0; i < live.size();) {
      const Sequence seq = live[i];  // a copy: evictions below move the elements
      if (seq.tokens == seq.total_tokens) {
        pool.release(seq.id);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      const std::int64_t target =
          seq.tokens < seq.prompt_tokens
              ? std::min(seq.prompt_tokens, seq.tokens + kPrefillChunkTokens)
              : std::min(seq.total_tokens, seq.tokens + page_size);
      bool evicted_itself = false;
      while (!evicted_itself && !pool.reserve(seq.id, target)) {
        const std::size_t victim = rng() % live.size();
        if (!pool.page_table(live[victim].id).empty()) pool.release(live[victim].id);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(victim));
        evicted_itself = victim == i;
        if (victim < i) --i;
      }
      if (evicted_itself) continue;
      if (seq.tokens < seq.prompt_tokens && target == seq.prompt_tokens) {
        runs += count_runs(pool.page_table(seq.id));
        ++shipped;
      }
      live[i].tokens = target;
      ++i;
    }
  }
  for (const Sequence& seq : live) {
    if (!pool.page_table(seq.id).empty()) pool.release(seq.id);
  }
  return static_cast<double>(runs) / static_cast<double>(shipped);
}

TEST(BlockManager, RandomChurnKeepsSequencesInFewRuns) {
  constexpr std::int32_t kPages = 2048;
  constexpr std::int32_t kPageSize = 16;
  CheckedBlockManager blocks(kPages, kPageSize);
  const double runs = mean_runs_at_shipping(blocks, kPageSize);
  EXPECT_EQ(blocks.blocks().used_pages(), 0);
  EXPECT_EQ(blocks.blocks().num_sequences(), 0u);
  ReferencePagePool lowest_free(kPages, kPageSize, ReferencePagePool::Placement::kLowestFree);
  const double lowest_free_runs = mean_runs_at_shipping(lowest_free, kPageSize);
  std::printf("runs per shipped sequence: %.2f (lowest free pages: %.2f)\n", runs,
              lowest_free_runs);
  EXPECT_GE(runs, 1.0);
  EXPECT_LT(runs, lowest_free_runs / 5);  // measured 4.6 against 47.7
}

}  // namespace
}  // namespace podserve
