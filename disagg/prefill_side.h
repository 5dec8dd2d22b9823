// The prefill instance's half of the disaggregated protocol (docs/design.md sections 2 and 8),
// run by the prefill leader P. One request's life on P:
//
//   PrefillRequest -> kPrefilling -(a plan runs its last prompt chunk and carries its
//        |              |          KvShipment; every P rank ships its heads)-> kShipping
//        |              +-(aborted before its first token: kAbandoned to D)-> gone
//        +-(refused by the engine: rejected at the router, kAbandoned to D)-> gone
//   kShipping: once the step's first token is out, kShipping to D (first token, whether it
//   finished the request, num_parts); when every one of the num_parts P ranks reported its
//   share final (ok or failed: D decides between decoding and falling back), the retained
//   pages are released -> gone.
//   A cancel goes to the engine: a prefilling request is aborted (and then abandoned); a
//   shipping one keeps its pages until its shipment is final (D frees its reservation).
//
// Within one iteration the caller keeps this order (what makes the first token leave before
// the shipment is posted, and D hear of a request only once its KV is on its way):
// add_shipments(plan) before the plan is broadcast; after the step on_step_outputs(outputs),
// then the outputs to the router, then the shipments posted, then on_prefill_completions().
//
// Contract: single-threaded (the prefill leader's loop); talks to its PrefillEngine and to a
// PdOutbox only, never to MPI or a transport. Errors are engine or outbox failures, or parts
// for ids it does not hold (kInternal): the caller shuts the instance down.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/batch_plan.h"
#include "core/status.h"
#include "disagg/messages.h"
#include "disagg/outbox.h"
#include "worker/engine.h"

namespace podserve {

enum class PrefillRequestState : std::uint8_t {
  kUnknown,     // not held (never seen, abandoned, or its shipment is final)
  kPrefilling,  // queued or running on the engine
  kShipping,    // its KV shipment was planned; waiting for every part to be final
};

class PrefillSide {
 public:
  // num_parts: the instance's TP degree (every rank ships its own heads).
  PrefillSide(std::int32_t num_parts, PrefillEngine& engine, PdOutbox& outbox);

  Status on_prefill_request(PrefillRequestMessage message);
  void cancel(RequestId id);
  // Adds a KvShipment to `plan` for every sequence whose last prompt chunk it runs (the
  // shipment's source pages are the sequence's page table).
  void add_shipments(BatchPlan& plan);
  // A step's outputs: a request aborted before its first token is abandoned.
  Status on_step_outputs(std::span<const TokenOutput> outputs);
  // A step's completed prefills: the first token (and the number of parts) goes to D.
  Status on_prefill_completions(std::span<const PrefillCompletion> completions);
  // One P rank's share of `id`'s shipment is final (ok or failed).
  Status on_part_done(RequestId id);

  PrefillRequestState state(RequestId id) const;
  // Requests held (prefilling or shipping).
  std::size_t num_held() const { return targets_.size(); }

 private:
  struct Target {  // where a request's KV goes
    std::int32_t decode_instance = 0;
    std::vector<std::int32_t> dest_pages;
    bool shipping = false;
    std::int32_t parts_done = 0;
  };

  std::int32_t num_parts_;
  PrefillEngine& engine_;
  PdOutbox& outbox_;
  std::unordered_map<RequestId, Target> targets_;
};

}  // namespace podserve
