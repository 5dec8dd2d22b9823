// PrefillScheduler and DecodeScheduler without a model: the P/D handshake (reserve, prefill,
// retain, activate or fall back, release) driven by a simulated cluster with random transfer
// outcomes and cancellations in every state; pages are counted on both sides after every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>

#include "scheduler_fixtures.h"
#include "worker/scheduler.h"

namespace podserve {
namespace {

using testing_support::kEos;
using testing_support::make_request;
using testing_support::scheduler_config;

std::vector<std::int32_t> table_of(const SchedulerBase& s, RequestId id) {
  const auto pages = s.block_manager().page_table(id);
  return {pages.begin(), pages.end()};
}

TEST(PrefillScheduler, PrefillOnlyChunksThenRetainsPagesUntilReleased) {
  PrefillScheduler p(scheduler_config(8, 4, 4, 32, 64));
  ASSERT_TRUE(p.add(make_request(1, 10, 5)).ok());
  ASSERT_TRUE(p.add(make_request(2, 3, 1)).ok());
  EXPECT_EQ(p.load().outstanding_tokens, 13);  // prompt tokens only

  BatchPlan first = p.schedule();  // [1: 8 of 10]
  ASSERT_EQ(first.sequences.size(), 1u);
  EXPECT_EQ(first.num_decode_tokens(), 0);
  EXPECT_FALSE(first.sequences[0].sample);
  ASSERT_TRUE(p.on_step_done(first, {}).ok());
  EXPECT_TRUE(p.take_completions().empty());

  BatchPlan second = p.schedule();  // [1: last 2] [2: 3]
  ASSERT_EQ(second.sequences.size(), 2u);
  EXPECT_EQ(second.num_decode_tokens(), 0);
  const std::vector<TokenId> sampled{40, 41};
  auto outputs = p.on_step_done(second, sampled);
  ASSERT_TRUE(outputs.ok());
  ASSERT_EQ(outputs->size(), 2u);
  EXPECT_EQ((*outputs)[0].index, 0);
  EXPECT_FALSE((*outputs)[0].finished);  // request 1 goes on (on the decode instance)
  EXPECT_TRUE((*outputs)[1].finished);   // max_tokens == 1
  EXPECT_EQ((*outputs)[1].reason, FinishReason::kLength);

  const std::vector<PrefillCompletion> done = p.take_completions();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].id, 1u);
  EXPECT_EQ(done[0].first_token, 40);
  EXPECT_FALSE(done[0].request_finished);
  EXPECT_EQ(done[0].prompt_tokens, 10);
  EXPECT_EQ(done[0].pages.size(), 3u);
  EXPECT_TRUE(done[1].request_finished);
  EXPECT_EQ(done[0].pages, p.retained_pages(1));
  EXPECT_EQ(done[1].pages, p.retained_pages(2));

  // Both left the instance; their pages are still used.
  EXPECT_FALSE(p.has_unfinished());
  EXPECT_EQ(p.num_running(), 0);
  EXPECT_EQ(p.block_manager().used_pages(), 4);
  EXPECT_TRUE(p.schedule().empty());
  EXPECT_FALSE(p.abort(1).has_value());  // done: cancel keeps the retained pages
  EXPECT_EQ(p.block_manager().used_pages(), 4);
  EXPECT_FALSE(p.add(make_request(1, 4, 4)).ok());  // id still holds pages

  EXPECT_TRUE(p.release_retained(1).ok());
  EXPECT_EQ(p.release_retained(1).code(), StatusCode::kNotFound);
  EXPECT_TRUE(p.release_retained(2).ok());
  EXPECT_EQ(p.block_manager().used_pages(), 0);
  EXPECT_EQ(p.num_retained(), 0);
}

TEST(PrefillScheduler, EosFinishesTheRequestUnlessIgnored) {
  PrefillScheduler p(scheduler_config(16, 4, 4, 16, 64));
  ASSERT_TRUE(p.add(make_request(1, 3, 8, /*ignore_eos=*/false)).ok());
  ASSERT_TRUE(p.add(make_request(2, 3, 8, /*ignore_eos=*/true)).ok());
  const std::vector<TokenId> eos_twice{kEos, kEos};
  auto outputs = p.on_step_done(p.schedule(), eos_twice);
  ASSERT_TRUE(outputs.ok());
  EXPECT_TRUE((*outputs)[0].finished);
  EXPECT_EQ((*outputs)[0].reason, FinishReason::kStop);
  EXPECT_FALSE((*outputs)[1].finished);
  EXPECT_EQ(p.num_retained(), 2);
}

