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

// How arrival times are made (vLLM's `bench serve` has the same generated processes).
struct ArrivalOptions {
  // > 0: the offered rate in requests/s; 0: the recorded arrivals multiplied by time_scale.
  double rate = 0.0;
  // With rate > 0: false generates gaps (Gamma with shape `burstiness` and mean 1/rate; shape 1
  // is a Poisson process, below 1 burstier, above 1 more even); true keeps the recorded arrivals'
  // pattern, time-scaled so that the slice's mean rate, (n - 1) / span, is `rate`.
  bool recorded = false;
  double burstiness = 1.0;
  double time_scale = 1.0;  // rate 0: 0.5 replays twice as fast
  std::uint64_t seed = 1;   // generated gaps
};
// Sets every request's arrival_s (the first at 0 when generated). Recorded arrivals of a slice
// with a span of 0 (or one request) are all at 0.
void schedule_arrivals(std::vector<TraceRequest>& requests, const ArrivalOptions& options);
// The common pair: rate > 0 a Poisson process of `rate` requests/s; rate 0 the recorded arrivals
// times time_scale.
void schedule_arrivals(std::vector<TraceRequest>& requests, double rate, double time_scale,
                       std::uint64_t seed);

std::vector<TraceRequest> synthetic_requests(std::size_t count, std::int32_t prompt_tokens,
                                             std::int32_t output_tokens);

}  // namespace podserve::bench
