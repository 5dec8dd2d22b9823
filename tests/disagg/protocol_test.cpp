// The two sides together: a PrefillSide and a DecodeSide on real engines (tiny preset, CPU
// backend) in one process, this test playing the cluster between them: it carries their outbox
// messages, copies each shipment's KV pages (P's source pages -> D's reserved pages, every
// layer, through kv_cache views) and reports one part per shipment. Greedy outputs must equal a
// colocated engine's token for token, whether the KV arrives or its part fails (D falls back to
// a local prefill); a cancelled request ends with kAbort, and neither side holds a page at the
// end.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <set>

#include "disagg/decode_side.h"
#include "disagg/prefill_side.h"
#include "tests/worker/tiny_engine_fixture.h"

namespace podserve {
namespace {

constexpr std::int32_t kPrefillInstance = 0;
constexpr std::int32_t kDecodeInstance = 1;

using testing_support::record;
using testing_support::Served;

// Queues what each side sends; the test delivers it.
class LoopbackOutbox final : public PdOutbox {
 public:
  Status send_to_prefill(std::int32_t instance, const PrefillRequestMessage& message) override {
    EXPECT_EQ(instance, kPrefillInstance);
    to_prefill.push_back(message);
    return Status::Ok();
  }
  Status send_to_decode(std::int32_t instance, const PrefillResultMessage& message) override {
    EXPECT_EQ(instance, kDecodeInstance);
    to_decode.push_back(message);
    return Status::Ok();
  }
  Status finish_at_router(const TokenOutput& output) override {
    to_router.push_back(output);
    return Status::Ok();
  }

  std::deque<PrefillRequestMessage> to_prefill;
  std::deque<PrefillResultMessage> to_decode;
  std::vector<TokenOutput> to_router;
};

class ProtocolTest : public testing_support::TinyEngineTest {
 protected:
  // Every layer of P's pages into D's.
  static void copy_pages(PrefillEngine& prefill, const KvShipment& shipment, DecodeEngine& decode) {
    for (std::int32_t layer = 0; layer < prefill.model().config().num_layers; ++layer)
      copy_layer(prefill, shipment.source_pages, decode, shipment.dest_pages, layer);
  }

  // Serves `requests` through both sides. Shipments of `failing` report a failed part (nothing
  // copied); `cancel_at` cancels a request (on both sides, as the router does) before the
  // given round.
  Served serve_disaggregated(const std::vector<GenerationRequest>& requests,
                             const std::set<RequestId>& failing,
                             std::map<int, RequestId> cancel_at = {}) {
    Served served;
    for (const auto& r : requests) EXPECT_TRUE(decode_side_->submit({r, kPrefillInstance}).ok());
    for (int round = 0; round < 2000; ++round) {
      if (auto it = cancel_at.find(round); it != cancel_at.end()) {
        prefill_side_->cancel(it->second);
        decode_side_->cancel(it->second);
      }
      while (!outbox_.to_prefill.empty()) {
        EXPECT_TRUE(prefill_side_->on_prefill_request(outbox_.to_prefill.front()).ok());
        outbox_.to_prefill.pop_front();
      }
      // P's iteration, as its leader runs it.
      std::vector<KvShipment> shipments;
      auto p = prefill_->step([&](BatchPlan& plan) {
        prefill_side_->add_shipments(plan);
        shipments = plan.shipments;
        return Status::Ok();
      });
      EXPECT_TRUE(p.ok()) << p.status().to_string();
      if (!p.ok()) break;
      EXPECT_TRUE(prefill_side_->on_step_outputs(p->outputs).ok());
      record(served, p->outputs);
      for (const KvShipment& s : shipments) {
        EXPECT_EQ(s.decode_instance, kDecodeInstance);
        if (!failing.contains(s.seq_id)) copy_pages(*prefill_, s, *decode_);
      }
      EXPECT_TRUE(prefill_side_->on_prefill_completions(p->prefill_completions).ok());
      // The parts (P's TP 1: one per shipment) reach D after the result, and P.
      while (!outbox_.to_decode.empty()) {
        EXPECT_TRUE(decode_side_->on_prefill_result(outbox_.to_decode.front()).ok());
        outbox_.to_decode.pop_front();
      }
      for (const KvShipment& s : shipments) {
        EXPECT_TRUE(decode_side_->on_part_done({s.seq_id, 0, !failing.contains(s.seq_id)}).ok());
        EXPECT_TRUE(prefill_side_->on_part_done(s.seq_id).ok());
      }
      // D's iteration.
      EXPECT_TRUE(decode_side_->admit_waiting().ok());
      auto d = decode_->step([&](BatchPlan& plan) {
        plan.deliver_pages = decode_side_->take_deliveries();
        return Status::Ok();
      });
      EXPECT_TRUE(d.ok()) << d.status().to_string();
      if (!d.ok()) break;
      record(served, d->outputs);
      record(served, outbox_.to_router);
      outbox_.to_router.clear();
      if (!prefill_->has_work() && !decode_->has_work() &&
          decode_side_->num_waiting_for_kv() == 0 && outbox_.to_prefill.empty() &&
          cancel_at.upper_bound(round) == cancel_at.end()) {
        break;
      }
    }
    EXPECT_EQ(prefill_side_->num_held(), 0u);
    EXPECT_EQ(prefill_->scheduler().block_manager().used_pages(), 0);
    EXPECT_EQ(decode_->scheduler().block_manager().used_pages(), 0);
    return served;
  }

