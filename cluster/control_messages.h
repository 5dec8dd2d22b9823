// The control plane between the router (rank 0) and instance leaders: typed, versioned
// messages and their binary encoding. Transport-independent (control_endpoint.h moves them
// over MPI). A message that does not decode (wrong magic/version/truncated) is an error Status,
// never undefined behaviour.
#pragma once

#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "core/request.h"
#include "core/status.h"

namespace podserve {

inline constexpr std::uint16_t kControlProtocolVersion = 1;

// router -> leader: admit a request.
struct SubmitMessage {
  GenerationRequest request;
};
// router -> leader: abort a request (client gone, or shutdown).
struct CancelMessage {
  RequestId id = 0;
};
// leader -> router: this iteration's outputs and the instance's load after it.
struct OutputsMessage {
  std::vector<RequestId> scheduled;  // requests whose first prefill chunk ran this iteration
  std::vector<TokenOutput> outputs;
  InstanceLoad load;
};
// leader -> router: load report while idle or when it changed without outputs.
struct LoadMessage {
  InstanceLoad load;
};
// router -> leader: stop (after draining); leader -> router: stopped, peers released.
struct ShutdownMessage {};
struct ShutdownDoneMessage {};

// Disaggregated mode (docs/design.md section 2). router -> decode leader D: admit a request whose
// prompt runs on prefill instance `prefill_instance`.
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

using ControlMessage =
    std::variant<SubmitMessage, CancelMessage, OutputsMessage, LoadMessage, ShutdownMessage,
                 ShutdownDoneMessage, DisaggregatedSubmitMessage, PrefillRequestMessage,
                 PrefillResultMessage, KvPartDoneMessage>;

std::vector<std::uint8_t> encode_control(const ControlMessage& message);
Result<ControlMessage> decode_control(std::span<const std::uint8_t> bytes);

}  // namespace podserve
