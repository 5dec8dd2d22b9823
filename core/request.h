// What flows between the router and an instance: a generation request going in, token outputs
// and load reports coming back. Plain values, serializable by cluster/ for the control plane.
#pragma once

#include <cstdint>
#include <vector>

#include "core/types.h"

namespace podserve {

struct GenerationRequest {
  RequestId id = 0;
  std::vector<TokenId> prompt;  // non-empty, shorter than the model's context
  SamplingParams sampling;
};

// One event of one request, produced by an instance leader each iteration.
struct TokenOutput {
  static constexpr TokenId kNoToken = -1;

  RequestId id = 0;
  TokenId token = kNoToken;  // kNoToken when the event only finishes the request (abort, error)
  std::int32_t index = 0;    // 0-based position of `token` among the generated tokens
  bool finished = false;
  FinishReason reason = FinishReason::kLength;  // meaningful when finished
};

// An instance's load, reported by its leader (piggybacked on outputs, and when idle).
struct InstanceLoad {
  std::int32_t running = 0;  // sequences in the running set
  std::int32_t waiting = 0;  // admitted, not yet running
  std::int64_t outstanding_tokens =
      0;  // prompt tokens not yet prefilled + tokens not yet generated
  std::int32_t free_pages = 0;
  std::int32_t total_pages = 0;

  bool operator==(const InstanceLoad&) const = default;
};

}  // namespace podserve
