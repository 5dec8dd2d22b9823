// ColocatedScheduler without a model: random workloads with random aborts, checked against a
// shadow record of every request after every iteration.
#include "worker/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "scheduler_fixtures.h"

namespace podserve {
namespace {

using testing_support::kEos;
using testing_support::make_request;
using testing_support::scheduler_config;

// What the test knows about one request, independently of the scheduler.
struct Shadow {
  std::vector<TokenId> tokens;  // prompt + every token handed back
  std::int32_t computed = 0;    // tokens whose K/V the plans have covered since the last preemption
  std::int32_t generated = 0;
  std::int32_t preemptions = 0;
  std::int32_t max_tokens = 0;
  bool ignore_eos = true;
  bool finished = false;
  FinishReason reason = FinishReason::kLength;
  std::uint64_t arrival = 0;
  bool ever_admitted = false;
};

class Harness {
 public:
  Harness(const SchedulerConfig& config, std::uint32_t seed) : scheduler_(config), rng_(seed) {
    EXPECT_TRUE(config.validate().ok()) << config.validate().to_string();
  }

  void add(const GenerationRequest& r) {
    ASSERT_TRUE(scheduler_.add(r).ok());
    Shadow s;
    s.tokens = r.prompt;
    s.max_tokens = r.sampling.max_tokens;
    s.ignore_eos = r.sampling.ignore_eos;
    s.arrival = next_arrival_++;
    shadows_[r.id] = s;
  }

  void abort(RequestId id) {
    const auto out = scheduler_.abort(id);
    Shadow& s = shadows_.at(id);
    if (s.finished) {
      EXPECT_FALSE(out.has_value());
      return;
    }
    ASSERT_TRUE(out.has_value());
    EXPECT_TRUE(out->finished);
    EXPECT_EQ(out->reason, FinishReason::kAbort);
    EXPECT_EQ(out->token, TokenOutput::kNoToken);
    EXPECT_EQ(out->index, s.generated);
    s.finished = true;
    s.reason = FinishReason::kAbort;
  }

