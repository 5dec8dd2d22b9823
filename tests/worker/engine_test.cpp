// Engine end to end on the CPU backend with the tiny preset: requests served to completion,
// greedy output independent of batch composition and of preemption.
#include "worker/engine.h"

#include <gtest/gtest.h>

#include <map>

#include "tiny_engine_fixture.h"

namespace podserve {
namespace {

struct Served {
  std::map<RequestId, std::vector<TokenId>> tokens;
  std::map<RequestId, FinishReason> reasons;
  std::int64_t preemptions = 0;
  std::int32_t used_pages_at_end = -1;
};

class EngineTest : public testing_support::TinyEngineTest {
 protected:
  Served serve(ColocatedEngine& engine, const std::vector<GenerationRequest>& requests) {
    Served served;
    for (const auto& r : requests) EXPECT_TRUE(engine.submit(r).ok());
    int plans_seen = 0;
    int steps = 0;
    while (engine.has_work() && steps++ < 2000) {
      auto result = engine.step([&](const BatchPlan& plan) {
        ++plans_seen;
        EXPECT_LE(plan.total_new_tokens(), engine.scheduler().config().token_budget);
        return Status::Ok();
      });
      EXPECT_TRUE(result.ok()) << result.status().to_string();
      if (!result.ok()) break;
      EXPECT_EQ(result->stats.num_prefill_tokens + result->stats.num_decode_tokens > 0,
                result->stats.num_sequences > 0);
      EXPECT_GE(result->stats.iteration_seconds, result->stats.forward_seconds);
      for (const TokenOutput& out : result->outputs) {
        auto& tokens = served.tokens[out.id];
        if (out.token != TokenOutput::kNoToken) {
          EXPECT_EQ(out.index, static_cast<std::int32_t>(tokens.size()));
          tokens.push_back(out.token);
        }
        if (out.finished) {
          EXPECT_FALSE(served.reasons.contains(out.id)) << "finished twice";
          served.reasons[out.id] = out.reason;
        }
      }
    }
    EXPECT_GT(plans_seen, 0);
    served.preemptions = engine.scheduler().num_preemptions();
    served.used_pages_at_end = engine.scheduler().block_manager().used_pages();
    return served;
  }
};

TEST_F(EngineTest, ServesEightRequestsWithExactTokenCounts) {
  auto engine = make_engine<ColocatedEngine>(256, 32);
  std::vector<GenerationRequest> requests;
  for (RequestId id = 1; id <= 8; ++id)
    requests.push_back(
        request(id, 5 + static_cast<std::int32_t>(id) * 3, 3 + static_cast<std::int32_t>(id)));
  const Served served = serve(*engine, requests);
  for (const auto& r : requests) {
    ASSERT_TRUE(served.reasons.contains(r.id));
    EXPECT_EQ(served.reasons.at(r.id), FinishReason::kLength);
    EXPECT_EQ(served.tokens.at(r.id).size(), static_cast<std::size_t>(r.sampling.max_tokens));
  }
  EXPECT_EQ(served.used_pages_at_end, 0);
  EXPECT_FALSE(engine->has_work());
  const InstanceLoad load = engine->load();
  EXPECT_EQ(load.free_pages, load.total_pages);
}

TEST_F(EngineTest, GreedyOutputIndependentOfBatchAndPreemption) {
  const GenerationRequest probe = request(100, 21, 12);
  auto alone_engine = make_engine<ColocatedEngine>(256, 32);
  const Served alone = serve(*alone_engine, {probe});
  ASSERT_EQ(alone.tokens.at(probe.id).size(), 12u);

  std::vector<GenerationRequest> busy;
  for (RequestId id = 1; id <= 7; ++id)
    busy.push_back(request(id, 9 + static_cast<std::int32_t>(id) * 2, 10));
  busy.insert(busy.begin() + 3, probe);
  auto busy_engine =
      make_engine<ColocatedEngine>(256,
                                   16);  // small budget: the probe's prompt is chunked
  const Served batched = serve(*busy_engine, busy);
  EXPECT_EQ(batched.tokens.at(probe.id), alone.tokens.at(probe.id));

  // 16 pages of 4 tokens: far less than the batch needs, so sequences are preempted and
  // recomputed; the output must not change.
  auto tight_engine = make_engine<ColocatedEngine>(16, 16);
  const Served tight = serve(*tight_engine, busy);
  EXPECT_GT(tight.preemptions, 0) << "the pool was meant to force preemption";
  EXPECT_EQ(tight.tokens.at(probe.id), alone.tokens.at(probe.id));
  for (const auto& r : busy) {
    EXPECT_EQ(tight.tokens.at(r.id), batched.tokens.at(r.id)) << "request " << r.id;
    EXPECT_EQ(tight.reasons.at(r.id), FinishReason::kLength);
  }
  EXPECT_EQ(tight.used_pages_at_end, 0);
}

TEST_F(EngineTest, CancelReportsAbortAndFreesPages) {
  auto engine = make_engine<ColocatedEngine>(64, 8);
  ASSERT_TRUE(engine->submit(request(1, 20, 8)).ok());
  ASSERT_TRUE(engine->submit(request(2, 6, 8)).ok());
  EXPECT_FALSE(engine->submit(request(2, 6, 8)).ok());  // duplicate id
  GenerationRequest bad = request(3, 4, 4);
  bad.prompt[1] = 512;  // outside the tiny vocabulary
  EXPECT_FALSE(engine->submit(bad).ok());
  ASSERT_TRUE(engine->step(nullptr).ok());
  EXPECT_GT(engine->scheduler().block_manager().used_pages(), 0);
  engine->cancel(1);
  engine->cancel(2);
  engine->cancel(99);
  auto result = engine->step(nullptr);
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result->outputs.size(), 2u);
  for (const TokenOutput& out : result->outputs) {
    EXPECT_TRUE(out.finished);
    EXPECT_EQ(out.reason, FinishReason::kAbort);
  }
  EXPECT_EQ(engine->scheduler().block_manager().used_pages(), 0);
  EXPECT_FALSE(engine->has_work());
}

TEST_F(EngineTest, CallbackErrorStopsTheStep) {
  auto engine = make_engine<ColocatedEngine>(64, 8);
  ASSERT_TRUE(engine->submit(request(1, 4, 2)).ok());
  auto result = engine->step([](const BatchPlan&) { return unavailable("peer gone"); });
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
}

TEST_F(EngineTest, PeerExecutesTheLeadersPlan) {
  auto leader = make_engine<ColocatedEngine>(64, 32);
  auto peer = make_engine<ColocatedEngine>(64, 32);
  ASSERT_TRUE(leader->submit(request(1, 10, 3)).ok());
  while (leader->has_work()) {
    auto result = leader->step([&](const BatchPlan& plan) {
      const auto bytes = plan.serialize();
      auto received = BatchPlan::deserialize(bytes);
      if (!received.ok()) return received.status();
      return peer->execute_peer(*received);
    });
    ASSERT_TRUE(result.ok()) << result.status().to_string();
  }
}

}  // namespace
}  // namespace podserve
