// Vocabulary types shared by every podserve library: token and request ids, sampling
// parameters, finish reasons, instance roles. Plain values; no behaviour beyond naming.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace podserve {

using TokenId = std::int32_t;
// Router-assigned, unique for the life of the service; also the sequence id on the instances.
using RequestId = std::uint64_t;

struct SamplingParams {
  std::int32_t max_tokens = 16;  // tokens to generate, >= 1
  float temperature = 1.0f;      // 0 = greedy
  float top_p = 1.0f;            // nucleus mass in (0, 1]
  std::uint64_t seed = 0;        // per-request RNG seed (the router fills one when absent)
  bool ignore_eos = false;       // keep generating past the EOS token
};

enum class FinishReason : std::uint8_t {
  kStop,    // EOS produced
  kLength,  // max_tokens reached
  kAbort,   // cancelled by the client or by shutdown
  kError,   // the service could not complete it
};
std::string_view to_string(FinishReason reason);

enum class InstanceRole : std::uint8_t { kColocated, kPrefill, kDecode };
std::string_view to_string(InstanceRole role);

}  // namespace podserve
