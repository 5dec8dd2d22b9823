#include "worker/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace podserve {

Status SchedulerConfig::validate() const {
  if (token_budget < 1) return invalid_argument("scheduler.token_budget must be >= 1");
  if (max_running < 1 || max_running > token_budget) {
    return invalid_argument(
        fmt::format("scheduler.max_running {} must be in [1, token_budget {}] so every decode fits",
                    max_running, token_budget));
  }
  if (page_size < 1) return invalid_argument("kv_cache.page_size must be >= 1");
  if (max_model_len < 2) return invalid_argument("max_model_len must be >= 2");
  const std::int64_t pages_per_max_sequence =
      (std::int64_t{max_model_len} + page_size - 1) / page_size;
  if (num_pages < pages_per_max_sequence) {
    return invalid_argument(fmt::format(
        "kv_cache: {} pages of {} tokens cannot hold one sequence of max_model_len {} ({} pages)",
        num_pages, page_size, max_model_len, pages_per_max_sequence));
  }
  return Status::Ok();
}

SchedulerBase::SchedulerBase(const SchedulerConfig& config)
    : config_(config), blocks_(config.num_pages, config.page_size) {}

Status SchedulerBase::add(GenerationRequest request) {
  if (sequences_.contains(request.id) || !blocks_.page_table(request.id).empty()) {
    return invalid_argument(fmt::format("request {} is already scheduled", request.id));
  }
  if (request.prompt.empty()) return invalid_argument("prompt must not be empty");
  if (static_cast<std::int64_t>(request.prompt.size()) >= config_.max_model_len) {
    return invalid_argument(fmt::format("prompt of {} tokens does not fit max_model_len {}",
                                        request.prompt.size(), config_.max_model_len));
  }
  if (request.sampling.max_tokens < 1) return invalid_argument("max_tokens must be >= 1");
  Sequence seq;
  seq.tokens = request.prompt;
  seq.prefill_target = static_cast<std::int32_t>(seq.tokens.size());
  seq.arrival = next_arrival_++;
  seq.request = std::move(request);
  const RequestId id = seq.request.id;
  sequences_.emplace(id, std::move(seq));
  waiting_.push_back(id);
  return Status::Ok();
}

std::optional<TokenOutput> SchedulerBase::abort(RequestId id) {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) return std::nullopt;
  TokenOutput out;
  out.id = id;
  out.index = it->second.num_generated;
  out.finished = true;
  out.reason = FinishReason::kAbort;
  release_sequence(id);
  return out;
}

void SchedulerBase::release_sequence(RequestId id) {
  std::erase(waiting_, id);
  std::erase(running_, id);
  // A waiting sequence holds no pages; release() reports that as kNotFound, which is expected.
  (void)blocks_.release(id);
  sequences_.erase(id);
}

Result<std::vector<TokenOutput>> SchedulerBase::on_step_done(
    const BatchPlan& plan, std::span<const TokenId> sampled_tokens) {
  const auto num_sampling = std::count_if(plan.sequences.begin(), plan.sequences.end(),
                                          [](const SequenceWork& w) { return w.sample; });
  if (static_cast<std::size_t>(num_sampling) != sampled_tokens.size()) {
    return invalid_argument(fmt::format("plan {} samples {} sequences, got {} tokens",
                                        plan.iteration, num_sampling, sampled_tokens.size()));
  }
  std::vector<TokenOutput> outputs;
  std::size_t next_sampled = 0;
  for (const SequenceWork& work : plan.sequences) {
    if (!work.sample) continue;
    const TokenId token = sampled_tokens[next_sampled++];
    const auto it = sequences_.find(work.seq_id);
    if (it == sequences_.end()) continue;
    Sequence& seq = it->second;
    seq.tokens.push_back(token);
    TokenOutput out;
    out.id = seq.request.id;
    out.token = token;
    out.index = seq.num_generated++;
    if (const auto reason = finish_reason(seq.request, token, seq.num_generated,
                                          static_cast<std::int64_t>(seq.tokens.size()))) {
      out.finished = true;
      out.reason = *reason;
    }
    outputs.push_back(out);
    on_token(seq, out);
  }
  return outputs;
}

