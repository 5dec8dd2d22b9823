// DecodeSide, every transition: admission (pages reserved at once, queued FCFS while pages run
// out, rejected when refused), and the end of waiting for the KV over the whole matrix of
// cancel timing x P's outcome (abandoned, shipping and finished by the first token, shipping
// and going on) x KV parts (all ok, one failed, all failed) x the order P's word arrives in.
// Real DecodeEngine (tiny preset, CPU backend, pages of 4 tokens), recording outbox.
#include "disagg/decode_side.h"

#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "tests/disagg/recording_outbox.h"
#include "tests/worker/tiny_engine_fixture.h"

namespace podserve {
namespace {

using testing_support::RecordingOutbox;

constexpr std::int32_t kDecodeInstance = 3;
constexpr std::int32_t kPrefillInstance = 1;
constexpr std::int32_t kPageSize = 4;  // the fixture's

class DecodeSideTest : public testing_support::TinyEngineTest {
 protected:
  void SetUp() override {
    engine_ = make_engine<DecodeEngine>(kPages, 32);
    side_ = std::make_unique<DecodeSide>(kDecodeInstance, *engine_, outbox_);
  }

  static DisaggregatedSubmitMessage submission(RequestId id, std::int32_t prompt_len,
                                               std::int32_t max_tokens = 6) {
    return {request(id, prompt_len, max_tokens), kPrefillInstance};
  }

  std::int32_t used_pages() const { return engine_->scheduler().block_manager().used_pages(); }

