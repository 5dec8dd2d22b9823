#include "disagg/prefill_side.h"

#include <fmt/format.h>

#include <utility>

namespace podserve {

PrefillSide::PrefillSide(std::int32_t num_parts, PrefillEngine& engine, PdOutbox& outbox)
    : num_parts_(num_parts), engine_(engine), outbox_(outbox) {}

Status PrefillSide::on_prefill_request(PrefillRequestMessage message) {
  const RequestId id = message.request.id;
  const std::int32_t decode_instance = message.decode_instance;
  targets_[id] = Target{decode_instance, std::move(message.dest_pages)};
  if (auto status = engine_.submit(std::move(message.request)); !status.ok()) {
    targets_.erase(id);
    PODSERVE_RETURN_IF_ERROR(reject_request(outbox_, id, status));
    return outbox_.send_to_decode(
        decode_instance, PrefillResultMessage{id, PrefillResultMessage::Outcome::kAbandoned});
  }
  return Status::Ok();
}

void PrefillSide::cancel(RequestId id) { engine_.cancel(id); }

void PrefillSide::add_shipments(BatchPlan& plan) {
  for (const auto& seq : plan.sequences) {
    auto target = targets_.find(seq.seq_id);
    if (!seq.is_prefill || !seq.sample || target == targets_.end()) continue;
    target->second.shipping = true;
    plan.shipments.push_back({seq.seq_id, target->second.decode_instance, seq.context_length(),
                              seq.page_table, target->second.dest_pages});
  }
}

Status PrefillSide::on_step_outputs(std::span<const TokenOutput> outputs) {
  // Aborted before its first token: nothing was shipped; D frees its reservation.
  for (const auto& output : outputs) {
    auto target = targets_.find(output.id);
    if (!output.finished || output.reason != FinishReason::kAbort || target == targets_.end() ||
        target->second.shipping) {
      continue;
    }
    PODSERVE_RETURN_IF_ERROR(outbox_.send_to_decode(
        target->second.decode_instance,
        PrefillResultMessage{output.id, PrefillResultMessage::Outcome::kAbandoned}));
    targets_.erase(target);
  }
  return Status::Ok();
}

Status PrefillSide::on_prefill_completions(std::span<const PrefillCompletion> completions) {
  for (const auto& completion : completions) {
    auto target = targets_.find(completion.id);
    if (target == targets_.end()) continue;
    const PrefillResultMessage result{completion.id, PrefillResultMessage::Outcome::kShipping,
                                      completion.first_token, completion.request_finished,
                                      num_parts_};
    PODSERVE_RETURN_IF_ERROR(outbox_.send_to_decode(target->second.decode_instance, result));
  }
  return Status::Ok();
}

Status PrefillSide::on_part_done(RequestId id) {
  auto it = targets_.find(id);
  if (it == targets_.end())
    return internal_error(fmt::format("KV part for unknown request {}", id));
  if (++it->second.parts_done < num_parts_) return Status::Ok();
  targets_.erase(it);
  return engine_.release_retained(id);
}

PrefillRequestState PrefillSide::state(RequestId id) const {
  const auto it = targets_.find(id);
  if (it == targets_.end()) return PrefillRequestState::kUnknown;
  return it->second.shipping ? PrefillRequestState::kShipping : PrefillRequestState::kPrefilling;
}

}  // namespace podserve
