// The decode instance's half of the disaggregated protocol (docs/design.md sections 2 and 8),
// run by the decode leader D. One request's life on D:
//
//   submit -> kWaitingForPages -(pages reserved; PrefillRequest to P)-> kAwaitingKv -> gone
//                  |
//                  +-(reservation refused, not for lack of pages: rejected)-> gone
//   kAwaitingKv ends once P's final word is in: PrefillResult kAbandoned, or PrefillResult
//   kShipping plus one KvPartDone from each of its num_parts ranks. Then, first match wins:
//     abandoned                        -> reservation released
//     cancelled or finished by token 0 -> reservation released (cancelled and neither
//                                         abandoned nor finished: kAbort to the router)
//     every part ok                    -> activated from the shipped KV (pages delivered
//                                         before the next forward pass: take_deliveries)
//     some part failed                 -> activated with a local prefill (fallback)
//   A cancel while waiting for pages forgets the request; while awaiting its KV it only marks
//   it: the pages may still be a transfer target, so they are freed at P's final word, never
//   before. A cancel of any other id goes to the engine (a decoding request).
//
// Contract: single-threaded (the decode leader's loop); talks to its DecodeEngine and to a
// PdOutbox only, never to MPI. Errors are engine or outbox failures, or messages about ids it
// does not hold (kInternal): the caller shuts the instance down.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "disagg/messages.h"
#include "disagg/outbox.h"
#include "worker/engine.h"

namespace podserve {

enum class DecodeRequestState : std::uint8_t {
  kUnknown,          // not held by the protocol (never seen, resolved, or decoding)
  kWaitingForPages,  // queued FCFS until the engine can reserve its prompt's pages
  kAwaitingKv,       // reserved, prefilling on P; waiting for P's final word
};

class DecodeSide {
 public:
  DecodeSide(std::int32_t instance_id, DecodeEngine& engine, PdOutbox& outbox);

  // A request whose prompt runs on `message.prefill_instance`: queued, then admitted in order
  // as admit_waiting() does.
  Status submit(DisaggregatedSubmitMessage message);
  // Admits queued requests in order while the engine reserves their pages: each sends its
  // PrefillRequest (the reserved pages as destination) and awaits its KV. A request whose
  // reservation fails for another reason than exhausted pages is rejected. Returns whether
  // any request left the queue.
  Result<bool> admit_waiting();
  void cancel(RequestId id);
  Status on_prefill_result(const PrefillResultMessage& message);
  Status on_part_done(const KvPartDoneMessage& message);
  // The pages of requests activated from shipped KV since the last call, in activation order:
  // every TP rank delivers them before the next forward pass (BatchPlan::deliver_pages).
  std::vector<std::int32_t> take_deliveries();
  // Seconds from P's result to the request's activation (from its KV, or a local prefill), one
  // per request activated since the last call: the KV-transfer wait of the phase metrics.
  std::vector<double> take_kv_waits();

  DecodeRequestState state(RequestId id) const;
  // Requests waiting for pages or for their KV.
  std::size_t num_waiting_for_kv() const { return waiting_.size() + awaiting_.size(); }
  // Requests that fell back to a local prefill, since construction.
  std::int64_t num_fallbacks() const { return num_fallbacks_; }

 private:
  struct AwaitingKv {
    GenerationRequest request;
    std::int32_t prefill_instance = 0;
    std::vector<std::int32_t> dest_pages;  // reserved for its KV
    bool cancelled = false;
    std::optional<PrefillResultMessage> result;
    std::chrono::steady_clock::time_point result_time;  // when `result` arrived
    std::int32_t parts_ok = 0;
    std::int32_t parts_failed = 0;
  };
  using AwaitingMap = std::unordered_map<RequestId, AwaitingKv>;

  // Ends kAwaitingKv once P's final word is in (the table in the header comment).
  Status resolve(AwaitingMap::iterator it);

  std::int32_t instance_id_;
  DecodeEngine& engine_;
  PdOutbox& outbox_;
  std::deque<DisaggregatedSubmitMessage> waiting_;
  AwaitingMap awaiting_;
  std::vector<std::int32_t> deliveries_;
  std::vector<double> kv_waits_;
  std::int64_t num_fallbacks_ = 0;
};

}  // namespace podserve