std::optional<FinishReason> SchedulerBase::finish_reason(const GenerationRequest& request,
                                                         TokenId token, std::int32_t num_generated,
                                                         std::int64_t num_tokens) const {
  if (!request.sampling.ignore_eos &&
      std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(), token) !=
          config_.eos_token_ids.end())
    return FinishReason::kStop;
  if (num_generated >= request.sampling.max_tokens || num_tokens >= config_.max_model_len) {
    return FinishReason::kLength;
  }
  return std::nullopt;
}

void SchedulerBase::on_token(Sequence& seq, const TokenOutput& out) {
  if (out.finished) release_sequence(seq.request.id);
}

std::int64_t SchedulerBase::outstanding_tokens(const Sequence& seq) {
  const std::int64_t prefill = seq.in_prefill() ? seq.prefill_target - seq.num_computed : 0;
  return prefill + seq.request.sampling.max_tokens - seq.num_generated;
}

InstanceLoad SchedulerBase::load() const {
  InstanceLoad load;
  load.running = num_running();
  load.waiting = num_waiting();
  for (const auto& [id, seq] : sequences_) load.outstanding_tokens += outstanding_tokens(seq);
  load.free_pages = blocks_.free_pages();
  load.total_pages = blocks_.num_pages();
  return load;
}

const Sequence* SchedulerBase::find(RequestId id) const {
  const auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : &it->second;
}

bool SchedulerBase::reserve_or_preempt(Sequence& seq, std::int64_t num_tokens, BatchPlan& plan,
                                       std::int32_t& budget) {
  const RequestId id = seq.request.id;
  while (!blocks_.reserve(id, num_tokens).ok()) {
    const bool preempting_self = running_.back() == id;
    preempt_newest(plan, budget);
    if (preempting_self) return false;
  }
  return true;
}

void SchedulerBase::preempt_newest(BatchPlan& plan, std::int32_t& budget) {
  const RequestId victim_id = running_.back();
  running_.pop_back();
  Sequence& victim = sequences_.at(victim_id);
  const auto scheduled = std::find_if(plan.sequences.begin(), plan.sequences.end(),
                                      [&](const SequenceWork& w) { return w.seq_id == victim_id; });
  if (scheduled != plan.sequences.end()) {
    budget += scheduled->num_new_tokens();
    plan.sequences.erase(scheduled);
  }
  (void)blocks_.release(victim_id);
  victim.num_computed = 0;
  victim.prefill_target = static_cast<std::int32_t>(victim.tokens.size());
  ++victim.num_preemptions;
  ++num_preemptions_;
  waiting_.push_front(victim_id);
}

bool SchedulerBase::evict_newest_waiting_pages() {
  RequestId newest = 0;
  const Sequence* newest_seq = nullptr;
  for (std::size_t i = 1; i < waiting_.size(); ++i) {
    const Sequence& seq = sequences_.at(waiting_[i]);
    if (blocks_.page_table(waiting_[i]).empty()) continue;
    if (newest_seq == nullptr || seq.arrival > newest_seq->arrival) {
      newest = waiting_[i];
      newest_seq = &seq;
    }
  }
  if (newest_seq == nullptr) return false;
  Sequence& victim = sequences_.at(newest);
  (void)blocks_.release(newest);
  victim.num_computed = 0;
  victim.prefill_target = static_cast<std::int32_t>(victim.tokens.size());
  ++victim.num_preemptions;
  ++num_preemptions_;
  return true;
}

void SchedulerBase::append_work(Sequence& seq, std::int32_t num_new_tokens, BatchPlan& plan) {
  SequenceWork work;
  work.seq_id = seq.request.id;
  work.num_cached_tokens = seq.num_computed;
  const auto first = seq.tokens.begin() + seq.num_computed;
  work.new_tokens.assign(first, first + num_new_tokens);
  const auto pages = blocks_.page_table(work.seq_id);
  work.page_table.assign(pages.begin(), pages.end());
  work.is_prefill = seq.in_prefill();
  seq.num_computed += num_new_tokens;
  work.sample = seq.num_computed == static_cast<std::int32_t>(seq.tokens.size());
  plan.sequences.push_back(std::move(work));
}

void SchedulerBase::insert_running(RequestId id) {
  const std::uint64_t arrival = sequences_.at(id).arrival;
  const auto pos = std::upper_bound(
      running_.begin(), running_.end(), arrival,
      [&](std::uint64_t a, RequestId other) { return a < sequences_.at(other).arrival; });
  running_.insert(pos, id);
}

