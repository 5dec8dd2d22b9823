// parallel_for covers [0, count) exactly once in disjoint ranges of at least min_chunk items
// (the last may be shorter only when count itself is), for counts around the thread count.
#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace podserve {
namespace {

TEST(ParallelFor, CoversEveryIndexExactlyOnce) {
  const std::int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  for (const std::int64_t count : {std::int64_t{0}, std::int64_t{1}, cores - 1, cores, cores + 1,
                                   std::int64_t{1000}, std::int64_t{100003}}) {
    for (const std::int64_t min_chunk :
         {std::int64_t{0}, std::int64_t{1}, std::int64_t{7}, std::int64_t{4096}}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
      std::mutex mutex;
      std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
      parallel_for(count, min_chunk, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)]++;
        std::lock_guard lock(mutex);
        ranges.emplace_back(begin, end);
      });
      for (std::int64_t i = 0; i < count; ++i)
        ASSERT_EQ(hits[static_cast<std::size_t>(i)].load(), 1)
            << "index " << i << " of " << count << ", min_chunk " << min_chunk;
      EXPECT_LE(static_cast<std::int64_t>(ranges.size()), std::max<std::int64_t>(cores, 1));
      if (count == 0) {
        EXPECT_TRUE(ranges.empty());
      }
      for (const auto& [begin, end] : ranges) {
        EXPECT_LT(begin, end) << "no empty ranges";
        if (ranges.size() > 1) {
          EXPECT_GE(end - begin, min_chunk) << "count " << count;
        }
      }
    }
  }
}

}  // namespace
}  // namespace podserve
