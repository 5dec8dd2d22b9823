#include "disagg/outbox.h"

#include <spdlog/spdlog.h>

namespace podserve {

Status reject_request(PdOutbox& outbox, RequestId id, const Status& why) {
  spdlog::warn("request {} rejected: {}", id, why.to_string());
  return outbox.finish_at_router({id, TokenOutput::kNoToken, 0, true, FinishReason::kError});
}

}  // namespace podserve
