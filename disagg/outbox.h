// Where the disaggregated protocol's state machines (decode_side.h, prefill_side.h) send what
// they decide. cluster/ implements it over the control plane (MPI); the unit tests record it.
// Sends are non-blocking requests to send: an error means the message could not be queued and
// leaves the instance unusable (the caller shuts it down).
#pragma once

#include <cstdint>

#include "core/request.h"
#include "core/status.h"
#include "disagg/messages.h"

namespace podserve {

class PdOutbox {
 public:
  virtual ~PdOutbox() = default;
  // Decode leader -> the leader of prefill instance `prefill_instance`.
  virtual Status send_to_prefill(std::int32_t prefill_instance,
                                 const PrefillRequestMessage& message) = 0;
  // Prefill leader -> the leader of decode instance `decode_instance`.
  virtual Status send_to_decode(std::int32_t decode_instance,
                                const PrefillResultMessage& message) = 0;
  // To the router: `output` ends a request without a token (kNoToken, finished): rejected
  // (kError) or aborted while its KV was awaited (kAbort).
  virtual Status finish_at_router(const TokenOutput& output) = 0;
};

// Logs why `id` was refused and tells the router it finished with kError.
Status reject_request(PdOutbox& outbox, RequestId id, const Status& why);

}  // namespace podserve
