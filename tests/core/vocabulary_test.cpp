// Batch plan wire format, tokenizer, Status / Result plumbing.
#include <gtest/gtest.h>

#include "core/batch_plan.h"
#include "core/status.h"
#include "core/tokenizer.h"

namespace podserve {
namespace {

BatchPlan sample_plan() {
  BatchPlan plan;
  plan.iteration = 42;
  plan.sequences.push_back({7, 33, {5}, {3, 9, 1}, false, true});
  plan.sequences.push_back({8, 16, {1, 2, 3, 4}, {0, 2}, true, false});
  plan.shipments.push_back({7, 1, 30, {3, 9}, {11, 12}});
  plan.deliver_pages = {40, 41, 7};
  return plan;
}

TEST(BatchPlan, SerializationRoundTripsExactly) {
  const auto plan = sample_plan();
  auto back = BatchPlan::deserialize(plan.serialize());
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->iteration, 42u);
  ASSERT_EQ(back->sequences.size(), 2u);
  EXPECT_EQ(back->sequences[0].seq_id, 7u);
  EXPECT_EQ(back->sequences[0].num_cached_tokens, 33);
  EXPECT_EQ(back->sequences[0].page_table, (std::vector<std::int32_t>{3, 9, 1}));
  EXPECT_TRUE(back->sequences[0].sample);
  EXPECT_FALSE(back->sequences[0].is_prefill);
  EXPECT_EQ(back->sequences[1].new_tokens, (std::vector<TokenId>{1, 2, 3, 4}));
  EXPECT_TRUE(back->sequences[1].is_prefill);
  ASSERT_EQ(back->shipments.size(), 1u);
  EXPECT_EQ(back->shipments[0].decode_instance, 1);
  EXPECT_EQ(back->shipments[0].num_tokens, 30);
  EXPECT_EQ(back->shipments[0].dest_pages, (std::vector<std::int32_t>{11, 12}));
  EXPECT_EQ(back->deliver_pages, (std::vector<std::int32_t>{40, 41, 7}));
  EXPECT_EQ(back->total_new_tokens(), 5);
  EXPECT_EQ(back->num_prefill_tokens(), 4);
  EXPECT_EQ(back->num_decode_tokens(), 1);
}

TEST(BatchPlan, TruncatedOrCorruptBytesAreRejected) {
  const auto bytes = sample_plan().serialize();
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    auto back = BatchPlan::deserialize(std::span(bytes.data(), cut));
    EXPECT_FALSE(back.ok()) << "accepted a plan cut at " << cut;
  }
  auto corrupt = bytes;
  corrupt[0] ^= 0xff;
  EXPECT_FALSE(BatchPlan::deserialize(corrupt).ok());
}

TEST(ByteTokenizer, RoundTripsUtf8AndDropsSpecialIds) {
  const std::string text = "héllo, wörld \n\t!";
  auto ids = ByteTokenizer::encode(text);
  EXPECT_EQ(ids.size(), text.size());
  EXPECT_EQ(ByteTokenizer::decode(ids), text);
  ids.insert(ids.begin(), 256);
  ids.push_back(511);
  EXPECT_EQ(ByteTokenizer::decode(ids), text);
  EXPECT_EQ(ByteTokenizer::decode_one(65), "A");
  EXPECT_EQ(ByteTokenizer::decode_one(300), "");
}

Status fails() { return invalid_argument("bad thing"); }
Result<int> twice(Result<int> in) {
  PODSERVE_ASSIGN_OR_RETURN(const int v, in);
  return 2 * v;
}
Status propagate() {
  PODSERVE_RETURN_IF_ERROR(fails());
  return Status::Ok();
}

TEST(Status, PropagatesThroughMacros) {
  EXPECT_EQ(propagate().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(propagate().to_string(), "INVALID_ARGUMENT: bad thing");
  EXPECT_EQ(*twice(21), 42);
  EXPECT_EQ(twice(Result<int>(not_found("x"))).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace podserve