TEST(PrefillScheduler, AbortMidPrefillFreesAtOnce) {
  PrefillScheduler p(scheduler_config(4, 4, 4, 16, 64));
  ASSERT_TRUE(p.add(make_request(1, 10, 4)).ok());
  ASSERT_TRUE(p.on_step_done(p.schedule(), {}).ok());
  EXPECT_GT(p.block_manager().used_pages(), 0);
  const auto out = p.abort(1);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->reason, FinishReason::kAbort);
  EXPECT_EQ(p.block_manager().used_pages(), 0);
  EXPECT_TRUE(p.retained_pages(1).empty());
}

TEST(DecodeScheduler, ReserveIsAllOrNothing) {
  DecodeScheduler d(scheduler_config(16, 4, 4, 8, 32));
  auto pages = d.reserve(1, 9);
  ASSERT_TRUE(pages.ok());
  EXPECT_EQ(pages->size(), 3u);
  EXPECT_TRUE(d.is_reserved(1));
  EXPECT_FALSE(d.reserve(1, 4).ok());   // duplicate
  EXPECT_FALSE(d.reserve(2, 0).ok());   // empty prompt
  EXPECT_FALSE(d.reserve(2, 32).ok());  // does not fit max_model_len
  EXPECT_EQ(d.reserve(2, 21).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(d.block_manager().used_pages(), 3);
  EXPECT_EQ(d.load().free_pages, 5);
  EXPECT_EQ(d.load().waiting, 1);
  EXPECT_FALSE(d.has_unfinished());
  EXPECT_TRUE(d.schedule().empty());  // a reservation is no work
  EXPECT_TRUE(d.release_reservation(1).ok());
  EXPECT_EQ(d.release_reservation(1).code(), StatusCode::kNotFound);
  EXPECT_EQ(d.block_manager().used_pages(), 0);
}

TEST(DecodeScheduler, PrefilledRequestDecodesFromItsReservedPages) {
  DecodeScheduler d(scheduler_config(16, 4, 4, 16, 64));
  const GenerationRequest r = make_request(1, 8, 3);
  auto reserved = d.reserve(1, 8);
  ASSERT_TRUE(reserved.ok());
  EXPECT_FALSE(d.activate_prefilled(make_request(1, 7, 3), 50).ok());  // prompt length differs
  EXPECT_TRUE(d.is_reserved(1));
  ASSERT_TRUE(d.activate_prefilled(r, 50).ok());
  EXPECT_FALSE(d.is_reserved(1));

  BatchPlan plan = d.schedule();
  ASSERT_EQ(plan.sequences.size(), 1u);
  const SequenceWork& w = plan.sequences[0];
  EXPECT_FALSE(w.is_prefill);
  EXPECT_EQ(w.num_cached_tokens, 8);
  EXPECT_EQ(w.new_tokens, std::vector<TokenId>{50});
  EXPECT_TRUE(w.sample);
  ASSERT_EQ(w.page_table.size(), 3u);  // position 8 opens a third page
  EXPECT_TRUE(std::equal(reserved->begin(), reserved->end(), w.page_table.begin()));
  const std::vector<TokenId> sampled{60};
  auto outputs = d.on_step_done(plan, sampled);
  ASSERT_TRUE(outputs.ok());
  EXPECT_EQ((*outputs)[0].index, 1);
  EXPECT_FALSE((*outputs)[0].finished);
  outputs = d.on_step_done(d.schedule(), sampled);
  ASSERT_TRUE(outputs.ok());
  EXPECT_EQ((*outputs)[0].index, 2);
  EXPECT_TRUE((*outputs)[0].finished);
  EXPECT_EQ(d.block_manager().used_pages(), 0);
}

TEST(DecodeScheduler, FallbackPrefillsPromptAndFirstTokenInChunks) {
  DecodeScheduler d(scheduler_config(4, 4, 4, 16, 64));
  ASSERT_TRUE(d.reserve(1, 6).ok());
  ASSERT_TRUE(d.activate_fallback(make_request(1, 6, 4), 50).ok());
  BatchPlan first = d.schedule();
  ASSERT_EQ(first.sequences.size(), 1u);
  EXPECT_TRUE(first.sequences[0].is_prefill);
  EXPECT_EQ(first.sequences[0].num_new_tokens(), 4);
  ASSERT_TRUE(d.on_step_done(first, {}).ok());
  BatchPlan second = d.schedule();
  ASSERT_EQ(second.sequences.size(), 1u);
  EXPECT_EQ(second.sequences[0].num_cached_tokens, 4);
  EXPECT_EQ(second.sequences[0].new_tokens.back(), 50);  // the first token is prefilled too
  EXPECT_TRUE(second.sequences[0].sample);
  const std::vector<TokenId> sampled{60};
  auto outputs = d.on_step_done(second, sampled);
  ASSERT_TRUE(outputs.ok());
  EXPECT_EQ((*outputs)[0].index, 1);
  EXPECT_FALSE(d.schedule().sequences[0].is_prefill);
  EXPECT_TRUE(d.abort(1).has_value());
  EXPECT_EQ(d.block_manager().used_pages(), 0);
}

TEST(DecodeScheduler, CancelledReservationKeepsItsPagesUntilReleased) {
  DecodeScheduler d(scheduler_config(16, 4, 4, 16, 64));
  ASSERT_TRUE(d.reserve(1, 8).ok());
  ASSERT_TRUE(d.reserve(2, 8).ok());
  const auto out = d.abort(1);
  ASSERT_TRUE(out.has_value());
  EXPECT_TRUE(out->finished);
  EXPECT_EQ(out->reason, FinishReason::kAbort);
  EXPECT_FALSE(d.abort(1).has_value());  // reported once
  EXPECT_TRUE(d.is_reservation_cancelled(1));
  EXPECT_EQ(d.block_manager().used_pages(), 4);  // fenced: a transfer may still write
  // The transfer's final word: activation of a cancelled reservation only releases it.
  EXPECT_TRUE(d.activate_prefilled(make_request(1, 8, 4), 50).ok());
  EXPECT_EQ(d.find(1), nullptr);
  EXPECT_FALSE(d.is_reserved(1));
  ASSERT_TRUE(d.abort(2).has_value());
  EXPECT_TRUE(d.release_reservation(2).ok());
  EXPECT_EQ(d.block_manager().used_pages(), 0);
}

TEST(DecodeScheduler, FirstTokenThatFinishesTheRequestReleasesTheReservation) {
  DecodeScheduler d(scheduler_config(16, 4, 4, 16, 64));
  ASSERT_TRUE(d.reserve(1, 8).ok());
  ASSERT_TRUE(d.reserve(2, 8).ok());
  EXPECT_TRUE(d.activate_prefilled(make_request(1, 8, 1), 50).ok());  // max_tokens == 1
  EXPECT_TRUE(d.activate_fallback(make_request(2, 8, 9, /*ignore_eos=*/false), kEos).ok());
  EXPECT_FALSE(d.has_unfinished());
  EXPECT_EQ(d.block_manager().used_pages(), 0);
}

// The simulated cluster: one prefill and one decode scheduler, requests handed through the
// protocol with transfers that take a few steps and succeed or fail, cancels at random.
struct ClusterWorkload {
  std::int32_t token_budget, max_running, page_size, prefill_pages, decode_pages, max_model_len;
  std::uint32_t seed;
  double cancel_probability;
  double transfer_failure_probability;
};

class SimulatedCluster {
 public:
  enum class Stage { kPrefill, kTransfer, kDecode, kDone };
  struct Request {
    GenerationRequest request;
    Stage stage = Stage::kPrefill;
    bool cancelled = false;
    bool fallback = false;
    TokenId first_token = TokenOutput::kNoToken;
    std::vector<TokenId> tokens;  // prompt + generated, as the decode side must see them
    std::int32_t generated = 0;
    std::int32_t computed_on_decode = 0;
    std::int32_t decode_preemptions = 0;
    std::vector<std::int32_t> reserved_pages;
  };

  SimulatedCluster(const ClusterWorkload& w)
      : prefill_(scheduler_config(w.token_budget, w.max_running, w.page_size, w.prefill_pages,
                                  w.max_model_len)),
        decode_(scheduler_config(w.token_budget, w.max_running, w.page_size, w.decode_pages,
                                 w.max_model_len)),
        rng_(w.seed),
        workload_(w) {}

  void arrive(RequestId id) {
    const auto prompt_len = static_cast<std::int32_t>(1 + rng_() % (workload_.max_model_len - 1));
    const auto max_tokens = static_cast<std::int32_t>(1 + rng_() % 16);
    backlog_.push_back(make_request(id, prompt_len, max_tokens, rng_() % 4 != 0));
  }

  // Hands backlogged requests to the pair, FCFS, while the decode side can reserve their pages
  // (a refused reservation is retried next step, as a router would after a rejection).
  void admit_backlog() {
    while (!backlog_.empty()) {
      const GenerationRequest r = backlog_.front();
      const auto prompt_len = static_cast<std::int32_t>(r.prompt.size());
      auto pages = decode_.reserve(r.id, prompt_len);
      if (!pages.ok()) {
        EXPECT_EQ(pages.status().code(), StatusCode::kResourceExhausted);
        EXPECT_EQ(decode_.block_manager().page_table(r.id).size(), 0u);
        ++refused_reservations_;
        return;
      }
      backlog_.pop_front();
      admit(r, *pages);
    }
  }

  void admit(const GenerationRequest& r, const std::vector<std::int32_t>& pages) {
    const RequestId id = r.id;
    const auto prompt_len = static_cast<std::int32_t>(r.prompt.size());
    EXPECT_EQ(static_cast<std::int32_t>(pages.size()),
              decode_.block_manager().pages_for_tokens(prompt_len));
    ASSERT_TRUE(prefill_.add(r).ok());
    Request& req = requests_[id];
    req.request = r;
    req.tokens = r.prompt;
    req.reserved_pages = pages;
  }

  // The client went away: cancel on both instances.
  void cancel(RequestId id) {
    Request& req = requests_.at(id);
    if (req.cancelled || req.stage == Stage::kDone) return;
    req.cancelled = true;
    const auto prefill_out = prefill_.abort(id);
    EXPECT_EQ(prefill_out.has_value(), req.stage == Stage::kPrefill);
    const auto decode_out = decode_.abort(id);
    EXPECT_TRUE(decode_out.has_value()) << "decode side holds " << id;
    switch (req.stage) {
      case Stage::kPrefill:
        // P aborted before its first token: its final word releases D's reservation later.
        EXPECT_TRUE(decode_.is_reservation_cancelled(id));
        pending_releases_.push_back({id, static_cast<int>(rng_() % 3)});
        req.stage = Stage::kDone;
        break;
      case Stage::kTransfer:
        EXPECT_TRUE(decode_.is_reservation_cancelled(id));  // resolved when the transfer ends
        break;
      case Stage::kDecode:
        EXPECT_EQ(decode_.find(id), nullptr);
        req.stage = Stage::kDone;
        break;
      case Stage::kDone: break;
    }
  }

  void step_prefill() {
    BatchPlan plan = prefill_.schedule();
    EXPECT_LE(plan.total_new_tokens(), workload_.token_budget);
    EXPECT_EQ(plan.num_decode_tokens(), 0) << "a prefill instance decoded";
    std::vector<TokenId> sampled;
    for (const SequenceWork& w : plan.sequences) {
      EXPECT_TRUE(w.is_prefill);
      if (w.sample) sampled.push_back(static_cast<TokenId>(rng_() % 10));
    }
    auto outputs = prefill_.on_step_done(plan, sampled);
    ASSERT_TRUE(outputs.ok());
    for (const TokenOutput& out : *outputs) EXPECT_EQ(out.index, 0);
    const std::vector<PrefillCompletion> completions = prefill_.take_completions();
    EXPECT_EQ(completions.size(), outputs->size());
    for (const PrefillCompletion& c : completions) {
      Request& req = requests_.at(c.id);
      EXPECT_EQ(req.stage, Stage::kPrefill);
      EXPECT_EQ(c.prompt_tokens, static_cast<std::int32_t>(req.request.prompt.size()));
      EXPECT_EQ(c.pages, prefill_.retained_pages(c.id));
      EXPECT_EQ(static_cast<std::int32_t>(c.pages.size()),
                prefill_.block_manager().pages_for_tokens(c.prompt_tokens));
      req.first_token = c.first_token;
      req.tokens.push_back(c.first_token);
      req.generated = 1;
      if (c.request_finished) {
        // Nothing to ship: both sides release at once.
        EXPECT_TRUE(prefill_.release_retained(c.id).ok());
        EXPECT_TRUE(decode_.release_reservation(c.id).ok());
        req.stage = Stage::kDone;
        continue;
      }
      req.stage = Stage::kTransfer;
      req.fallback = std::uniform_real_distribution<double>(0, 1)(rng_) <
                     workload_.transfer_failure_probability;
      transfers_.push_back({c.id, static_cast<int>(rng_() % 4)});
    }
  }

  // Transfers and P-abort notices whose time has come.
  void progress_transfers() {
    for (auto& [id, delay] : transfers_) {
      if (delay-- > 0) continue;
      Request& req = requests_.at(id);
      EXPECT_EQ(decode_.block_manager().page_table(id).size(), req.reserved_pages.size());
      const Status activated = req.fallback
                                   ? decode_.activate_fallback(req.request, req.first_token)
                                   : decode_.activate_prefilled(req.request, req.first_token);
      EXPECT_TRUE(activated.ok()) << activated.to_string();
      EXPECT_TRUE(prefill_.release_retained(id).ok());
      EXPECT_FALSE(decode_.is_reserved(id));
      EXPECT_EQ(decode_.find(id) != nullptr, !req.cancelled);
      req.stage = req.cancelled ? Stage::kDone : Stage::kDecode;
      req.computed_on_decode =
          req.fallback ? 0 : static_cast<std::int32_t>(req.request.prompt.size());
    }
    std::erase_if(transfers_, [](const auto& t) { return t.second < 0; });
    for (auto& [id, delay] : pending_releases_) {
      if (delay-- > 0) continue;
      EXPECT_TRUE(decode_.release_reservation(id).ok());
    }
    std::erase_if(pending_releases_, [](const auto& t) { return t.second < 0; });
  }

  void step_decode() {
    BatchPlan plan = decode_.schedule();
    EXPECT_LE(plan.total_new_tokens(), workload_.token_budget);
    EXPECT_LE(decode_.num_running(), workload_.max_running);
    bool seen_prefill = false;
    for (const SequenceWork& w : plan.sequences) {
      Request& req = requests_.at(w.seq_id);
      EXPECT_EQ(req.stage, Stage::kDecode);
      EXPECT_FALSE(decode_.is_reserved(w.seq_id));
      const Sequence* seq = decode_.find(w.seq_id);
      ASSERT_NE(seq, nullptr);
      if (seq->num_preemptions != req.decode_preemptions) {
        req.decode_preemptions = seq->num_preemptions;
        req.computed_on_decode = 0;
      }
      if (w.is_prefill) {
        seen_prefill = true;
        EXPECT_TRUE(req.fallback || req.decode_preemptions > 0)
            << "decode instance prefilled " << w.seq_id
            << " that was neither a fallback nor preempted";
      } else {
        EXPECT_FALSE(seen_prefill) << "decode after a prefill chunk";
        EXPECT_EQ(w.num_new_tokens(), 1);
      }
      EXPECT_EQ(w.num_cached_tokens, req.computed_on_decode) << w.seq_id;
      for (std::int32_t i = 0; i < w.num_new_tokens(); ++i) {
        EXPECT_EQ(w.new_tokens[static_cast<std::size_t>(i)],
                  req.tokens[static_cast<std::size_t>(w.num_cached_tokens + i)]);
      }
      req.computed_on_decode += w.num_new_tokens();
      EXPECT_EQ(w.sample, static_cast<std::size_t>(req.computed_on_decode) == req.tokens.size());
    }
    std::vector<TokenId> sampled;
    for (const SequenceWork& w : plan.sequences)
      if (w.sample) sampled.push_back(static_cast<TokenId>(rng_() % 10));
    auto outputs = decode_.on_step_done(plan, sampled);
    ASSERT_TRUE(outputs.ok());
    for (const TokenOutput& out : *outputs) {
      Request& req = requests_.at(out.id);
      EXPECT_EQ(out.index, req.generated);
      EXPECT_GE(out.index, 1);
      req.tokens.push_back(out.token);
      ++req.generated;
      if (out.finished) req.stage = Stage::kDone;
    }
    // Decode preemption of the sequences just scheduled is seen next step; reserved pages never
    // change while reserved (they are a transfer's target).
    for (const auto& [id, req] : requests_) {
      if (decode_.is_reserved(id)) {
        EXPECT_EQ(table_of(decode_, id), req.reserved_pages) << id;
      }
    }
  }

  void check_pages() const {
    std::int32_t prefill_pages = 0, decode_pages = 0;
    for (const auto& [id, req] : requests_) {
      prefill_pages += static_cast<std::int32_t>(prefill_.block_manager().page_table(id).size());
      decode_pages += static_cast<std::int32_t>(decode_.block_manager().page_table(id).size());
      if (req.stage == Stage::kDone && !decode_.is_reserved(id)) {
        EXPECT_TRUE(decode_.block_manager().page_table(id).empty()) << id;
      }
    }
    EXPECT_EQ(prefill_pages, prefill_.block_manager().used_pages());
    EXPECT_EQ(decode_pages, decode_.block_manager().used_pages());
  }

  bool idle() const {
    return backlog_.empty() && !prefill_.has_unfinished() && !decode_.has_unfinished() &&
           transfers_.empty() && pending_releases_.empty();
  }

  PrefillScheduler prefill_;
  DecodeScheduler decode_;
  std::mt19937 rng_;
  ClusterWorkload workload_;
  std::map<RequestId, Request> requests_;
  std::vector<std::pair<RequestId, int>> transfers_;         // id, steps until it ends
  std::vector<std::pair<RequestId, int>> pending_releases_;  // id, steps until P's final word
  std::deque<GenerationRequest> backlog_;
  std::int64_t refused_reservations_ = 0;
};

class ClusterWorkloadTest : public ::testing::TestWithParam<ClusterWorkload> {};

TEST_P(ClusterWorkloadTest, EveryPageComesBackOnBothSides) {
  const ClusterWorkload& w = GetParam();
  SimulatedCluster cluster(w);
  std::mt19937& rng = cluster.rng_;
  RequestId next_id = 1;
  const RequestId num_requests = 150;
  std::int64_t decode_preemptions = 0;
  int iterations = 0;
  while ((next_id <= num_requests || !cluster.idle()) && iterations < 20000) {
    const int arrivals = static_cast<int>(rng() % 3);
    for (int a = 0; a < arrivals && next_id <= num_requests; ++a) cluster.arrive(next_id++);
    cluster.admit_backlog();
    if (next_id > 1 && std::uniform_real_distribution<double>(0, 1)(rng) < w.cancel_probability) {
      const RequestId id = 1 + rng() % (next_id - 1);
      if (cluster.requests_.contains(id)) cluster.cancel(id);
    }
    cluster.step_prefill();
    cluster.progress_transfers();
    cluster.step_decode();
    cluster.check_pages();
    ++iterations;
  }
  decode_preemptions = cluster.decode_.num_preemptions();
  EXPECT_TRUE(cluster.idle()) << "starved after " << iterations << " iterations";
  EXPECT_EQ(cluster.prefill_.block_manager().used_pages(), 0);
  EXPECT_EQ(cluster.decode_.block_manager().used_pages(), 0);
  EXPECT_EQ(cluster.prefill_.num_retained(), 0);
  EXPECT_EQ(cluster.decode_.num_reserved(), 0);
  std::set<SimulatedCluster::Stage> stages;
  int cancelled = 0, fallbacks = 0;
  for (const auto& [id, req] : cluster.requests_) {
    EXPECT_EQ(req.stage, SimulatedCluster::Stage::kDone) << id;
    cancelled += req.cancelled;
    fallbacks += req.fallback && !req.cancelled;
  }
  EXPECT_EQ(cluster.requests_.size(), num_requests);
  if (w.cancel_probability > 0) {
    EXPECT_GT(cancelled, 0);
  }
  if (w.transfer_failure_probability > 0) {
    EXPECT_GT(fallbacks, 0);
  }
  if (w.decode_pages * w.page_size < 3 * w.max_model_len) {
    EXPECT_GT(decode_preemptions, 0) << "the small decode pool was meant to force preemption";
    EXPECT_GT(cluster.refused_reservations_, 0) << "the small decode pool was meant to refuse";
  }
}

INSTANTIATE_TEST_SUITE_P(Workloads, ClusterWorkloadTest,
                         ::testing::Values(ClusterWorkload{64, 8, 16, 64, 64, 96, 21, 0.0, 0.0},
                                           ClusterWorkload{32, 16, 4, 200, 200, 64, 22, 0.1, 0.2},
                                           ClusterWorkload{16, 4, 1, 60, 60, 40, 23, 0.05, 0.5},
                                           ClusterWorkload{32, 16, 4, 40, 24, 48, 24, 0.1,
                                                           0.2},  // small pools
                                           ClusterWorkload{8, 8, 2, 30, 32, 48, 25, 0.2, 0.3}),
                         [](const auto& info) {
                           const ClusterWorkload& w = info.param;
                           return "budget" + std::to_string(w.token_budget) + "_page" +
                                  std::to_string(w.page_size) + "_pages" +
                                  std::to_string(w.prefill_pages) + "x" +
                                  std::to_string(w.decode_pages) + "_seed" + std::to_string(w.seed);
                         });

}  // namespace
}  // namespace podserve