  void SetUp() override {
    prefill_ = make_engine<PrefillEngine>(96, 16);  // small budget: chunked prompts
    decode_ = make_engine<DecodeEngine>(128, 32);
    prefill_side_ = std::make_unique<PrefillSide>(1, *prefill_, outbox_);
    decode_side_ = std::make_unique<DecodeSide>(kDecodeInstance, *decode_, outbox_);
  }

  std::vector<GenerationRequest> workload() const {
    std::vector<GenerationRequest> requests;
    for (RequestId id = 1; id <= 6; ++id)
      requests.push_back(
          request(id, 3 + static_cast<std::int32_t>(id) * 4, 2 + static_cast<std::int32_t>(id)));
    requests.push_back(request(7, 9, 1));  // finished by its first token
    return requests;
  }

  LoopbackOutbox outbox_;
  std::unique_ptr<PrefillEngine> prefill_;
  std::unique_ptr<DecodeEngine> decode_;
  std::unique_ptr<PrefillSide> prefill_side_;
  std::unique_ptr<DecodeSide> decode_side_;
};

TEST_F(ProtocolTest, ShippedAndFallenBackRequestsContinueLikeColocated) {
  const auto requests = workload();
  auto colocated = make_engine<ColocatedEngine>(256, 32);
  const Served expected = serve_colocated(*colocated, requests);
  const Served got = serve_disaggregated(requests, /*failing=*/{2, 5});
  for (const auto& r : requests) {
    ASSERT_EQ(expected.tokens.at(r.id).size(), static_cast<std::size_t>(r.sampling.max_tokens));
    EXPECT_EQ(got.tokens.at(r.id), expected.tokens.at(r.id)) << "request " << r.id;
    EXPECT_EQ(got.reasons.at(r.id), FinishReason::kLength) << "request " << r.id;
  }
  EXPECT_EQ(decode_side_->num_fallbacks(), 2);
}

TEST_F(ProtocolTest, CancelledRequestsEndWithAbortAndFreeEveryPage) {
  const auto requests = workload();
  // 3 before its first token (P abandons it, D frees its reservation), 6 once decoding on D
  // (its first token came from P, at least one more from D).
  const Served got = serve_disaggregated(requests, {}, {{1, 3}, {8, 6}});
  EXPECT_EQ(got.reasons.at(3), FinishReason::kAbort);
  EXPECT_FALSE(got.tokens.contains(3) && !got.tokens.at(3).empty());
  EXPECT_EQ(got.reasons.at(6), FinishReason::kAbort);
  ASSERT_TRUE(got.tokens.contains(6));
  EXPECT_GE(got.tokens.at(6).size(), 2u);
  EXPECT_LT(got.tokens.at(6).size(), 8u);
  for (RequestId id : {1, 2, 4, 5, 7}) EXPECT_EQ(got.reasons.at(id), FinishReason::kLength);
}

}  // namespace
}  // namespace podserve