  static constexpr std::int32_t kPages = 24;
  RecordingOutbox outbox_;
  std::unique_ptr<DecodeEngine> engine_;
  std::unique_ptr<DecodeSide> side_;
};

TEST_F(DecodeSideTest, SubmitReservesThePromptsPagesAndAsksThePrefillInstance) {
  ASSERT_TRUE(side_->submit(submission(7, 10)).ok());
  EXPECT_EQ(side_->state(7), DecodeRequestState::kAwaitingKv);
  EXPECT_TRUE(engine_->is_reserved(7));
  EXPECT_EQ(used_pages(), 3);  // ceil(10 / 4)
  ASSERT_EQ(outbox_.to_prefill.size(), 1u);
  const auto& sent = outbox_.to_prefill[0];
  EXPECT_EQ(sent.instance, kPrefillInstance);
  EXPECT_EQ(sent.message.decode_instance, kDecodeInstance);
  EXPECT_EQ(sent.message.request.id, 7u);
  EXPECT_EQ(sent.message.request.prompt, request(7, 10, 6).prompt);
  EXPECT_EQ(sent.message.dest_pages.size(), 3u);
  EXPECT_EQ(
      std::set<std::int32_t>(sent.message.dest_pages.begin(), sent.message.dest_pages.end()).size(),
      3u);
  EXPECT_EQ(side_->num_waiting_for_kv(), 1u);
  EXPECT_TRUE(outbox_.to_router.empty());
  EXPECT_FALSE(engine_->has_work());  // a reservation is no work
}

TEST_F(DecodeSideTest, RequestsWaitForPagesInOrderAndAreAdmittedWhenPagesComeBack) {
  ASSERT_TRUE(side_->submit(submission(1, 60)).ok());  // 15 of 24 pages
  ASSERT_TRUE(side_->submit(submission(2, 40)).ok());  // 10: does not fit
  ASSERT_TRUE(side_->submit(submission(3, 4)).ok());   // 1 would fit, but waits behind 2
  EXPECT_EQ(side_->state(1), DecodeRequestState::kAwaitingKv);
  EXPECT_EQ(side_->state(2), DecodeRequestState::kWaitingForPages);
  EXPECT_EQ(side_->state(3), DecodeRequestState::kWaitingForPages);
  EXPECT_EQ(outbox_.to_prefill.size(), 1u);
  EXPECT_EQ(side_->num_waiting_for_kv(), 3u);
  auto admitted = side_->admit_waiting();
  ASSERT_TRUE(admitted.ok());
  EXPECT_FALSE(*admitted);

  // P abandons 1: its pages come back and the queue moves, in order.
  ASSERT_TRUE(side_->on_prefill_result({1, PrefillResultMessage::Outcome::kAbandoned}).ok());
  EXPECT_EQ(side_->state(1), DecodeRequestState::kUnknown);
  admitted = side_->admit_waiting();
  ASSERT_TRUE(admitted.ok());
  EXPECT_TRUE(*admitted);
  EXPECT_EQ(side_->state(2), DecodeRequestState::kAwaitingKv);
  EXPECT_EQ(side_->state(3), DecodeRequestState::kAwaitingKv);
  ASSERT_EQ(outbox_.to_prefill.size(), 3u);
  EXPECT_EQ(outbox_.to_prefill[1].message.request.id, 2u);
  EXPECT_EQ(outbox_.to_prefill[2].message.request.id, 3u);
  EXPECT_EQ(used_pages(), 11);
}

TEST_F(DecodeSideTest, AReservationRefusedForAnotherReasonRejectsTheRequest) {
  ASSERT_TRUE(side_->submit(submission(5, 64)).ok());  // not shorter than max_model_len
  EXPECT_EQ(side_->state(5), DecodeRequestState::kUnknown);
  ASSERT_EQ(outbox_.to_router.size(), 1u);
  EXPECT_EQ(outbox_.to_router[0].id, 5u);
  EXPECT_TRUE(outbox_.to_router[0].finished);
  EXPECT_EQ(outbox_.to_router[0].reason, FinishReason::kError);
  EXPECT_EQ(outbox_.to_router[0].token, TokenOutput::kNoToken);
  EXPECT_TRUE(outbox_.to_prefill.empty());
  EXPECT_EQ(used_pages(), 0);
  // The queue goes on behind it.
  ASSERT_TRUE(side_->submit(submission(6, 5)).ok());
  EXPECT_EQ(side_->state(6), DecodeRequestState::kAwaitingKv);
}

TEST_F(DecodeSideTest, ACancelWhileWaitingForPagesForgetsTheRequest) {
  ASSERT_TRUE(side_->submit(submission(1, 60)).ok());
  ASSERT_TRUE(side_->submit(submission(2, 40)).ok());
  side_->cancel(2);
  EXPECT_EQ(side_->state(2), DecodeRequestState::kUnknown);
  ASSERT_TRUE(side_->on_prefill_result({1, PrefillResultMessage::Outcome::kAbandoned}).ok());
  auto admitted = side_->admit_waiting();
  ASSERT_TRUE(admitted.ok());
  EXPECT_FALSE(*admitted);
  EXPECT_EQ(outbox_.to_prefill.size(), 1u);
  EXPECT_TRUE(outbox_.to_router.empty());
  EXPECT_EQ(used_pages(), 0);
}

TEST_F(DecodeSideTest, ACancelAfterActivationGoesToTheEngine) {
  ASSERT_TRUE(side_->submit(submission(4, 9)).ok());
  ASSERT_TRUE(
      side_->on_prefill_result({4, PrefillResultMessage::Outcome::kShipping, 17, false, 1}).ok());
  ASSERT_TRUE(side_->on_part_done({4, 0, true}).ok());
  ASSERT_NE(engine_->scheduler().find(4), nullptr);
  side_->cancel(4);
  EXPECT_EQ(engine_->scheduler().find(4), nullptr);
  auto step = engine_->step(nullptr);
  ASSERT_TRUE(step.ok());
  ASSERT_EQ(step->outputs.size(), 1u);
  EXPECT_EQ(step->outputs[0].reason, FinishReason::kAbort);
  EXPECT_EQ(used_pages(), 0);
}

TEST_F(DecodeSideTest, WordsAboutUnknownRequestsAreInternalErrors) {
  EXPECT_EQ(
      side_->on_prefill_result({9, PrefillResultMessage::Outcome::kShipping, 1, false, 1}).code(),
      StatusCode::kInternal);
  EXPECT_EQ(side_->on_part_done({9, 0, true}).code(), StatusCode::kInternal);
  // Nor after the request was resolved.
  ASSERT_TRUE(side_->submit(submission(2, 5)).ok());
  ASSERT_TRUE(side_->on_prefill_result({2, PrefillResultMessage::Outcome::kAbandoned}).ok());
  EXPECT_EQ(side_->on_part_done({2, 0, true}).code(), StatusCode::kInternal);
}

// The matrix of how waiting for the KV ends.
enum class CancelAt { kNever, kBeforePrefillWord, kMidPrefillWord };
enum class Outcome { kAbandoned, kShippingFinished, kShipping };
enum class Parts { kAllOk, kOneFailed, kAllFailed };
enum class Order { kResultFirst, kPartsFirst };

struct MatrixCase {
  CancelAt cancel;
  Outcome outcome;
  Parts parts;
  Order order;

