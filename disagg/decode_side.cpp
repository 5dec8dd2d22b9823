#include "disagg/decode_side.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace podserve {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace


DecodeSide::DecodeSide(std::int32_t instance_id, DecodeEngine& engine, PdOutbox& outbox)
    : instance_id_(instance_id), engine_(engine), outbox_(outbox) {}

Status DecodeSide::submit(DisaggregatedSubmitMessage message) {
  waiting_.push_back(std::move(message));
  return admit_waiting().status();
}

Result<bool> DecodeSide::admit_waiting() {
  bool admitted = false;
  while (!waiting_.empty()) {
    auto& next = waiting_.front();
    const auto prompt_tokens = static_cast<std::int32_t>(next.request.prompt.size());
    auto pages = engine_.reserve(next.request.id, prompt_tokens);
    if (!pages.ok()) {
      if (pages.status().code() == StatusCode::kResourceExhausted) break;  // retried later
      const RequestId id = next.request.id;
      waiting_.pop_front();
      PODSERVE_RETURN_IF_ERROR(reject_request(outbox_, id, pages.status()));
      continue;
    }
    admitted = true;
    PrefillRequestMessage forward;
    forward.request = next.request;
    forward.decode_instance = instance_id_;
    forward.dest_pages = std::move(*pages);
    PODSERVE_RETURN_IF_ERROR(outbox_.send_to_prefill(next.prefill_instance, forward));
    awaiting_[next.request.id] =
        AwaitingKv{std::move(next.request), next.prefill_instance, std::move(forward.dest_pages)};
    waiting_.pop_front();
  }
  return admitted;
}

void DecodeSide::cancel(RequestId id) {
  if (auto it = awaiting_.find(id); it != awaiting_.end()) {
    // Its pages may still be a transfer target: freed once the prefill side's final word
    // arrives (resolve), never before.
    it->second.cancelled = true;
    return;
  }
  const auto queued = std::find_if(waiting_.begin(), waiting_.end(),
                                   [&](const auto& q) { return q.request.id == id; });
  if (queued != waiting_.end()) {
    waiting_.erase(queued);
    return;
  }
  engine_.cancel(id);
}

Status DecodeSide::on_prefill_result(const PrefillResultMessage& message) {
  auto it = awaiting_.find(message.id);
  if (it == awaiting_.end())
    return internal_error(fmt::format("prefill result for unknown request {}", message.id));
  it->second.result = message;
  it->second.result_time = std::chrono::steady_clock::now();
  return resolve(it);
}

Status DecodeSide::on_part_done(const KvPartDoneMessage& message) {
  auto it = awaiting_.find(message.id);
  if (it == awaiting_.end())
    return internal_error(fmt::format("KV part for unknown request {}", message.id));
  (message.ok ? it->second.parts_ok : it->second.parts_failed)++;
  return resolve(it);
}

Status DecodeSide::resolve(AwaitingMap::iterator it) {
  auto& a = it->second;
  if (!a.result) return Status::Ok();
  const auto& result = *a.result;
  const bool abandoned = result.outcome == PrefillResultMessage::Outcome::kAbandoned;
  if (!abandoned && a.parts_ok + a.parts_failed < result.num_parts) return Status::Ok();
  const RequestId id = it->first;
  if (abandoned || a.cancelled || result.request_finished) {
    PODSERVE_RETURN_IF_ERROR(engine_.release_reservation(id));
    if (a.cancelled && !abandoned && !result.request_finished) {
      PODSERVE_RETURN_IF_ERROR(
          outbox_.finish_at_router({id, TokenOutput::kNoToken, 1, true, FinishReason::kAbort}));
    }
  } else if (a.parts_failed == 0) {
    kv_waits_.push_back(seconds_since(a.result_time));
    // Delivered by every TP rank before the next forward pass (BatchPlan::deliver_pages).
    deliveries_.insert(deliveries_.end(), a.dest_pages.begin(), a.dest_pages.end());
    PODSERVE_RETURN_IF_ERROR(engine_.activate_prefilled(std::move(a.request), result.first_token));
  } else {
    spdlog::warn("request {}: KV transfer failed on {} of {} prefill ranks; prefilling locally", id,
                 a.parts_failed, result.num_parts);
    ++num_fallbacks_;
    kv_waits_.push_back(seconds_since(a.result_time));
    PODSERVE_RETURN_IF_ERROR(engine_.activate_fallback(std::move(a.request), result.first_token));
  }
  awaiting_.erase(it);
  return Status::Ok();
}

std::vector<std::int32_t> DecodeSide::take_deliveries() { return std::exchange(deliveries_, {}); }

std::vector<double> DecodeSide::take_kv_waits() { return std::exchange(kv_waits_, {}); }

DecodeRequestState DecodeSide::state(RequestId id) const {
  if (awaiting_.contains(id)) return DecodeRequestState::kAwaitingKv;
  const bool queued = std::any_of(waiting_.begin(), waiting_.end(),
                                  [&](const auto& q) { return q.request.id == id; });
  return queued ? DecodeRequestState::kWaitingForPages : DecodeRequestState::kUnknown;
}

}  // namespace podserve
