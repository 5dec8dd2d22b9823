// PrefillSide, every transition: a request prefilled in chunks ships from the plan that runs
// its last chunk, its first token goes to D, its pages are held until every part is final (ok
// or failed); finished by its first token; refused (rejected and abandoned); cancelled while
// queued or mid-prefill (abandoned), or after its prefill (pages kept until the parts are in).
// Real PrefillEngine (tiny preset, CPU backend, pages of 4 tokens, budget 8), recording outbox.
#include "disagg/prefill_side.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/disagg/recording_outbox.h"
#include "tests/worker/tiny_engine_fixture.h"

namespace podserve {
namespace {

using testing_support::RecordingOutbox;

constexpr std::int32_t kNumParts = 2;

class PrefillSideTest : public testing_support::TinyEngineTest {
 protected:
  void SetUp() override {
    engine_ = make_engine<PrefillEngine>(64, 8);
    side_ = std::make_unique<PrefillSide>(kNumParts, *engine_, outbox_);
  }

  static PrefillRequestMessage prefill_request(RequestId id, std::int32_t prompt_len,
                                               std::int32_t decode_instance,
                                               std::int32_t max_tokens = 6) {
    PrefillRequestMessage m;
    m.request = request(id, prompt_len, max_tokens);
    m.decode_instance = decode_instance;
    for (std::int32_t p = 0; p < (prompt_len + 3) / 4; ++p) m.dest_pages.push_back(100 + 7 * p);
    return m;
  }

  // One iteration as the prefill leader runs it; returns the plan's shipments.
  std::vector<KvShipment> step(std::vector<TokenOutput>* outputs = nullptr) {
    std::vector<KvShipment> shipments;
    auto result = engine_->step([&](BatchPlan& plan) {
      side_->add_shipments(plan);
      shipments = plan.shipments;
      return Status::Ok();
    });
    EXPECT_TRUE(result.ok()) << result.status().to_string();
    if (!result.ok()) return shipments;
    EXPECT_TRUE(side_->on_step_outputs(result->outputs).ok());
    EXPECT_TRUE(side_->on_prefill_completions(result->prefill_completions).ok());
    if (outputs != nullptr) *outputs = result->outputs;
    return shipments;
  }

  std::int32_t used_pages() const { return engine_->scheduler().block_manager().used_pages(); }

  RecordingOutbox outbox_;
  std::unique_ptr<PrefillEngine> engine_;
  std::unique_ptr<PrefillSide> side_;
};

TEST_F(PrefillSideTest, TheLastChunksPlanShipsIntoTheReservedPagesAndPagesWaitForEveryPart) {
  const PrefillRequestMessage m = prefill_request(5, 10, 2);
  ASSERT_TRUE(side_->on_prefill_request(m).ok());
  EXPECT_EQ(side_->state(5), PrefillRequestState::kPrefilling);

  EXPECT_TRUE(step().empty());  // tokens [0, 8): no shipment yet
  EXPECT_EQ(side_->state(5), PrefillRequestState::kPrefilling);
  EXPECT_TRUE(outbox_.to_decode.empty());

  std::vector<TokenOutput> outputs;
  const std::vector<KvShipment> shipments = step(&outputs);  // tokens [8, 10) and token 0
  ASSERT_EQ(shipments.size(), 1u);
  const KvShipment& s = shipments[0];
  EXPECT_EQ(s.seq_id, 5u);
  EXPECT_EQ(s.decode_instance, 2);
  EXPECT_EQ(s.num_tokens, 10);
  EXPECT_EQ(s.dest_pages, m.dest_pages);
  EXPECT_EQ(s.source_pages, engine_->retained_pages(5));
  EXPECT_EQ(s.source_pages.size(), 3u);
  EXPECT_EQ(side_->state(5), PrefillRequestState::kShipping);

  ASSERT_EQ(outputs.size(), 1u);
  ASSERT_EQ(outbox_.to_decode.size(), 1u);
  EXPECT_EQ(outbox_.to_decode[0].instance, 2);
  const PrefillResultMessage& result = outbox_.to_decode[0].message;
  EXPECT_EQ(result.id, 5u);
  EXPECT_EQ(result.outcome, PrefillResultMessage::Outcome::kShipping);
  EXPECT_EQ(result.first_token, outputs[0].token);
  EXPECT_FALSE(result.request_finished);
  EXPECT_EQ(result.num_parts, kNumParts);
  EXPECT_TRUE(outbox_.to_router.empty());

  // One part failed, one ok: both are final, so the pages come back after the second.
  ASSERT_TRUE(side_->on_part_done(5).ok());
  EXPECT_EQ(side_->state(5), PrefillRequestState::kShipping);
  EXPECT_EQ(used_pages(), 3);
  ASSERT_TRUE(side_->on_part_done(5).ok());
  EXPECT_EQ(side_->state(5), PrefillRequestState::kUnknown);
  EXPECT_EQ(used_pages(), 0);
  EXPECT_TRUE(engine_->retained_pages(5).empty());
  EXPECT_EQ(side_->on_part_done(5).code(), StatusCode::kInternal);
}

TEST_F(PrefillSideTest, RequestsCompletingInOnePlanShipInPlanOrder) {
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(1, 3, 4)).ok());
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(2, 5, 6)).ok());
  const auto shipments = step();
  ASSERT_EQ(shipments.size(), 2u);
  EXPECT_EQ(shipments[0].seq_id, 1u);
  EXPECT_EQ(shipments[0].decode_instance, 4);
  EXPECT_EQ(shipments[1].seq_id, 2u);
  EXPECT_EQ(shipments[1].decode_instance, 6);
  ASSERT_EQ(outbox_.to_decode.size(), 2u);
  EXPECT_EQ(outbox_.to_decode[0].instance, 4);
  EXPECT_EQ(outbox_.to_decode[1].instance, 6);
  for (RequestId id : {1, 2})
    for (int part = 0; part < kNumParts; ++part) ASSERT_TRUE(side_->on_part_done(id).ok());
  EXPECT_EQ(side_->num_held(), 0u);
  EXPECT_EQ(used_pages(), 0);
}

