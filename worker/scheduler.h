// Schedulers of one instance leader: which tokens of which sequences the next iteration
// computes, and the bookkeeping of every request the instance holds (its tokens, how many of
// them have K/V in the cache, its KV pages).
//
// SchedulerBase holds that bookkeeping and everything a scheduling policy shares: admission
// (add), abort, preemption by recompute, the continuous-batching step (every running decode
// first, then prefill chunks FCFS until the token budget is full; prompts may be split across
// iterations), applying sampled tokens (on_step_done: finish detection, freeing pages), load
// reports. The three policies (docs/design.md section 4):
//   ColocatedScheduler  Sarathi-Serve hybrid batches.
//   PrefillScheduler    prefill-only (disaggregated prefill instance): a request leaves after
//                       its first sampled token and its pages are RETAINED (they are the source
//                       of the KV shipment) until release_retained().
//   DecodeScheduler     decode-only (disaggregated decode instance): reserve() pages for a
//                       prompt another instance prefills, then activate_prefilled() (its K/V
//                       arrived) or activate_fallback() (the transfer failed: prefill prompt +
//                       first token locally), or release_reservation().
//
// A sequence's life: waiting -> running (admitted, holds pages) -> finished (forgotten). On
// page exhaustion the newest running sequence is preempted: its pages are freed and it goes
// back to the FRONT of the waiting queue; its prompt plus the tokens generated so far become
// the prompt it recomputes, its generated count is kept. Token bookkeeping is updated by
// schedule() (the plan's tokens count as computed); sampled tokens arrive via on_step_done().
// A waiting sequence holds no pages, except on a decode instance: an activated request waits
// with the pages it reserved (and, when prefilled, their K/V) until it is admitted.
//
// Contract: single-threaded (the leader's iteration loop); no model, no I/O. Pure C++.
// Every page handed out is returned: by finish, abort, preemption, release_retained() or
// release_reservation(); block_manager().used_pages() is zero once nothing is held.
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
  std::vector<TokenId> eos_token_ids = {2};  // every id that ends a sequence (kStop)

  Status validate() const;
};

// One request held by an instance.
struct Sequence {
  GenerationRequest request;
  std::vector<TokenId> tokens;      // prompt followed by the generated tokens
  std::int32_t num_generated = 0;   // tokens generated so far (kept across preemption)
  std::int32_t num_computed = 0;    // tokens [0, num_computed) have K/V in the cache
  std::int32_t prefill_target = 0;  // prefilling while num_computed < prefill_target
  std::uint64_t arrival = 0;        // admission order: FCFS key; preemption picks the largest
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

  // Queues a request (FCFS). Errors: duplicate id (also an id whose pages are still held),
  // empty prompt, prompt of max_model_len tokens or more, max_tokens < 1.
  Status add(GenerationRequest request);
  // Forgets a waiting or running request and frees its pages. Returns its final output
  // (kNoToken, finished, kAbort), or nothing when the id is unknown (already finished).
  virtual std::optional<TokenOutput> abort(RequestId id);
  // The next iteration's work. Empty when there is nothing to do.
  virtual BatchPlan schedule() = 0;
  // Applies the tokens sampled for `plan` (one per sequence with sample == true, in plan
  // order). Sequences aborted since schedule() are skipped. Finished sequences release their
  // pages. kInvalidArgument when the counts disagree.
  Result<std::vector<TokenOutput>> on_step_done(const BatchPlan& plan,
                                                std::span<const TokenId> sampled_tokens);

  virtual InstanceLoad load() const;
  const SchedulerConfig& config() const { return config_; }
  const Sequence* find(RequestId id) const;
  const BlockManager& block_manager() const { return blocks_; }
  std::int32_t num_running() const { return static_cast<std::int32_t>(running_.size()); }
  std::int32_t num_waiting() const { return static_cast<std::int32_t>(waiting_.size()); }
  // True while some sequence is waiting or running (work for schedule()).
  bool has_unfinished() const { return !sequences_.empty(); }
  std::int64_t num_preemptions() const { return num_preemptions_; }
  // Why a request ends when `token` becomes its `num_generated`-th generated token and its
  // sequence `num_tokens` long; nothing while it goes on.
  std::optional<FinishReason> finish_reason(const GenerationRequest& request, TokenId token,
                                            std::int32_t num_generated,
                                            std::int64_t num_tokens) const;

 protected:
  // The continuous-batching step every policy uses: every running decode (oldest first), then
  // the chunks of running prefills, then waiting sequences admitted FCFS while the running set,
  // the budget and the pages allow. Decodes come first in the plan. Which work exists depends
  // on the policy's sequences (a prefill instance never holds a decode).
  BatchPlan schedule_continuous_batching();
  // Called by on_step_done() after `token` was appended to `seq` and `out` filled in. The
  // default forgets finished sequences and frees their pages.
  virtual void on_token(Sequence& seq, const TokenOutput& out);
  // Grows `seq`'s pages to cover `num_tokens` positions, preempting the newest running
  // sequences (and removing their work from `plan`, refunding `budget`) until it fits.
  // False when `seq` itself had to be preempted.
  bool reserve_or_preempt(Sequence& seq, std::int64_t num_tokens, BatchPlan& plan,
                          std::int32_t& budget);
  // Moves the newest running sequence back to the front of the waiting queue for recompute.
  void preempt_newest(BatchPlan& plan, std::int32_t& budget);
  // Frees the pages of the newest waiting sequence that holds some other than the queue head
  // (its K/V will be recomputed). False when no such sequence exists.
  bool evict_newest_waiting_pages();
  // Appends the work of `num_new_tokens` tokens of `seq` (pages already reserved) and marks
  // them computed.
  void append_work(Sequence& seq, std::int32_t num_new_tokens, BatchPlan& plan);
  void insert_running(RequestId id);
  // Forgets a sequence and frees its pages.
  void release_sequence(RequestId id);
  // Positions of prefill `seq` still has to compute plus the tokens it may still generate.
  static std::int64_t outstanding_tokens(const Sequence& seq);

