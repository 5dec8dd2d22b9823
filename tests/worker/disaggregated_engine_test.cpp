// A prefill engine and a decode engine in one process (CPU backend, tiny preset, TP=1), with
// this test playing the cluster: the decode engine reserves pages, the prefill engine computes
// the prompt and the first token, the KV pages are copied by hand (P page i -> D page j, per
// layer, through kv_cache(layer) views), and the decode engine continues. Greedy outputs must
// equal a colocated engine's, token for token; cancels in every state leave no page used.
#include <gtest/gtest.h>

#include <map>

#include "tiny_engine_fixture.h"
#include "worker/engine.h"

namespace podserve {
namespace {

using testing_support::record;
using testing_support::Served;

enum class KvPath { kWhole, kLayerwise, kFallback };

class DisaggregatedEngineTest : public testing_support::TinyEngineTest {
 protected:
  // Plays the cluster for `requests` on (prefill, decode) with the given KV path.
  Served serve_disaggregated(PrefillEngine& prefill, DecodeEngine& decode,
                             const std::vector<GenerationRequest>& requests, KvPath path) {
    Served served;
    std::map<RequestId, GenerationRequest> by_id;
    std::map<RequestId, std::vector<std::int32_t>> reserved;
    for (const auto& r : requests) {
      auto pages = decode.reserve(r.id, static_cast<std::int32_t>(r.prompt.size()));
      EXPECT_TRUE(pages.ok()) << pages.status().to_string();
      reserved[r.id] = *pages;
      by_id[r.id] = r;
      EXPECT_TRUE(prefill.submit(r).ok());
    }
    const std::int32_t num_layers = prefill.model().config().num_layers;
    for (int steps = 0; (prefill.has_work() || decode.has_work()) && steps < 2000; ++steps) {
      // Layer-wise: the sequences completing in this plan ship layer l right after it ran.
      std::vector<RequestId> completing;
      std::int32_t layers_seen = 0;
      auto prefill_step = prefill.step(
          [&](BatchPlan& plan) {
            EXPECT_EQ(plan.num_decode_tokens(), 0);
            for (const SequenceWork& w : plan.sequences) {
              if (w.sample) completing.push_back(w.seq_id);
            }
            return Status::Ok();
          },
          [&](std::int32_t layer) {
            EXPECT_EQ(layer, layers_seen++);
            if (path != KvPath::kLayerwise) return Status::Ok();
            for (RequestId id : completing) {
              const Sequence* seq = prefill.scheduler().find(id);
              EXPECT_NE(seq, nullptr);
              const auto pages = prefill.scheduler().block_manager().page_table(id);
              copy_layer(prefill, pages, decode, reserved.at(id), layer);
            }
            return Status::Ok();
          });
      EXPECT_TRUE(prefill_step.ok()) << prefill_step.status().to_string();
      if (!prefill_step.ok()) break;
      EXPECT_EQ(layers_seen, prefill_step->stats.num_sequences > 0 ? num_layers : 0);
      record(served, prefill_step->outputs);
      for (const PrefillCompletion& done : prefill_step->prefill_completions) {
        const GenerationRequest& r = by_id.at(done.id);
        if (done.request_finished) {
          EXPECT_TRUE(decode.release_reservation(done.id).ok());
        } else if (path == KvPath::kFallback) {
          EXPECT_TRUE(decode.activate_fallback(r, done.first_token).ok());
        } else {
          if (path == KvPath::kWhole) {
            for (std::int32_t layer = 0; layer < num_layers; ++layer)
              copy_layer(prefill, done.pages, decode, reserved.at(done.id), layer);
          }
          EXPECT_TRUE(decode.activate_prefilled(r, done.first_token).ok());
        }
        EXPECT_TRUE(prefill.release_retained(done.id).ok());
      }
      auto decode_step = decode.step([&](BatchPlan& plan) {
        if (path != KvPath::kFallback) {
          EXPECT_EQ(plan.num_prefill_tokens(), 0);
        }
        return Status::Ok();
      });
      EXPECT_TRUE(decode_step.ok()) << decode_step.status().to_string();
      if (!decode_step.ok()) break;
      EXPECT_TRUE(decode_step->prefill_completions.empty());
      record(served, decode_step->outputs);
    }
    return served;
  }

  std::vector<GenerationRequest> workload() const {
    std::vector<GenerationRequest> requests;
    for (RequestId id = 1; id <= 6; ++id)
      requests.push_back(
          request(id, 3 + static_cast<std::int32_t>(id) * 4, 2 + static_cast<std::int32_t>(id)));
    requests.push_back(request(7, 9, 1));  // finished by its first token
    return requests;
  }