BatchPlan SchedulerBase::schedule_continuous_batching() {
  BatchPlan plan;
  plan.iteration = next_iteration_++;
  std::int32_t budget = config_.token_budget;

  // 1. Every running decode (one token each), oldest first. max_running <= token_budget, so
  //    they always fit the budget; pages may force preemption of the newest.
  const std::vector<RequestId> running_snapshot = running_;
  for (RequestId id : running_snapshot) {
    const auto it = sequences_.find(id);
    if (it == sequences_.end() || it->second.in_prefill()) continue;
    if (std::find(running_.begin(), running_.end(), id) == running_.end()) continue;  // preempted
    Sequence& seq = it->second;
    if (seq.num_uncomputed() != 1) continue;  // its last token is not sampled yet
    if (!reserve_or_preempt(seq, seq.num_computed + 1, plan, budget)) continue;
    append_work(seq, 1, plan);
    --budget;
  }

  // 2. Running sequences still prefilling, oldest first: their next chunk. When not even one
  //    token fits the free pages, the newest running sequence is preempted (maybe itself).
  for (RequestId id : running_snapshot) {
    if (budget <= 0) break;
    if (std::find(running_.begin(), running_.end(), id) == running_.end()) continue;
    Sequence& seq = sequences_.at(id);
    if (!seq.in_prefill()) continue;
    std::int64_t chunk = std::min(seq.num_uncomputed(), budget);
    const std::int64_t fits = blocks_.max_tokens_reachable(id) - seq.num_computed;
    chunk = std::max<std::int64_t>(1, std::min(chunk, fits));
    if (!reserve_or_preempt(seq, seq.num_computed + chunk, plan, budget)) continue;
    // Preemption of others may have refunded budget, never taken it: chunk still fits.
    append_work(seq, static_cast<std::int32_t>(chunk), plan);
    budget -= static_cast<std::int32_t>(chunk);
  }

  // 3. Waiting sequences, FCFS: admitted while the running set, the budget and the free pages
  //    allow. Admission never preempts a running sequence; the queue head blocks the ones
  //    behind it. A waiting sequence may already hold pages (an activated request on a decode
  //    instance): it continues from what its pages hold. When nothing runs and the head cannot
  //    get a page, waiting page holders give theirs up (recompute) so the head can start.
  while (budget > 0 && !waiting_.empty() && num_running() < config_.max_running) {
    const RequestId id = waiting_.front();
    Sequence& seq = sequences_.at(id);
    const std::int64_t fits = blocks_.max_tokens_reachable(id) - seq.num_computed;
    const std::int64_t chunk = std::min<std::int64_t>({seq.num_uncomputed(), budget, fits});
    if (chunk <= 0) {
      if (running_.empty() && plan.empty() && evict_newest_waiting_pages()) continue;
      break;
    }
    if (!blocks_.reserve(id, seq.num_computed + chunk).ok()) break;
    waiting_.pop_front();
    insert_running(id);
    append_work(seq, static_cast<std::int32_t>(chunk), plan);
    budget -= static_cast<std::int32_t>(chunk);
  }
  // Decodes first (activated sequences admitted in step 3 decode too).
  std::stable_partition(plan.sequences.begin(), plan.sequences.end(),
                        [](const SequenceWork& w) { return !w.is_prefill; });
  return plan;
}

BatchPlan ColocatedScheduler::schedule() { return schedule_continuous_batching(); }

BatchPlan PrefillScheduler::schedule() { return schedule_continuous_batching(); }

InstanceLoad PrefillScheduler::load() const {
  InstanceLoad load = SchedulerBase::load();
  load.outstanding_tokens = 0;
  for (const auto& [id, seq] : sequences_) {
    load.outstanding_tokens += seq.in_prefill() ? seq.prefill_target - seq.num_computed : 0;
  }
  return load;
}

void PrefillScheduler::on_token(Sequence& seq, const TokenOutput& out) {
  const RequestId id = seq.request.id;
  const auto pages = blocks_.page_table(id);
  const auto prompt_tokens = static_cast<std::int32_t>(seq.request.prompt.size());
  completions_.push_back(PrefillCompletion{.id = id,
                                           .first_token = out.token,
                                           .request_finished = out.finished,
                                           .pages = {pages.begin(), pages.end()},
                                           .prompt_tokens = prompt_tokens});
  retained_.emplace(id, prompt_tokens);
  // Leaves the instance; its page table stays with the block manager until release_retained.
  std::erase(waiting_, id);
  std::erase(running_, id);
  sequences_.erase(id);
}

