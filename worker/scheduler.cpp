#include "worker/scheduler.h"

#include <fmt/format.h>

#include <algorithm>

namespace podserve {

Status SchedulerConfig::validate() const {
  if (token_budget < 1) return invalid_argument("scheduler.token_budget must be >= 1");
  if (max_running < 1 || max_running > token_budget) {
    return invalid_argument(fmt::format(
        "scheduler.max_running {} must be in [1, token_budget {}] so every decode fits",
        max_running, token_budget));
  }
  if (page_size < 1) return invalid_argument("kv_cache.page_size must be >= 1");
  if (max_model_len < 2) return invalid_argument("max_model_len must be >= 2");
  const std::int64_t pages_per_max_sequence = (std::int64_t{max_model_len} + page_size - 1) / page_size;
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
  if (sequences_.contains(request.id)) {
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

Result<std::vector<TokenOutput>> SchedulerBase::on_step_done(const BatchPlan& plan,
                                                             std::span<const TokenId> sampled_tokens) {
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
    if (token == config_.eos_token_id && !seq.request.sampling.ignore_eos) {
      out.finished = true;
      out.reason = FinishReason::kStop;
    } else if (seq.num_generated >= seq.request.sampling.max_tokens ||
               static_cast<std::int64_t>(seq.tokens.size()) >= config_.max_model_len) {
      out.finished = true;
      out.reason = FinishReason::kLength;
    }
    if (out.finished) release_sequence(out.id);
    outputs.push_back(out);
  }
  return outputs;
}

InstanceLoad SchedulerBase::load() const {
  InstanceLoad load;
  load.running = num_running();
  load.waiting = num_waiting();
  for (const auto& [id, seq] : sequences_) {
    load.outstanding_tokens += seq.in_prefill() ? seq.prefill_target - seq.num_computed : 0;
    load.outstanding_tokens += seq.request.sampling.max_tokens - seq.num_generated;
  }
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

BatchPlan ColocatedScheduler::schedule() {
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
  //    allow. Admission never preempts; the queue head blocks the ones behind it.
  while (budget > 0 && !waiting_.empty() && num_running() < config_.max_running) {
    const RequestId id = waiting_.front();
    Sequence& seq = sequences_.at(id);
    const std::int64_t fits = blocks_.max_tokens_reachable(id);
    const std::int64_t chunk = std::min<std::int64_t>({seq.num_uncomputed(), budget, fits});
    if (chunk <= 0) break;
    if (!blocks_.reserve(id, chunk).ok()) break;
    waiting_.pop_front();
    insert_running(id);
    append_work(seq, static_cast<std::int32_t>(chunk), plan);
    budget -= static_cast<std::int32_t>(chunk);
  }
  return plan;
}

}  // namespace podserve
