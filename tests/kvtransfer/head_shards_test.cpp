// shard_segments: which bytes of a prefill rank's KV pages land where in a decode rank's, for
// TP 1->1, 2->1, 1->2, 2->2 (and 4-way splits) over page lists with odd runs, against a naive
// per-element reference, plus randomized geometries with a printed seed. Every case also checks
// that across all (source rank, decode rank) pairs each element of the decode pages is written
// exactly once and each element of the source pages is read exactly once.
#include "kvtransfer/head_shards.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace podserve {
namespace {

using BytePair = std::pair<std::uint64_t, std::uint64_t>;  // (source byte, dest byte)

struct Case {
  std::string name;
  KvPageLayout layout;
  std::int32_t source_tp = 1;
  std::int32_t dest_tp = 1;
  std::vector<std::int32_t> source_pages;
  std::vector<std::int32_t> dest_pages;

  friend void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
};

// Element offsets of (page, kv, slot, head, dim) in a rank holding heads [first_head, +heads).
std::uint64_t element_byte(const KvPageLayout& l, std::int64_t heads, std::int64_t page,
                           std::int64_t kv, std::int64_t slot, std::int64_t head_in_rank,
                           std::int64_t dim) {
  const std::int64_t index =
      (((page * 2 + kv) * l.page_size + slot) * heads + head_in_rank) * l.head_dim + dim;
  return static_cast<std::uint64_t>(index) * l.element_bytes;
}

// The reference: every element of every head both ranks hold, one pair per element.
std::vector<BytePair> naive_pairs(const Case& c, std::int32_t source_rank, std::int32_t dest_rank) {
  const KvPageLayout& l = c.layout;
  const std::int64_t src_heads = l.num_kv_heads / c.source_tp;
  const std::int64_t dst_heads = l.num_kv_heads / c.dest_tp;
  std::vector<BytePair> pairs;
  const std::size_t pages = std::min(c.source_pages.size(), c.dest_pages.size());
  for (std::size_t p = 0; p < pages; ++p)
    for (std::int64_t kv = 0; kv < 2; ++kv)
      for (std::int64_t slot = 0; slot < l.page_size; ++slot)
        for (std::int64_t head = 0; head < l.num_kv_heads; ++head) {
          if (head / src_heads != source_rank || head / dst_heads != dest_rank) continue;
          for (std::int64_t dim = 0; dim < l.head_dim; ++dim) {
            pairs.emplace_back(
                element_byte(l, src_heads, c.source_pages[p], kv, slot, head % src_heads, dim),
                element_byte(l, dst_heads, c.dest_pages[p], kv, slot, head % dst_heads, dim));
          }
        }
  std::sort(pairs.begin(), pairs.end());
  return pairs;
}

// The segments expanded into one pair per element.
std::vector<BytePair> expand(const std::vector<PutSegment>& segments, std::size_t element_bytes) {
  std::vector<BytePair> pairs;
  for (const PutSegment& s : segments) {
    EXPECT_EQ(s.bytes % element_bytes, 0u);
    EXPECT_EQ(s.local_offset % element_bytes, 0u);
    EXPECT_EQ(s.remote_offset % element_bytes, 0u);
    for (std::uint64_t b = 0; b < s.bytes; b += element_bytes)
      pairs.emplace_back(s.local_offset + b, s.remote_offset + b);
  }
  std::sort(pairs.begin(), pairs.end());
  return pairs;
}

void check_case(const Case& c) {
  SCOPED_TRACE(c.name);
  const KvPageLayout& l = c.layout;
  const std::uint64_t pages = std::min(c.source_pages.size(), c.dest_pages.size());
  const std::uint64_t page_elements = 2ull * l.page_size * l.num_kv_heads * l.head_dim;
  std::map<std::pair<std::int32_t, std::uint64_t>, int> written;  // (dest rank, byte) -> count
  std::map<std::pair<std::int32_t, std::uint64_t>, int> read;     // (source rank, byte) -> count
  for (std::int32_t s = 0; s < c.source_tp; ++s) {
    for (std::int32_t d = 0; d < c.dest_tp; ++d) {
      SCOPED_TRACE("source rank " + std::to_string(s) + ", dest rank " + std::to_string(d));
      const auto segments =
          shard_segments(l, {c.source_tp, s}, {c.dest_tp, d}, c.source_pages, c.dest_pages);
      const auto expected = naive_pairs(c, s, d);
      const auto got = expand(segments, l.element_bytes);
      EXPECT_EQ(got, expected);
      EXPECT_EQ(expand(coalesce_segments(segments), l.element_bytes), expected);
      if (l.num_kv_heads / c.source_tp == l.num_kv_heads / c.dest_tp && s == d) {
        // Same heads on both sides: whole pages, one segment each.
        ASSERT_EQ(segments.size(), pages);
        for (const PutSegment& seg : segments)
          EXPECT_EQ(seg.bytes, page_elements / c.source_tp * l.element_bytes);
      }
      for (const auto& [src, dst] : got) {
        ++read[{s, src}];
        ++written[{d, dst}];
      }
    }
  }
  // Every element of the shipped pages read once on the prefill side, written once on the
  // decode side.
  EXPECT_EQ(read.size(), pages * page_elements);
  EXPECT_EQ(written.size(), pages * page_elements);
  for (const auto& [where, count] : read) EXPECT_EQ(count, 1);
  for (const auto& [where, count] : written) EXPECT_EQ(count, 1);
}

class ShardSegments : public ::testing::TestWithParam<Case> {};

TEST_P(ShardSegments, MatchNaiveReferenceAndCoverEveryElementOnce) { check_case(GetParam()); }

KvPageLayout layout(std::int32_t heads, std::int32_t head_dim, std::int32_t page_size,
                    std::size_t element_bytes) {
  return {heads, head_dim, page_size, element_bytes};
}

// Odd page runs: a run of three, a gap, a single page, a backwards pair; the destination runs
// differ from the source's so nothing coalesces by accident.
const std::vector<std::int32_t> kOddSource = {5, 6, 7, 2, 9, 8};
const std::vector<std::int32_t> kOddDest = {0, 1, 3, 4, 10, 11};

INSTANTIATE_TEST_SUITE_P(
    Tables, ShardSegments,
    ::testing::Values(Case{"Tp1To1", layout(4, 8, 4, 4), 1, 1, {3, 4, 5}, {7, 8, 9}},
                      Case{"Tp2To1", layout(4, 8, 4, 4), 2, 1, {3, 4, 5}, {7, 8, 9}},
                      Case{"Tp1To2", layout(4, 8, 4, 4), 1, 2, {3, 4, 5}, {7, 8, 9}},
                      Case{"Tp2To2", layout(4, 8, 4, 4), 2, 2, {3, 4, 5}, {7, 8, 9}},
                      Case{"Tp1To1OddRuns", layout(2, 3, 5, 2), 1, 1, kOddSource, kOddDest},
                      Case{"Tp2To1OddRuns", layout(2, 3, 5, 2), 2, 1, kOddSource, kOddDest},
                      Case{"Tp1To2OddRuns", layout(2, 3, 5, 2), 1, 2, kOddSource, kOddDest},
                      Case{"Tp2To2OddRuns", layout(2, 3, 5, 2), 2, 2, kOddSource, kOddDest},
                      Case{"Tp4To2", layout(8, 4, 3, 2), 4, 2, kOddSource, kOddDest},
                      Case{"Tp2To4", layout(8, 4, 3, 2), 2, 4, kOddSource, kOddDest},
                      Case{"Tp1To1OnePageOneSlot", layout(1, 1, 1, 4), 1, 1, {0}, {5}},
                      Case{"MoreDestPagesThanSource", layout(4, 2, 2, 4), 2, 1, {1, 2}, {4, 5, 6}},
                      Case{"NoPages", layout(4, 2, 2, 4), 1, 2, {}, {}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(ShardSegments, DisjointHeadsShareNothing) {
  const KvPageLayout l = layout(4, 8, 4, 4);
  EXPECT_TRUE(
      shard_segments(l, {2, 0}, {2, 1}, std::vector<std::int32_t>{1}, std::vector<std::int32_t>{2})
          .empty());
  EXPECT_TRUE(
      shard_segments(l, {4, 3}, {2, 0}, std::vector<std::int32_t>{1}, std::vector<std::int32_t>{2})
          .empty());
}

TEST(ShardSegments, RandomGeometriesAndPageLists) {
  const unsigned seed = std::random_device{}();
  std::printf("ShardSegments.RandomGeometriesAndPageLists seed %u\n", seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto pick = [&](std::vector<std::int32_t> values) {
    return values[std::uniform_int_distribution<std::size_t>(0, values.size() - 1)(rng)];
  };
  // Distinct pages out of a small pool, so runs of neighbours occur often.
  const auto page_list = [&](std::size_t count) {
    std::vector<std::int32_t> pool(24);
    for (std::int32_t i = 0; i < 24; ++i) pool[i] = i;
    std::shuffle(pool.begin(), pool.end(), rng);
    pool.resize(count);
    if (rng() % 2) std::sort(pool.begin(), pool.end());
    return pool;
  };
  for (int i = 0; i < 60; ++i) {
    Case c;
    const std::int32_t heads = pick({1, 2, 4, 8});
    c.layout = layout(heads, pick({1, 3, 8}), pick({1, 2, 3, 16}), pick({2, 4}));
    std::vector<std::int32_t> degrees;
    for (std::int32_t tp : {1, 2, 4, 8})
      if (heads % tp == 0) degrees.push_back(tp);
    c.source_tp = pick(degrees);
    c.dest_tp = pick(degrees);
    const std::size_t count = std::uniform_int_distribution<std::size_t>(0, 9)(rng);
    c.source_pages = page_list(count);
    c.dest_pages = page_list(count);
    c.name = "case " + std::to_string(i) + ": heads " + std::to_string(heads) + ", tp " +
             std::to_string(c.source_tp) + " -> " + std::to_string(c.dest_tp);
    check_case(c);
    if (testing::Test::HasFailure()) break;
  }
}

}  // namespace
}  // namespace podserve