  // One iteration: schedule, check the plan, sample tokens, apply them, check the outputs.
  BatchPlan step(TokenId max_sampled_token) {
    const SchedulerConfig& cfg = scheduler_.config();
    std::vector<RequestId> running_decodes;
    std::set<RequestId> running_before;
    for (const auto& [id, s] : shadows_) {
      const Sequence* seq = scheduler_.find(id);
      if (s.finished || seq == nullptr) continue;
      if (!scheduler_.block_manager().page_table(id).empty()) running_before.insert(id);
      if (!seq->in_prefill() && !scheduler_.block_manager().page_table(id).empty())
        running_decodes.push_back(id);
    }

    BatchPlan plan = scheduler_.schedule();
    EXPECT_LE(plan.total_new_tokens(), cfg.token_budget);
    EXPECT_LE(scheduler_.num_running(), cfg.max_running);

    // Preemptions of this iteration: victims must be newer than every survivor.
    std::vector<RequestId> victims;
    for (auto& [id, s] : shadows_) {
      const Sequence* seq = scheduler_.find(id);
      if (seq == nullptr || seq->num_preemptions == s.preemptions) continue;
      EXPECT_EQ(seq->num_preemptions, s.preemptions + 1);
      s.preemptions = seq->num_preemptions;
      s.computed = 0;
      victims.push_back(id);
      ++preemptions_seen_;
    }
    for (RequestId victim : victims) {
      for (RequestId survivor : running_before) {
        if (std::find(victims.begin(), victims.end(), survivor) != victims.end()) continue;
        EXPECT_LT(shadows_.at(survivor).arrival, shadows_.at(victim).arrival)
            << "preempted " << victim << " while newer " << survivor << " kept running";
      }
    }

    // Decodes first; every running decode that was not preempted is in the plan.
    bool seen_prefill = false;
    std::set<std::int32_t> pages_in_plan;
    std::set<RequestId> in_plan;
    for (const SequenceWork& w : plan.sequences) {
      EXPECT_TRUE(in_plan.insert(w.seq_id).second) << "sequence twice in one plan";
      Shadow& s = shadows_.at(w.seq_id);
      EXPECT_FALSE(s.finished);
      if (w.is_prefill) {
        seen_prefill = true;
      } else {
        EXPECT_FALSE(seen_prefill) << "decode after a prefill chunk";
        EXPECT_EQ(w.num_new_tokens(), 1);
      }
      EXPECT_GE(w.num_new_tokens(), 1);
      // Chunks cover the tokens exactly once (since the last preemption), in order.
      EXPECT_EQ(w.num_cached_tokens, s.computed) << "seq " << w.seq_id;
      EXPECT_LE(static_cast<std::size_t>(w.context_length()), s.tokens.size());
      if (static_cast<std::size_t>(w.context_length()) > s.tokens.size()) continue;
      for (std::int32_t i = 0; i < w.num_new_tokens(); ++i)
        EXPECT_EQ(w.new_tokens[i], s.tokens[w.num_cached_tokens + i]);
      s.computed += w.num_new_tokens();
      EXPECT_EQ(w.sample, static_cast<std::size_t>(s.computed) == s.tokens.size());
      EXPECT_EQ(static_cast<std::int32_t>(w.page_table.size()),
                scheduler_.block_manager().pages_for_tokens(w.context_length()));
      for (auto page : w.page_table)
        EXPECT_TRUE(pages_in_plan.insert(page).second) << "page shared";
      if (!s.ever_admitted) {
        EXPECT_GT(static_cast<std::int64_t>(s.arrival), last_first_admission_) << "not FCFS";
        last_first_admission_ = static_cast<std::int64_t>(s.arrival);
        s.ever_admitted = true;
      }
    }
    for (RequestId id : running_decodes) {
      const bool preempted = std::find(victims.begin(), victims.end(), id) != victims.end();
      EXPECT_TRUE(preempted || in_plan.contains(id)) << "running decode " << id << " skipped";
    }
    check_page_accounting();

    std::vector<TokenId> sampled;
    for (const SequenceWork& w : plan.sequences)
      if (w.sample) sampled.push_back(static_cast<TokenId>(rng_() % (max_sampled_token + 1)));
    auto outputs = scheduler_.on_step_done(plan, sampled);
    EXPECT_TRUE(outputs.ok());
    std::size_t next = 0;
    for (const SequenceWork& w : plan.sequences) {
      if (!w.sample) continue;
      Shadow& s = shadows_.at(w.seq_id);
      const TokenOutput& out = (*outputs)[next];
      EXPECT_EQ(out.id, w.seq_id);
      EXPECT_EQ(out.token, sampled[next]);
      EXPECT_EQ(out.index, s.generated);
      ++next;
      s.tokens.push_back(out.token);
      ++s.generated;
      const bool eos = out.token == kEos && !s.ignore_eos;
      const bool length = s.generated == s.max_tokens ||
                          static_cast<std::int32_t>(s.tokens.size()) >= cfg.max_model_len;
      EXPECT_EQ(out.finished, eos || length);
      if (out.finished) {
        EXPECT_EQ(out.reason, eos ? FinishReason::kStop : FinishReason::kLength);
        s.finished = true;
        s.reason = out.reason;
        EXPECT_EQ(scheduler_.find(w.seq_id), nullptr);
      }
    }
    EXPECT_EQ(next, outputs->size());
    check_page_accounting();
    return plan;
  }

  void check_page_accounting() {
    std::int32_t pages = 0;
    for (const auto& [id, s] : shadows_) {
      const auto table = scheduler_.block_manager().page_table(id);
      if (s.finished) {
        EXPECT_TRUE(table.empty()) << "finished " << id << " still holds pages";
      }
      pages += static_cast<std::int32_t>(table.size());
    }
    EXPECT_EQ(pages, scheduler_.block_manager().used_pages());
    const InstanceLoad load = scheduler_.load();
    EXPECT_EQ(load.free_pages + pages, load.total_pages);
  }

  std::int32_t run_to_completion(int max_iterations) {
    int iterations = 0;
    while (scheduler_.has_unfinished() && iterations < max_iterations) {
      step(9);
      ++iterations;
    }
    return iterations;
  }

  ColocatedScheduler& scheduler() { return scheduler_; }
  std::map<RequestId, Shadow>& shadows() { return shadows_; }
  std::int64_t preemptions_seen() const { return preemptions_seen_; }
  std::mt19937& rng() { return rng_; }

