// One completion request of podserve-bench over HTTP, timed on the client: sends token ids (or
// text) with
// ignore_eos and temperature 0 so the output length is the one asked for. With stream, reads
// the SSE events as they arrive: TTFT = send -> first event carrying a token; ITL = gaps between
// successive token-carrying events; e2e = send -> end of the response.
// Blocking; thread-safe (each call makes its own connection).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/types.h"

namespace podserve::bench {

struct CompletionSpec {
  std::vector<TokenId> prompt;
  std::string prompt_text;  // sent instead of `prompt` when not empty
  std::int32_t max_tokens = 1;
  bool stream = true;
};

struct CompletionResult {
  bool ok = false;
  int http_status = 0;  // 0: no HTTP response (connection error)
  std::string error;    // why it failed, when !ok
  double ttft_s = 0.0;  // stream only
  double e2e_s = 0.0;
  std::vector<double> itl_s;  // stream only
  std::int32_t output_tokens = 0;
};

// url: "http://host:port". timeout_s bounds each read on the connection.
CompletionResult send_completion(const std::string& url, const CompletionSpec& spec, int timeout_s);

// Random prompt token ids in [0, vocab_limit) from `seed` (reproducible workloads).
std::vector<TokenId> random_prompt(std::int32_t length, std::int32_t vocab_limit,
                                   std::uint64_t seed);

}  // namespace podserve::bench
