// ReorderBuffer: in-order outputs pass, early ones wait for the gap, outputs without a token are
// never held, and random arrival orders deliver the same sequence as a naive reference that
// delivers the longest gap-free run of indices received so far.
#include "router/reorder_buffer.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace podserve {
namespace {

TokenOutput token_at(std::int32_t index, bool finished = false) {
  return TokenOutput{.id = 7,
                     .token = 100 + index,
                     .index = index,
                     .finished = finished,
                     .reason = FinishReason::kLength};
}

// Offers `output` and returns what becomes deliverable, in delivery order.
std::vector<TokenOutput> deliver(ReorderBuffer& buffer, const TokenOutput& output) {
  std::vector<TokenOutput> delivered;
  if (!buffer.offer(output)) return delivered;
  delivered.push_back(output);
  while (const std::optional<TokenOutput> held = buffer.pop_next()) delivered.push_back(*held);
  return delivered;
}

std::vector<std::int32_t> indices(const std::vector<TokenOutput>& outputs) {
  std::vector<std::int32_t> result;
  for (const TokenOutput& output : outputs) result.push_back(output.index);
  return result;
}

TEST(ReorderBufferTest, InOrderOutputsPassAtOnce) {
  ReorderBuffer buffer;
  for (std::int32_t i = 0; i < 5; ++i) {
    EXPECT_TRUE(buffer.offer(token_at(i)));
    EXPECT_EQ(buffer.next_index(), i + 1);
    EXPECT_FALSE(buffer.pop_next().has_value());
  }
  EXPECT_EQ(buffer.num_held(), 0u);
}

TEST(ReorderBufferTest, DecodeTokensBeforeThePrefillTokenWaitForIt) {
  ReorderBuffer buffer;
  EXPECT_TRUE(deliver(buffer, token_at(2)).empty());
  EXPECT_TRUE(deliver(buffer, token_at(1)).empty());
  EXPECT_EQ(buffer.num_held(), 2u);
  EXPECT_EQ(indices(deliver(buffer, token_at(0))), (std::vector<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(buffer.next_index(), 3);
  EXPECT_EQ(buffer.num_held(), 0u);
}

TEST(ReorderBufferTest, TheHeldOutputKeepsItsFinish) {
  ReorderBuffer buffer;
  EXPECT_TRUE(deliver(buffer, token_at(1, /*finished=*/true)).empty());
  const std::vector<TokenOutput> delivered = deliver(buffer, token_at(0));
  ASSERT_EQ(delivered.size(), 2u);
  EXPECT_FALSE(delivered[0].finished);
  EXPECT_TRUE(delivered[1].finished);
  EXPECT_EQ(delivered[1].token, 101);
}

TEST(ReorderBufferTest, OutputsWithoutATokenAreNeverHeld) {
  ReorderBuffer buffer;
  EXPECT_FALSE(buffer.offer(token_at(3)));
  const TokenOutput abort{.id = 7,
                          .token = TokenOutput::kNoToken,
                          .index = 0,
                          .finished = true,
                          .reason = FinishReason::kAbort};
  EXPECT_TRUE(buffer.offer(abort));
  EXPECT_EQ(buffer.next_index(), 0);  // a finish without a token fills no gap
  EXPECT_EQ(buffer.num_held(), 1u);
  buffer.clear();
  EXPECT_EQ(buffer.num_held(), 0u);
  EXPECT_FALSE(buffer.pop_next().has_value());
}

TEST(ReorderBufferTest, ADuplicateOfAHeldIndexIsDropped) {
  ReorderBuffer buffer;
  TokenOutput first = token_at(1);
  TokenOutput duplicate = token_at(1);
  duplicate.token = 999;
  EXPECT_FALSE(buffer.offer(first));
  EXPECT_FALSE(buffer.offer(duplicate));
  EXPECT_EQ(buffer.num_held(), 1u);
  const std::vector<TokenOutput> delivered = deliver(buffer, token_at(0));
  ASSERT_EQ(delivered.size(), 2u);
  EXPECT_EQ(delivered[1].token, 101);
}

TEST(ReorderBufferTest, RandomArrivalOrdersMatchTheNaiveReference) {
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 500; ++trial) {
    const auto length = static_cast<std::int32_t>(rng() % 40);
    std::vector<std::int32_t> arrival(static_cast<std::size_t>(length));
    std::iota(arrival.begin(), arrival.end(), 0);
    std::shuffle(arrival.begin(), arrival.end(), rng);
    SCOPED_TRACE(::testing::Message() << "trial " << trial << ", " << length << " outputs");

    ReorderBuffer buffer;
    std::vector<std::int32_t> delivered;
    std::set<std::int32_t> received;  // the reference: every index seen so far
    std::int32_t reference_delivered = 0;
    for (const std::int32_t index : arrival) {
      const std::vector<std::int32_t> now = indices(deliver(buffer, token_at(index)));
      delivered.insert(delivered.end(), now.begin(), now.end());
      received.insert(index);
      while (received.count(reference_delivered) != 0) ++reference_delivered;
      ASSERT_EQ(static_cast<std::int32_t>(delivered.size()), reference_delivered);
      ASSERT_EQ(buffer.num_held(), received.size() - delivered.size());
    }
    std::vector<std::int32_t> in_order(static_cast<std::size_t>(length));
    std::iota(in_order.begin(), in_order.end(), 0);
    ASSERT_EQ(delivered, in_order);
    ASSERT_EQ(buffer.next_index(), length);
  }
}

}  // namespace
}  // namespace podserve
