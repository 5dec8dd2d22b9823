// The messages of the disaggregated prefill/decode protocol (docs/design.md section 2): what
// the router, the decode instance D and the prefill instance P tell each other about one
// request. Plain values; cluster/control_messages.h encodes them for the control plane beside
// its other messages.
#pragma once

#include <cstdint>
#include <vector>

#include "core/request.h"

namespace podserve {

// router -> decode leader D: admit a request whose prompt runs on prefill instance
// `prefill_instance`.
struct DisaggregatedSubmitMessage {
  GenerationRequest request;
  std::int32_t prefill_instance = 0;
};
// D -> prefill leader P: prefill this request and ship its KV into `dest_pages` of D.
struct PrefillRequestMessage {
  GenerationRequest request;
  std::int32_t decode_instance = 0;
  std::vector<std::int32_t> dest_pages;
};
// P leader -> D leader: the request's prefill is over. kShipping: the first token was sampled
// and every P rank is shipping its share of the KV (num_parts KvPartDone follow);
// kAbandoned: P aborted or rejected it before the first token (nothing was or will be shipped).
struct PrefillResultMessage {
  enum class Outcome : std::uint8_t { kShipping, kAbandoned };
  RequestId id = 0;
  Outcome outcome = Outcome::kShipping;
  TokenId first_token = TokenOutput::kNoToken;
  bool request_finished = false;  // the first token already finished the request
  std::int32_t num_parts = 0;     // P's TP degree
};
// P rank -> D leader and P leader: this rank's share of a request's KV is final at D
// (ok: every byte written; !ok: failed after retries and fenced, nothing more will be written).
struct KvPartDoneMessage {
  RequestId id = 0;
  std::int32_t part = 0;  // the P rank's TP rank
  bool ok = true;
};

}  // namespace podserve
