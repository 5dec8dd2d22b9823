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
#include "disagg/messages.h"

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

// Disaggregated mode: DisaggregatedSubmitMessage, PrefillRequestMessage, PrefillResultMessage
// and KvPartDoneMessage (disagg/messages.h).

using ControlMessage =
    std::variant<SubmitMessage, CancelMessage, OutputsMessage, LoadMessage, ShutdownMessage,
                 ShutdownDoneMessage, DisaggregatedSubmitMessage, PrefillRequestMessage,
                 PrefillResultMessage, KvPartDoneMessage>;

std::vector<std::uint8_t> encode_control(const ControlMessage& message);
Result<ControlMessage> decode_control(std::span<const std::uint8_t> bytes);

}  // namespace podserve
