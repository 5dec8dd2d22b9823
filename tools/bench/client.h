// One completion request of a load generator over HTTP, timed on the client, in plain OpenAI
// terms so that any OpenAI-compatible server can be measured: a token-id (or text) prompt,
// max_tokens,
// temperature 0 (and ignore_eos, which vLLM and podserve take, so the output length is the one
// asked for), `model` when given. With stream, the SSE chunks are timed as they arrive: TTFT =
// send -> first chunk carrying a choice; ITL = gaps between successive such chunks; e2e = send
// -> end of the response. The output token count comes from the final `usage` (asked for with
// stream_options.include_usage), or, with TokenCounting::kTokenIds, from the podserve-only
// `token_ids` of each chunk (then only chunks carrying ids are timed).
// Blocking; thread-safe (each call makes its own connection).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/types.h"

namespace podserve::bench {

enum class TokenCounting : std::uint8_t {
  kUsage,     // usage.completion_tokens (plain OpenAI); chunks counted when a server sends none
  kTokenIds,  // the length of each chunk's choices[0].token_ids (podserve's extension)
};

struct CompletionSpec {
  std::vector<TokenId> prompt;
  std::string prompt_text;  // sent instead of `prompt` when not empty
  std::int32_t max_tokens = 1;
  bool stream = true;
  std::string model;  // sent as "model" when not empty
  bool ignore_eos = true;
  TokenCounting counting = TokenCounting::kUsage;
};

struct CompletionResult {
  bool ok = false;
  int http_status = 0;  // 0: no HTTP response (connection error)
  std::string error;    // why it failed, when !ok
  double ttft_s = 0.0;  // stream only
  double e2e_s = 0.0;
  std::vector<double> itl_s;  // stream only
  std::int32_t output_tokens = 0;

  // Time per output token after the first, (e2e - ttft) / (output_tokens - 1) as vLLM's
  // benchmark defines it; 0 for a reply of one token or a non-streamed one.
  double tpot_s() const {
    return output_tokens > 1 && ttft_s > 0.0 ? (e2e_s - ttft_s) / (output_tokens - 1) : 0.0;
  }
};

// url: "http://host:port". timeout_s bounds each read on the connection.
CompletionResult send_completion(const std::string& url, const CompletionSpec& spec, int timeout_s);

// Random prompt token ids in [0, vocab_limit) from `seed` (reproducible workloads).
std::vector<TokenId> random_prompt(std::int32_t length, std::int32_t vocab_limit,
                                   std::uint64_t seed);

}  // namespace podserve::bench