  SchedulerConfig config_;
  BlockManager blocks_;
  std::unordered_map<RequestId, Sequence> sequences_;
  std::deque<RequestId> waiting_;   // front is served first
  std::vector<RequestId> running_;  // sorted by arrival: back() is the newest
  std::uint64_t next_arrival_ = 0;
  std::uint64_t next_iteration_ = 0;
  std::int64_t num_preemptions_ = 0;
};

// Sarathi-Serve: decodes first, then chunked prefills FCFS under the token budget.
class ColocatedScheduler final : public SchedulerBase {
 public:
  using SchedulerBase::SchedulerBase;
  BatchPlan schedule() override;
};

// A request whose prompt a prefill instance finished in one iteration.
struct PrefillCompletion {
  RequestId id = 0;
  TokenId first_token = TokenOutput::kNoToken;  // generated index 0
  bool request_finished = false;                // the first token ended the request
  std::vector<std::int32_t> pages;  // retained pages holding positions [0, prompt_tokens)
  std::int32_t prompt_tokens = 0;
};

// Prefill-only batches (chunked under the budget, FCFS). When a request's last prompt chunk
// runs, on_step_done() reports its first token (index 0; finished only when the request itself
// is: max_tokens == 1, EOS without ignore_eos, or max_model_len reached) and the request leaves
// the instance; its pages stay retained (counted as used, not reusable) until
// release_retained(), whether or not the request finished. load().outstanding_tokens counts
// only prompt tokens not yet prefilled.
class PrefillScheduler final : public SchedulerBase {
 public:
  using SchedulerBase::SchedulerBase;
  BatchPlan schedule() override;
  InstanceLoad load() const override;

  // The requests whose prefill completed since the last call, in plan order.
  std::vector<PrefillCompletion> take_completions();
  // Pages retained for `id` in position order; empty when none are.
  std::vector<std::int32_t> retained_pages(RequestId id) const;
  // Frees the retained pages of `id` (its KV shipment is final: done, failed or abandoned).
  // kNotFound when `id` retains none.
  Status release_retained(RequestId id);
  std::int32_t num_retained() const { return static_cast<std::int32_t>(retained_.size()); }

 protected:
  void on_token(Sequence& seq, const TokenOutput& out) override;

 private:
  std::unordered_map<RequestId, std::int32_t> retained_;  // id -> prompt tokens
  std::vector<PrefillCompletion> completions_;
};

// Decode-only continuous batching. A request arrives as a reservation: reserve() takes the
// pages for its prompt (a KV transfer writes into them, so they are never preempted, reused or
// freed until release_reservation() or an activation). activate_prefilled() turns it into a
// decode sequence (prompt K/V in the reserved pages, first token generated elsewhere);
// activate_fallback() into a sequence that first prefills prompt + first token locally (the
// only prefill a decode instance runs besides recompute after preemption). Activated sequences
// queue FCFS (waiting, holding their pages) until the running set has room.
//
// abort() of a reserved request only marks it cancelled (its abort output is returned once);
// the pages stay held until release_reservation() or an activation, which then frees them.
// load(): reservations count as waiting; their pages as used.
class DecodeScheduler final : public SchedulerBase {
 public:
  using SchedulerBase::SchedulerBase;
  BatchPlan schedule() override;
  std::optional<TokenOutput> abort(RequestId id) override;
  InstanceLoad load() const override;

  // Pages for positions [0, prompt_tokens) of `id`, in position order. kResourceExhausted
  // (nothing taken) when the free pages do not suffice; kInvalidArgument for a known id or a
  // prompt length outside [1, max_model_len).
  Result<std::vector<std::int32_t>> reserve(RequestId id, std::int32_t prompt_tokens);
  // The reserved pages now hold the prompt's K/V: `request` continues as a decode sequence
  // (tokens = prompt + first_token, one generated). When `first_token` already finished the
  // request, or the reservation was cancelled, the reservation is released instead.
  // kNotFound when `request.id` is not reserved; kInvalidArgument when its prompt length
  // differs from the reservation's (the reservation is kept).
  Status activate_prefilled(GenerationRequest request, TokenId first_token);
  // The transfer failed: like activate_prefilled(), but the sequence prefills prompt +
  // first_token locally into its reserved pages before decoding.
  Status activate_fallback(GenerationRequest request, TokenId first_token);
  // Frees a reservation (abandoned, cancelled, or the first token finished the request).
  // kNotFound when `id` is not reserved.
  Status release_reservation(RequestId id);
  bool is_reserved(RequestId id) const { return reservations_.contains(id); }
  // Reserved and cancelled: waiting for its release.
  bool is_reservation_cancelled(RequestId id) const;
  std::int32_t num_reserved() const { return static_cast<std::int32_t>(reservations_.size()); }

 private:
  struct Reservation {
    std::int32_t prompt_tokens = 0;
    bool cancelled = false;
  };
  Status activate(GenerationRequest request, TokenId first_token, bool prefilled);

  std::unordered_map<RequestId, Reservation> reservations_;
};

}  // namespace podserve