  void expect_same_as_colocated(KvPath path) {
    const std::vector<GenerationRequest> requests = workload();
    auto colocated = make_engine<ColocatedEngine>(256, 32);
    const Served expected = serve_colocated(*colocated, requests);
    auto prefill = make_engine<PrefillEngine>(96, 16);  // small budget: chunked prompts
    auto decode = make_engine<DecodeEngine>(128, 32);
    // Occupy a few of D's pages so P's and D's page ids differ.
    ASSERT_TRUE(decode->reserve(1000, 10).ok());
    const Served got = serve_disaggregated(*prefill, *decode, requests, path);
    for (const auto& r : requests) {
      ASSERT_EQ(expected.tokens.at(r.id).size(), static_cast<std::size_t>(r.sampling.max_tokens));
      EXPECT_EQ(got.tokens.at(r.id), expected.tokens.at(r.id)) << "request " << r.id;
      EXPECT_EQ(got.reasons.at(r.id), FinishReason::kLength) << "request " << r.id;
    }
    EXPECT_TRUE(decode->release_reservation(1000).ok());
    EXPECT_EQ(prefill->scheduler().block_manager().used_pages(), 0);
    EXPECT_EQ(decode->scheduler().block_manager().used_pages(), 0);
  }
};

TEST_F(DisaggregatedEngineTest, ShippedPagesContinueLikeColocated) {
  expect_same_as_colocated(KvPath::kWhole);
}

TEST_F(DisaggregatedEngineTest, LayerwiseShippedPagesContinueLikeColocated) {
  expect_same_as_colocated(KvPath::kLayerwise);
}

TEST_F(DisaggregatedEngineTest, FallbackPrefillContinuesLikeColocated) {
  expect_same_as_colocated(KvPath::kFallback);
}

TEST_F(DisaggregatedEngineTest, WithoutShippedPagesTheContinuationDiffers) {
  // The check that the KV copy matters: activating with garbage in the reserved pages must
  // change the greedy continuation of at least one request.
  const std::vector<GenerationRequest> requests = workload();
  auto colocated = make_engine<ColocatedEngine>(256, 32);
  const Served expected = serve_colocated(*colocated, requests);
  auto prefill = make_engine<PrefillEngine>(96, 16);
  auto decode = make_engine<DecodeEngine>(128, 32);
  Served got;
  // Garbage of our own in the reserved pages (not whatever the allocation held: zeros there can
  // leave a tiny model's continuation unchanged).
  std::uint32_t state = 12345;
  for (const auto& r : requests) {
    auto pages = decode->reserve(r.id, static_cast<std::int32_t>(r.prompt.size()));
    ASSERT_TRUE(pages.ok());
    for (std::int32_t layer = 0; layer < decode->model().config().num_layers; ++layer) {
      const KvCacheView cache = decode->model().kv_cache(layer);
      for (const std::int32_t page : *pages) {
        float* data = static_cast<float*>(cache.data) + page * cache.page_elements();
        for (std::size_t e = 0; e < cache.page_elements(); ++e) {
          state = state * 1664525u + 1013904223u;
          data[e] = static_cast<float>(state >> 8) * (4.0f / 16777216.0f) - 2.0f;
        }
      }
    }
    ASSERT_TRUE(prefill->submit(r).ok());
  }
  while (prefill->has_work() || decode->has_work()) {
    auto p = prefill->step(nullptr);
    ASSERT_TRUE(p.ok());
    record(got, p->outputs);
    for (const PrefillCompletion& done : p->prefill_completions) {
      const GenerationRequest& r = requests[done.id - 1];
      EXPECT_TRUE(decode->activate_prefilled(r, done.first_token).ok());
      EXPECT_TRUE(prefill->release_retained(done.id).ok());
    }
    auto d = decode->step(nullptr);
    ASSERT_TRUE(d.ok());
    record(got, d->outputs);
  }
  int differing = 0;
  for (const auto& r : requests) differing += got.tokens.at(r.id) != expected.tokens.at(r.id);
  EXPECT_GT(differing, 0);
  EXPECT_EQ(decode->scheduler().block_manager().used_pages(), 0);
}

// Each role's operations exist on its engine only: a call of another role's does not compile.
template <typename E>
concept Submits = requires(E& e) {
  e.submit(GenerationRequest{});
};
template <typename E>
concept Retains = requires(E& e) {
  e.retained_pages(RequestId{1});
  e.release_retained(RequestId{1});
};
template <typename E>
concept Reserves = requires(E& e) {
  e.reserve(RequestId{1}, 4);
  e.activate_prefilled(GenerationRequest{}, TokenId{0});
  e.activate_fallback(GenerationRequest{}, TokenId{0});
  e.release_reservation(RequestId{1});
  e.is_reserved(RequestId{1});
};
static_assert(Submits<ColocatedEngine> && !Retains<ColocatedEngine> && !Reserves<ColocatedEngine>);
static_assert(Submits<PrefillEngine> && Retains<PrefillEngine> && !Reserves<PrefillEngine>);
static_assert(!Submits<DecodeEngine> && !Retains<DecodeEngine> && Reserves<DecodeEngine>);
static_assert(!Submits<Engine> && !Retains<Engine> && !Reserves<Engine>);

TEST_F(DisaggregatedEngineTest, ActivationChecksTheVocabularyAndKeepsTheReservation) {
  auto decode = make_engine<DecodeEngine>(64, 16);
  EXPECT_EQ(decode->role(), InstanceRole::kDecode);
  ASSERT_TRUE(decode->reserve(1, 4).ok());
  EXPECT_FALSE(decode->activate_prefilled(request(1, 4, 4), 512).ok());  // outside the vocabulary
  EXPECT_FALSE(decode->activate_fallback(request(1, 4, 4), -2).ok());
  EXPECT_TRUE(decode->is_reserved(1));
  EXPECT_TRUE(decode->release_reservation(1).ok());
  EXPECT_EQ(decode->scheduler().block_manager().used_pages(), 0);
}

TEST_F(DisaggregatedEngineTest, CancelsInEveryStateLeaveNoPageUsed) {
  auto prefill = make_engine<PrefillEngine>(64, 8);
  auto decode = make_engine<DecodeEngine>(64, 16);
  // 1: cancelled while waiting on P. 2: cancelled mid-prefill (prompt chunked over 3 steps).
  // 3: cancelled after its first token, transfer in flight. 4: cancelled while decoding on D.
  std::map<RequestId, GenerationRequest> requests;
  for (RequestId id = 1; id <= 4; ++id) {
    requests[id] = request(id, id == 2 ? 20 : 6, 8);
    ASSERT_TRUE(decode->reserve(id, static_cast<std::int32_t>(requests[id].prompt.size())).ok());
  }
  for (RequestId id : {2, 3, 4, 1}) ASSERT_TRUE(prefill->submit(requests[id]).ok());

  Served from_prefill, from_decode;  // each side reports its own abort
  std::vector<PrefillCompletion> in_flight;
  auto step_both = [&] {
    auto p = prefill->step(nullptr);
    ASSERT_TRUE(p.ok());
    record(from_prefill, p->outputs);
    for (const PrefillCompletion& done : p->prefill_completions) in_flight.push_back(done);
    auto d = decode->step(nullptr);
    ASSERT_TRUE(d.ok());
    record(from_decode, d->outputs, /*first_index=*/1);
  };
  auto cancel_both = [&](RequestId id) {
    prefill->cancel(id);
    decode->cancel(id);
  };

  step_both();  // P: 8 tokens of request 2
  ASSERT_NE(prefill->scheduler().find(1), nullptr);
  cancel_both(1);
  cancel_both(2);
  step_both();  // aborts reported; reservations 1 and 2 stay fenced
  for (RequestId id : {1, 2}) {
    EXPECT_EQ(from_prefill.reasons.at(id), FinishReason::kAbort);
    EXPECT_EQ(from_decode.reasons.at(id), FinishReason::kAbort);
  }
  EXPECT_TRUE(decode->is_reserved(1));
  EXPECT_TRUE(decode->is_reserved(2));
  // P's final word for 1 and 2 (aborted): the cluster releases D's reservations.
  EXPECT_TRUE(decode->release_reservation(1).ok());
  EXPECT_TRUE(decode->release_reservation(2).ok());

  while (in_flight.size() < 2) step_both();  // 3 and 4 prefilled
  cancel_both(3);  // P already done: keeps its retained pages; D fences the reservation
  EXPECT_FALSE(prefill->retained_pages(3).empty());
  EXPECT_TRUE(decode->is_reserved(3));
  for (const PrefillCompletion& done : in_flight) {
    // The transfers end: activation of the cancelled 3 only releases it.
    EXPECT_TRUE(decode->activate_prefilled(requests.at(done.id), done.first_token).ok());
    EXPECT_TRUE(prefill->release_retained(done.id).ok());
  }
  EXPECT_FALSE(decode->is_reserved(3));
  EXPECT_EQ(decode->scheduler().find(3), nullptr);
  step_both();
  ASSERT_NE(decode->scheduler().find(4), nullptr);
  cancel_both(4);
  step_both();
  EXPECT_EQ(from_decode.reasons.at(3), FinishReason::kAbort);
  EXPECT_EQ(from_decode.reasons.at(4), FinishReason::kAbort);
  EXPECT_FALSE(from_prefill.reasons.contains(3));  // P had finished its part
  EXPECT_EQ(from_decode.tokens.at(4).size(), 1u);  // index 0 came from P; D sampled index 1
  EXPECT_EQ(from_prefill.tokens.at(4).size(), 1u);
  EXPECT_FALSE(prefill->has_work());
  EXPECT_FALSE(decode->has_work());
  EXPECT_EQ(prefill->scheduler().block_manager().used_pages(), 0);
  EXPECT_EQ(decode->scheduler().block_manager().used_pages(), 0);
}

}  // namespace
}  // namespace podserve
