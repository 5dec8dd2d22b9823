#include "worker/block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

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

// Lowest free pages first: a sequence that fits into a freed hole gets it as one ascending run
// (KV shipments then coalesce into one transfer per run).
TEST(BlockManager, HandsOutTheLowestFreePagesInOrder) {
  BlockManager blocks(64, 16);
  ASSERT_TRUE(blocks.reserve(1, 10 * 16).ok());  // pages 0..9
  ASSERT_TRUE(blocks.reserve(2, 10 * 16).ok());  // pages 10..19
  ASSERT_TRUE(blocks.release(1).ok());
  ASSERT_TRUE(blocks.reserve(3, 12 * 16).ok());  // the hole 0..9, then 20, 21
  const auto table = blocks.page_table(3);
  const std::vector<std::int32_t> expected{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21};
  EXPECT_EQ(std::vector<std::int32_t>(table.begin(), table.end()), expected);
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

}  // namespace
}  // namespace podserve
