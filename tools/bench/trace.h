// Workload for podserve-bench: requests with an arrival offset, a prompt length and an output
// length, read from an Azure LLM inference trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens)
// or made up (synthetic), then scaled and given arrival times. Pure functions, no I/O besides
// the stream passed in.
#pragma once

#include <cstdint>
#include <istream>
#include <vector>

#include "core/status.h"

namespace podserve::bench {

struct TraceRequest {
  double arrival_s = 0.0;  // seconds after the first request of the replayed slice
  std::int32_t prompt_tokens = 0;
  std::int32_t output_tokens = 0;
};

// Reads `count` rows starting at data row `offset` (0-based, after the header); count 0: all.
// Arrival times are relative to the first row read. Errors name the line.
Result<std::vector<TraceRequest>> parse_azure_trace(std::istream& csv, std::size_t offset,
                                                    std::size_t count);

struct ScaleOptions {
  double prompt_scale = 1.0;
  double output_scale = 1.0;
  std::int32_t min_prompt = 1;
  std::int32_t max_prompt = 4096;
  std::int32_t max_output = 1024;
};
// Multiplies lengths (rounded to nearest), clamps prompts to [min_prompt, max_prompt] and
// outputs to [1, max_output].
void scale_lengths(std::vector<TraceRequest>& requests, const ScaleOptions& options);

// Arrival times: rate > 0 replaces them with a Poisson process of `rate` requests/s (seeded);
// rate == 0 keeps the recorded ones multiplied by time_scale (0.5 = twice as fast).
void schedule_arrivals(std::vector<TraceRequest>& requests, double rate, double time_scale,
                       std::uint64_t seed);

std::vector<TraceRequest> synthetic_requests(std::size_t count, std::int32_t prompt_tokens,
                                             std::int32_t output_tokens);

}  // namespace podserve::bench