  std::string name() const {
    const char* cancels[] = {"NoCancel", "CancelBefore", "CancelMidway"};
    const char* outcomes[] = {"Abandoned", "FinishedByFirstToken", "Shipping"};
    const char* parts_names[] = {"AllPartsOk", "OnePartFailed", "AllPartsFailed"};
    const char* orders[] = {"ResultFirst", "PartsFirst"};
    std::string n =
        std::string(cancels[static_cast<int>(cancel)]) + outcomes[static_cast<int>(outcome)];
    if (outcome != Outcome::kAbandoned)
      n += std::string(parts_names[static_cast<int>(parts)]) + orders[static_cast<int>(order)];
    return n;
  }
  friend void PrintTo(const MatrixCase& c, std::ostream* os) { *os << c.name(); }
};

std::vector<MatrixCase> matrix() {
  std::vector<MatrixCase> cases;
  for (CancelAt cancel :
       {CancelAt::kNever, CancelAt::kBeforePrefillWord, CancelAt::kMidPrefillWord})
    for (Outcome outcome : {Outcome::kAbandoned, Outcome::kShippingFinished, Outcome::kShipping}) {
      if (outcome == Outcome::kAbandoned) {
        // One message: no parts, no midway.
        if (cancel != CancelAt::kMidPrefillWord)
          cases.push_back({cancel, outcome, Parts::kAllOk, Order::kResultFirst});
        continue;
      }
      for (Parts parts : {Parts::kAllOk, Parts::kOneFailed, Parts::kAllFailed})
        for (Order order : {Order::kResultFirst, Order::kPartsFirst})
          cases.push_back({cancel, outcome, parts, order});
    }
  return cases;
}

class DecodeSideMatrix : public DecodeSideTest, public ::testing::WithParamInterface<MatrixCase> {};

TEST_P(DecodeSideMatrix, PagesAreHeldUntilPrefillsFinalWordThenResolvedOnce) {
  const MatrixCase c = GetParam();
  constexpr RequestId kId = 11;
  constexpr std::int32_t kPrompt = 10;
  constexpr std::int32_t kNumParts = 2;
  constexpr TokenId kFirstToken = 42;
  // max_tokens 1: the first token finishes the request (as P reports it).
  const std::int32_t max_tokens = c.outcome == Outcome::kShippingFinished ? 1 : 6;
  ASSERT_TRUE(side_->submit(submission(kId, kPrompt, max_tokens)).ok());
  ASSERT_EQ(outbox_.to_prefill.size(), 1u);
  const std::vector<std::int32_t> dest_pages = outbox_.to_prefill[0].message.dest_pages;

  // P's word: its result and, when shipping, one part per P rank, in the case's order.
  std::vector<std::function<Status()>> word;
  if (c.outcome == Outcome::kAbandoned) {
    word.push_back([&] {
      return side_->on_prefill_result({kId, PrefillResultMessage::Outcome::kAbandoned});
    });
  } else {
    const PrefillResultMessage result{kId, PrefillResultMessage::Outcome::kShipping, kFirstToken,
                                      c.outcome == Outcome::kShippingFinished, kNumParts};
    const bool part_ok[kNumParts] = {c.parts == Parts::kAllOk, c.parts != Parts::kAllFailed};
    std::vector<std::function<Status()>> parts;
    for (std::int32_t p = 0; p < kNumParts; ++p)
      parts.push_back([&, p, ok = part_ok[p]] { return side_->on_part_done({kId, p, ok}); });
    const auto send_result = [&, result] { return side_->on_prefill_result(result); };
    if (c.order == Order::kResultFirst) word.push_back(send_result);
    word.insert(word.end(), parts.begin(), parts.end());
    if (c.order == Order::kPartsFirst) word.push_back(send_result);
  }

  const bool cancelled = c.cancel != CancelAt::kNever;
  if (c.cancel == CancelAt::kBeforePrefillWord) side_->cancel(kId);
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (c.cancel == CancelAt::kMidPrefillWord && i == word.size() - 1) side_->cancel(kId);
    // Until P's last word the pages stay reserved: they may still be a transfer target.
    EXPECT_EQ(side_->state(kId), DecodeRequestState::kAwaitingKv) << "before word " << i;
    EXPECT_TRUE(engine_->is_reserved(kId)) << "before word " << i;
    EXPECT_EQ(used_pages(), 3) << "before word " << i;
    EXPECT_TRUE(outbox_.to_router.empty()) << "before word " << i;
    ASSERT_TRUE(word[i]().ok()) << "word " << i;
  }
  EXPECT_EQ(side_->state(kId), DecodeRequestState::kUnknown);
  EXPECT_EQ(side_->num_waiting_for_kv(), 0u);
  EXPECT_FALSE(engine_->is_reserved(kId));
  EXPECT_EQ(outbox_.to_prefill.size(), 1u);
  EXPECT_TRUE(outbox_.to_decode.empty());

