// Schedulers of one instance leader: which tokens of which sequences the next iteration
// computes, and the bookkeeping of every request the instance holds (its tokens, how many of
// them have K/V in the cache, its KV pages).
//
// SchedulerBase holds that bookkeeping and everything a scheduling policy shares: admission
// (add), abort, preemption by recompute, applying sampled tokens (on_step_done: finish
// detection, freeing pages), load reports. A policy implements schedule(). ColocatedScheduler
// is Sarathi-Serve: every running decode first, then prefill chunks FCFS until the token
// budget is full; prompts may be split across iterations (chunked prefill).
//
// A sequence's life: waiting -> running (admitted, holds pages) -> finished (forgotten). On
// page exhaustion the newest running sequence is preempted: its pages are freed and it goes
// back to the FRONT of the waiting queue; its prompt plus the tokens generated so far become
// the prompt it recomputes, its generated count is kept. Token bookkeeping is updated by
// schedule() (the plan's tokens count as computed); sampled tokens arrive via on_step_done().
//
// Contract: single-threaded (the leader's iteration loop); no model, no I/O. Pure C++.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/batch_plan.h"
#include "core/request.h"
#include "core/status.h"
#include "worker/block_manager.h"

namespace podserve {

struct SchedulerConfig {
  std::int32_t token_budget = 512;  // new tokens per iteration (decodes + prefill chunks)
  std::int32_t max_running = 64;    // sequences in the running set; <= token_budget
  std::int32_t page_size = 16;      // tokens per KV page
  std::int32_t num_pages = 0;       // KV pages of the instance; one max_model_len sequence must fit
  std::int32_t max_model_len = 0;   // a sequence finishes (kLength) when it reaches this length
  TokenId eos_token_id = 2;

  Status validate() const;
};

// One request held by an instance.
struct Sequence {
  GenerationRequest request;
  std::vector<TokenId> tokens;        // prompt followed by the generated tokens
  std::int32_t num_generated = 0;     // tokens generated so far (kept across preemption)
  std::int32_t num_computed = 0;      // tokens [0, num_computed) have K/V in the cache
  std::int32_t prefill_target = 0;    // prefilling while num_computed < prefill_target
  std::uint64_t arrival = 0;          // admission order: FCFS key; preemption picks the largest
  std::int32_t num_preemptions = 0;

  bool in_prefill() const { return num_computed < prefill_target; }
  std::int32_t num_uncomputed() const {
    return static_cast<std::int32_t>(tokens.size()) - num_computed;
  }
};

class SchedulerBase {
 public:
  explicit SchedulerBase(const SchedulerConfig& config);
  virtual ~SchedulerBase() = default;
  SchedulerBase(SchedulerBase&&) = default;
  SchedulerBase& operator=(SchedulerBase&&) = default;

  // Queues a request (FCFS). Errors: duplicate id, empty prompt, prompt of max_model_len
  // tokens or more, max_tokens < 1.
  Status add(GenerationRequest request);
  // Forgets a waiting or running request and frees its pages. Returns its final output
  // (kNoToken, finished, kAbort), or nothing when the id is unknown (already finished).
  std::optional<TokenOutput> abort(RequestId id);
  // The next iteration's work. Empty when there is nothing to do.
  virtual BatchPlan schedule() = 0;
  // Applies the tokens sampled for `plan` (one per sequence with sample == true, in plan
  // order). Sequences aborted since schedule() are skipped. Finished sequences release their
  // pages. kInvalidArgument when the counts disagree.
  Result<std::vector<TokenOutput>> on_step_done(const BatchPlan& plan,
                                                std::span<const TokenId> sampled_tokens);

  InstanceLoad load() const;
  const SchedulerConfig& config() const { return config_; }
  const Sequence* find(RequestId id) const;
  const BlockManager& block_manager() const { return blocks_; }
  std::int32_t num_running() const { return static_cast<std::int32_t>(running_.size()); }
  std::int32_t num_waiting() const { return static_cast<std::int32_t>(waiting_.size()); }
  bool has_unfinished() const { return !sequences_.empty(); }
  std::int64_t num_preemptions() const { return num_preemptions_; }

 protected:
  // Grows `seq`'s pages to cover `num_tokens` positions, preempting the newest running
  // sequences (and removing their work from `plan`, refunding `budget`) until it fits.
  // False when `seq` itself had to be preempted.
  bool reserve_or_preempt(Sequence& seq, std::int64_t num_tokens, BatchPlan& plan,
                          std::int32_t& budget);
  // Moves the newest running sequence back to the front of the waiting queue for recompute.
  void preempt_newest(BatchPlan& plan, std::int32_t& budget);
  // Appends the work of `num_new_tokens` tokens of `seq` (pages already reserved) and marks
  // them computed.
  void append_work(Sequence& seq, std::int32_t num_new_tokens, BatchPlan& plan);
  void insert_running(RequestId id);

  SchedulerConfig config_;
  BlockManager blocks_;
  std::unordered_map<RequestId, Sequence> sequences_;
  std::deque<RequestId> waiting_;   // front is served first
  std::vector<RequestId> running_;  // sorted by arrival: back() is the newest
  std::uint64_t next_arrival_ = 0;
  std::uint64_t next_iteration_ = 0;
  std::int64_t num_preemptions_ = 0;

 private:
  void release_sequence(RequestId id);
};

// Sarathi-Serve: decodes first, then chunked prefills FCFS under the token budget.
class ColocatedScheduler final : public SchedulerBase {
 public:
  using SchedulerBase::SchedulerBase;
  BatchPlan schedule() override;
};

}  // namespace podserve