std::vector<PrefillCompletion> PrefillScheduler::take_completions() {
  return std::exchange(completions_, {});
}

std::vector<std::int32_t> PrefillScheduler::retained_pages(RequestId id) const {
  if (!retained_.contains(id)) return {};
  const auto pages = blocks_.page_table(id);
  return {pages.begin(), pages.end()};
}

Status PrefillScheduler::release_retained(RequestId id) {
  if (retained_.erase(id) == 0) {
    return not_found(fmt::format("request {} retains no pages", id));
  }
  return blocks_.release(id);
}

BatchPlan DecodeScheduler::schedule() { return schedule_continuous_batching(); }

std::optional<TokenOutput> DecodeScheduler::abort(RequestId id) {
  const auto it = reservations_.find(id);
  if (it == reservations_.end()) return SchedulerBase::abort(id);
  if (it->second.cancelled) return std::nullopt;
  // A transfer may still be writing into the pages: they stay held until the release.
  it->second.cancelled = true;
  return TokenOutput{.id = id,
                     .token = TokenOutput::kNoToken,
                     .index = 0,
                     .finished = true,
                     .reason = FinishReason::kAbort};
}

InstanceLoad DecodeScheduler::load() const {
  InstanceLoad load = SchedulerBase::load();
  load.waiting += num_reserved();
  return load;
}

Result<std::vector<std::int32_t>> DecodeScheduler::reserve(RequestId id,
                                                           std::int32_t prompt_tokens) {
  if (sequences_.contains(id) || reservations_.contains(id)) {
    return invalid_argument(fmt::format("request {} is already held", id));
  }
  if (prompt_tokens < 1 || prompt_tokens >= config_.max_model_len) {
    return invalid_argument(fmt::format("request {}: prompt of {} tokens outside [1, {})", id,
                                        prompt_tokens, config_.max_model_len));
  }
  PODSERVE_RETURN_IF_ERROR(blocks_.reserve(id, prompt_tokens));
  reservations_.emplace(id, Reservation{.prompt_tokens = prompt_tokens});
  const auto pages = blocks_.page_table(id);
  return std::vector<std::int32_t>(pages.begin(), pages.end());
}

Status DecodeScheduler::activate_prefilled(GenerationRequest request, TokenId first_token) {
  return activate(std::move(request), first_token, /*prefilled=*/true);
}

Status DecodeScheduler::activate_fallback(GenerationRequest request, TokenId first_token) {
  return activate(std::move(request), first_token, /*prefilled=*/false);
}

Status DecodeScheduler::activate(GenerationRequest request, TokenId first_token, bool prefilled) {
  const RequestId id = request.id;
  const auto it = reservations_.find(id);
  if (it == reservations_.end()) return not_found(fmt::format("request {} is not reserved", id));
  const auto prompt_tokens = static_cast<std::int32_t>(request.prompt.size());
  if (prompt_tokens != it->second.prompt_tokens) {
    return invalid_argument(fmt::format("request {}: prompt of {} tokens, reserved for {}", id,
                                        prompt_tokens, it->second.prompt_tokens));
  }
  if (request.sampling.max_tokens < 1) return invalid_argument("max_tokens must be >= 1");
  const bool finished_by_first_token =
      finish_reason(request, first_token, 1, std::int64_t{prompt_tokens} + 1).has_value();
  if (it->second.cancelled || finished_by_first_token) return release_reservation(id);
  reservations_.erase(it);

  Sequence seq;
  seq.tokens = request.prompt;
  seq.tokens.push_back(first_token);
  seq.num_generated = 1;
  seq.num_computed = prefilled ? prompt_tokens : 0;
  seq.prefill_target = prefilled ? prompt_tokens : prompt_tokens + 1;
  seq.arrival = next_arrival_++;
  seq.request = std::move(request);
  sequences_.emplace(id, std::move(seq));
  waiting_.push_back(id);
  return Status::Ok();
}

Status DecodeScheduler::release_reservation(RequestId id) {
  if (reservations_.erase(id) == 0) return not_found(fmt::format("request {} is not reserved", id));
  return blocks_.release(id);
}

bool DecodeScheduler::is_reservation_cancelled(RequestId id) const {
  const auto it = reservations_.find(id);
  return it != reservations_.end() && it->second.cancelled;
}

}  // namespace podserve