TEST_F(PrefillSideTest, AFirstTokenThatFinishesTheRequestSaysSo) {
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(3, 6, 2, /*max_tokens=*/1)).ok());
  ASSERT_EQ(step().size(), 1u);  // still shipped: D decides what to do with it
  ASSERT_EQ(outbox_.to_decode.size(), 1u);
  EXPECT_TRUE(outbox_.to_decode[0].message.request_finished);
  EXPECT_EQ(outbox_.to_decode[0].message.outcome, PrefillResultMessage::Outcome::kShipping);
  for (int part = 0; part < kNumParts; ++part) ASSERT_TRUE(side_->on_part_done(3).ok());
  EXPECT_EQ(used_pages(), 0);
}

TEST_F(PrefillSideTest, ARefusedRequestIsRejectedAndAbandoned) {
  PrefillRequestMessage m = prefill_request(8, 6, 2);
  m.request.prompt[2] = 100000;  // outside the vocabulary
  ASSERT_TRUE(side_->on_prefill_request(m).ok());
  EXPECT_EQ(side_->state(8), PrefillRequestState::kUnknown);
  ASSERT_EQ(outbox_.to_router.size(), 1u);
  EXPECT_EQ(outbox_.to_router[0].id, 8u);
  EXPECT_EQ(outbox_.to_router[0].reason, FinishReason::kError);
  ASSERT_EQ(outbox_.to_decode.size(), 1u);
  EXPECT_EQ(outbox_.to_decode[0].instance, 2);
  EXPECT_EQ(outbox_.to_decode[0].message.id, 8u);
  EXPECT_EQ(outbox_.to_decode[0].message.outcome, PrefillResultMessage::Outcome::kAbandoned);
  EXPECT_FALSE(engine_->has_work());
}

TEST_F(PrefillSideTest, ACancelBeforeTheFirstTokenAbandonsTheRequest) {
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(1, 20, 4)).ok());  // chunked: 8, 8, 4
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(2, 6, 5)).ok());   // queued behind 1
  EXPECT_TRUE(step().empty());
  side_->cancel(1);  // mid-prefill
  side_->cancel(2);  // still waiting
  std::vector<TokenOutput> outputs;
  EXPECT_TRUE(step(&outputs).empty());
  ASSERT_EQ(outputs.size(), 2u);  // the aborts, reported to the router by the caller
  ASSERT_EQ(outbox_.to_decode.size(), 2u);
  for (const auto& sent : outbox_.to_decode) {
    EXPECT_EQ(sent.message.outcome, PrefillResultMessage::Outcome::kAbandoned);
    EXPECT_EQ(sent.instance, sent.message.id == 1 ? 4 : 5);
  }
  EXPECT_EQ(side_->state(1), PrefillRequestState::kUnknown);
  EXPECT_EQ(side_->state(2), PrefillRequestState::kUnknown);
  EXPECT_EQ(used_pages(), 0);
  EXPECT_TRUE(outbox_.to_router.empty());
}

TEST_F(PrefillSideTest, ACancelAfterThePrefillKeepsThePagesUntilThePartsAreFinal) {
  ASSERT_TRUE(side_->on_prefill_request(prefill_request(6, 5, 2)).ok());
  ASSERT_EQ(step().size(), 1u);
  side_->cancel(6);  // the engine no longer holds it: no abort, nothing abandoned
  std::vector<TokenOutput> outputs;
  step(&outputs);
  EXPECT_TRUE(outputs.empty());
  ASSERT_EQ(outbox_.to_decode.size(), 1u);  // only the kShipping result
  EXPECT_EQ(side_->state(6), PrefillRequestState::kShipping);
  EXPECT_EQ(used_pages(), 2);
  for (int part = 0; part < kNumParts; ++part) ASSERT_TRUE(side_->on_part_done(6).ok());
  EXPECT_EQ(used_pages(), 0);
}

TEST_F(PrefillSideTest, PartsForUnknownRequestsAreInternalErrors) {
  EXPECT_EQ(side_->on_part_done(77).code(), StatusCode::kInternal);
  EXPECT_EQ(side_->state(77), PrefillRequestState::kUnknown);
}

}  // namespace
}  // namespace podserve