  const bool abandoned = c.outcome == Outcome::kAbandoned;
  const bool finished = c.outcome == Outcome::kShippingFinished;
  const Sequence* seq = engine_->scheduler().find(kId);
  const std::vector<std::int32_t> deliveries = side_->take_deliveries();
  // One KV-wait sample per activated request (from its KV or a local prefill), none otherwise.
  const std::vector<double> kv_waits = side_->take_kv_waits();
  EXPECT_EQ(kv_waits.size(), abandoned || cancelled || finished ? 0u : 1u);
  for (const double wait : kv_waits) EXPECT_GE(wait, 0.0);
  EXPECT_TRUE(side_->take_kv_waits().empty());
  if (abandoned || cancelled || finished) {
    // Released: nothing decodes, no page held.
    EXPECT_EQ(seq, nullptr);
    EXPECT_EQ(used_pages(), 0);
    EXPECT_TRUE(deliveries.empty());
    EXPECT_EQ(side_->num_fallbacks(), 0);
    // Only a cancel that P did not end itself is reported here (P reported its own abort, or
    // the first token finished the request).
    if (cancelled && !abandoned && !finished) {
      ASSERT_EQ(outbox_.to_router.size(), 1u);
      EXPECT_EQ(outbox_.to_router[0].id, kId);
      EXPECT_EQ(outbox_.to_router[0].reason, FinishReason::kAbort);
      EXPECT_EQ(outbox_.to_router[0].index, 1);
      EXPECT_TRUE(outbox_.to_router[0].finished);
    } else {
      EXPECT_TRUE(outbox_.to_router.empty());
    }
    return;
  }
  EXPECT_TRUE(outbox_.to_router.empty());
  ASSERT_NE(seq, nullptr);
  EXPECT_EQ(seq->tokens.size(), static_cast<std::size_t>(kPrompt + 1));
  EXPECT_EQ(seq->tokens.back(), kFirstToken);
  EXPECT_EQ(seq->num_generated, 1);
  const auto page_table = engine_->scheduler().block_manager().page_table(kId);
  EXPECT_EQ(std::vector<std::int32_t>(page_table.begin(), page_table.end()), dest_pages);
  if (c.parts == Parts::kAllOk) {
    // Decodes from the shipped KV, delivered before the next forward pass.
    EXPECT_FALSE(seq->in_prefill());
    EXPECT_EQ(seq->num_computed, kPrompt);
    EXPECT_EQ(deliveries, dest_pages);
    EXPECT_EQ(side_->num_fallbacks(), 0);
  } else {
    // Prefills prompt + first token locally into the same pages.
    EXPECT_TRUE(seq->in_prefill());
    EXPECT_EQ(seq->num_computed, 0);
    EXPECT_EQ(seq->prefill_target, kPrompt + 1);
    EXPECT_TRUE(deliveries.empty());
    EXPECT_EQ(side_->num_fallbacks(), 1);
  }
  EXPECT_TRUE(side_->take_deliveries().empty());
}

INSTANTIATE_TEST_SUITE_P(CancelOutcomePartsOrder, DecodeSideMatrix, ::testing::ValuesIn(matrix()),
                         [](const ::testing::TestParamInfo<MatrixCase>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace podserve
