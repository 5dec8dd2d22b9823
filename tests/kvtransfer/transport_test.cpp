// The transport interface's helpers: segment coalescing and state names.
#include "kvtransfer/transport.h"

#include <gtest/gtest.h>

#include <vector>

namespace podserve {
namespace {

TEST(CoalesceSegments, MergesRunsAdjacentOnBothSides) {
  const std::vector<PutSegment> in = {{0, 100, 16}, {16, 116, 16}, {32, 132, 8}};
  EXPECT_EQ(coalesce_segments(in), (std::vector<PutSegment>{{0, 100, 40}}));
}

TEST(CoalesceSegments, KeepsSegmentsAdjacentOnOneSideOnly) {
  const std::vector<PutSegment> in = {{0, 0, 16}, {16, 64, 16}, {48, 80, 16}};
  EXPECT_EQ(coalesce_segments(in), in);
}

TEST(CoalesceSegments, KeepsOrderAndDropsEmptySegments) {
  const std::vector<PutSegment> in = {{64, 64, 16}, {0, 0, 0}, {0, 0, 16}, {16, 16, 16}};
  EXPECT_EQ(coalesce_segments(in), (std::vector<PutSegment>{{64, 64, 16}, {0, 0, 32}}));
}

TEST(CoalesceSegments, EmptyInput) { EXPECT_TRUE(coalesce_segments({}).empty()); }

TEST(TransferState, EveryStateHasAName) {
  EXPECT_EQ(to_string(TransferState::kPending), "pending");
  EXPECT_EQ(to_string(TransferState::kDone), "done");
  EXPECT_EQ(to_string(TransferState::kFailed), "failed");
  EXPECT_EQ(to_string(TransferState::kTimedOut), "timed_out");
  EXPECT_EQ(to_string(TransferState::kCancelled), "cancelled");
}

}  // namespace
}  // namespace podserve