 private:
  ColocatedScheduler scheduler_;
  std::mt19937 rng_;
  std::map<RequestId, Shadow> shadows_;
  std::uint64_t next_arrival_ = 0;
  std::int64_t last_first_admission_ = -1;
  std::int64_t preemptions_seen_ = 0;
};

TEST(SchedulerConfig, RejectsPoolsThatCannotHoldOneSequence) {
  EXPECT_TRUE(scheduler_config(64, 8, 16, 4, 64).validate().ok());
  EXPECT_FALSE(scheduler_config(64, 8, 16, 3, 64).validate().ok());
  EXPECT_FALSE(scheduler_config(4, 8, 16, 64, 64).validate().ok());  // max_running > budget
}

TEST(ColocatedScheduler, RejectsBadRequests) {
  ColocatedScheduler s(scheduler_config(64, 8, 16, 16, 32));
  EXPECT_FALSE(s.add(make_request(1, 0, 4)).ok());
  EXPECT_FALSE(s.add(make_request(1, 32, 4)).ok());
  EXPECT_FALSE(s.add(make_request(1, 4, 0)).ok());
  EXPECT_TRUE(s.add(make_request(1, 4, 4)).ok());
  EXPECT_FALSE(s.add(make_request(1, 4, 4)).ok());
}

TEST(ColocatedScheduler, DecodesFirstThenChunkedPrefillUnderBudget) {
  Harness h(scheduler_config(16, 4, 4, 64, 128), 1);
  h.add(make_request(1, 10, 3));
  h.add(make_request(2, 30, 3));
  BatchPlan p0 = h.step(9);  // [1: 10 prefill] [2: 6 of 30]
  ASSERT_EQ(p0.sequences.size(), 2u);
  EXPECT_EQ(p0.sequences[0].num_new_tokens(), 10);
  EXPECT_TRUE(p0.sequences[0].sample);
  EXPECT_EQ(p0.sequences[1].num_new_tokens(), 6);
  EXPECT_FALSE(p0.sequences[1].sample);
  BatchPlan p1 = h.step(9);  // [1: decode] [2: 15 more]
  ASSERT_EQ(p1.sequences.size(), 2u);
  EXPECT_FALSE(p1.sequences[0].is_prefill);
  EXPECT_EQ(p1.sequences[0].seq_id, 1u);
  EXPECT_EQ(p1.sequences[1].num_cached_tokens, 6);
  EXPECT_EQ(p1.sequences[1].num_new_tokens(), 15);
  h.run_to_completion(100);
  EXPECT_EQ(h.scheduler().block_manager().used_pages(), 0);
  for (const auto& [id, s] : h.shadows()) EXPECT_EQ(s.generated, 3) << id;
}

TEST(ColocatedScheduler, MaxRunningCapsTheRunningSet) {
  Harness h(scheduler_config(64, 2, 16, 64, 128), 2);
  for (RequestId id = 1; id <= 5; ++id) h.add(make_request(id, 4, 5));
  BatchPlan p = h.step(9);
  EXPECT_EQ(p.sequences.size(), 2u);
  EXPECT_EQ(h.scheduler().num_running(), 2);
  EXPECT_EQ(h.scheduler().num_waiting(), 3);
  h.run_to_completion(100);
  EXPECT_FALSE(h.scheduler().has_unfinished());
}

TEST(ColocatedScheduler, PreemptsTheNewestAndRequeuesItFirst) {
  // 4 pages of 4 tokens; two sequences of 7 prompt tokens each take 2 pages, and the first
  // decode past position 8 needs a third page that only preempting the newer one frees.
  Harness h(scheduler_config(32, 4, 4, 4, 16), 3);
  h.add(make_request(1, 7, 6));
  h.add(make_request(2, 7, 6));
  h.add(make_request(3, 3, 2));
  h.step(9);
  EXPECT_EQ(h.scheduler().num_running(), 2);
  h.step(9);  // both decode at position 7 (fits page 2)
  h.step(9);  // seq 1 needs page 3 -> seq 2 (newest) is preempted
  EXPECT_EQ(h.scheduler().find(2)->num_preemptions, 1);
  EXPECT_EQ(h.scheduler().find(1)->num_preemptions, 0);
  // Recompute prompt = original prompt + generated tokens; generated count kept.
  EXPECT_EQ(h.scheduler().find(2)->prefill_target, 9);
  EXPECT_EQ(h.scheduler().find(2)->num_generated, 2);
  h.run_to_completion(200);
  EXPECT_FALSE(h.scheduler().has_unfinished());
  EXPECT_EQ(h.scheduler().block_manager().used_pages(), 0);
  for (const auto& [id, s] : h.shadows()) {
    EXPECT_EQ(s.generated, s.max_tokens) << id;
    EXPECT_EQ(s.reason, FinishReason::kLength);
  }
}

TEST(ColocatedScheduler, AbortFreesWaitingAndRunning) {
  Harness h(scheduler_config(8, 4, 4, 16, 64), 4);
  h.add(make_request(1, 20, 4));
  h.add(make_request(2, 20, 4));
  h.step(9);  // seq 1 partially prefilled, seq 2 waiting
  EXPECT_GT(h.scheduler().block_manager().used_pages(), 0);
  h.abort(1);
  h.abort(2);
  h.abort(2);  // unknown now: nothing
  EXPECT_EQ(h.scheduler().block_manager().used_pages(), 0);
  EXPECT_FALSE(h.scheduler().has_unfinished());
  EXPECT_TRUE(h.scheduler().schedule().empty());
}

TEST(ColocatedScheduler, EosStopsUnlessIgnored) {
  ColocatedScheduler s(scheduler_config(16, 4, 4, 16, 64));
  ASSERT_TRUE(s.add(make_request(1, 3, 8, /*ignore_eos=*/false)).ok());
  ASSERT_TRUE(s.add(make_request(2, 3, 8, /*ignore_eos=*/true)).ok());
  BatchPlan plan = s.schedule();
  const std::vector<TokenId> eos_twice{kEos, kEos};
  auto out = s.on_step_done(plan, eos_twice);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 2u);
  EXPECT_TRUE((*out)[0].finished);
  EXPECT_EQ((*out)[0].reason, FinishReason::kStop);
  EXPECT_FALSE((*out)[1].finished);
  EXPECT_FALSE(s.on_step_done(s.schedule(), {}).ok());  // one sampled token expected
}

TEST(ColocatedScheduler, MaxModelLenFinishesWithLength) {
  Harness h(scheduler_config(16, 4, 4, 16, 12), 5);
  h.add(make_request(1, 8, 100));
  h.run_to_completion(50);
  const Shadow& s = h.shadows().at(1);
  EXPECT_TRUE(s.finished);
  EXPECT_EQ(s.reason, FinishReason::kLength);
  EXPECT_EQ(s.tokens.size(), 12u);
}

struct RandomWorkload {
  std::int32_t token_budget, max_running, page_size, num_pages, max_model_len;
  std::uint32_t seed;
  double abort_probability;
};

class RandomWorkloadTest : public ::testing::TestWithParam<RandomWorkload> {};

TEST_P(RandomWorkloadTest, InvariantsHoldAndEveryRequestFinishes) {
  const RandomWorkload& w = GetParam();
  Harness h(
      scheduler_config(w.token_budget, w.max_running, w.page_size, w.num_pages, w.max_model_len),
      w.seed);
  std::mt19937& rng = h.rng();
  RequestId next_id = 1;
  const RequestId num_requests = 120;
  int iterations = 0;
  while ((next_id <= num_requests || h.scheduler().has_unfinished()) && iterations < 20000) {
    const int arrivals = static_cast<int>(rng() % 3);
    for (int a = 0; a < arrivals && next_id <= num_requests; ++a) {
      const auto prompt_len = static_cast<std::int32_t>(1 + rng() % (w.max_model_len - 1));
      const auto max_tokens = static_cast<std::int32_t>(1 + rng() % 24);
      h.add(make_request(next_id++, prompt_len, max_tokens, rng() % 4 != 0));
    }
    if (next_id > 1 && std::uniform_real_distribution<double>(0, 1)(rng) < w.abort_probability)
      h.abort(1 + rng() % (next_id - 1));
    h.step(9);
    ++iterations;
  }
  EXPECT_FALSE(h.scheduler().has_unfinished()) << "starved after " << iterations << " iterations";
  EXPECT_EQ(h.scheduler().block_manager().used_pages(), 0);
  for (const auto& [id, s] : h.shadows()) {
    EXPECT_TRUE(s.finished) << id;
    if (s.reason == FinishReason::kLength && s.generated < s.max_tokens) {
      EXPECT_EQ(static_cast<std::int32_t>(s.tokens.size()), w.max_model_len);
    }
  }
  if (w.num_pages * w.page_size < 2 * w.max_model_len) {
    EXPECT_GT(h.preemptions_seen(), 0) << "the tiny pool was meant to force preemption";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Workloads, RandomWorkloadTest,
    ::testing::Values(RandomWorkload{64, 8, 16, 64, 96, 11, 0.0},
                      RandomWorkload{32, 16, 4, 200, 64, 12, 0.05},
                      RandomWorkload{16, 4, 1, 40, 40, 13, 0.02},
                      RandomWorkload{128, 32, 8, 12, 80, 14, 0.0},  // tiny pool: preemption
                      RandomWorkload{24, 8, 4, 17, 64, 15, 0.03},   // tiny pool and aborts
                      RandomWorkload{8, 8, 2, 24, 48, 16, 0.1}),
    [](const auto& info) {
      const RandomWorkload& w = info.param;
      return "budget" + std::to_string(w.token_budget) + "_running" +
             std::to_string(w.max_running) + "_page" + std::to_string(w.page_size) + "_pages" +
             std::to_string(w.num_pages) + "_seed" + std::to_string(w.seed);
    });

}  // namespace
}  // namespace podserve
