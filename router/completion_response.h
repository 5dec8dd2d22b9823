// The bodies the router answers with: OpenAI `text_completion` / `chat.completion` objects, the
// server-sent events of a streamed reply (`text_completion` / `chat.completion.chunk` chunks,
// then `data: [DONE]`), and the /v1/models and /health bodies. Pure functions, thread-safe, no
// I/O. Text that is not valid UTF-8 is serialized with U+FFFD in place of the bad bytes;
// `token_ids` (an extension) is always exact.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/types.h"
#include "router/completion_request.h"

namespace podserve {

// What every response object and stream chunk of one request repeats.
struct ResponseHeader {
  RequestId id = 0;   // "id" is "cmpl-<id>", or "chatcmpl-<id>" for chat
  bool chat = false;  // chat.completion(.chunk) objects instead of text_completion
  std::int64_t created_unix_s = 0;
  std::string_view model;  // the served model name; must outlive the call
};

struct TokenUsage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;  // every generated id, a final EOS included
};

// The body of a non-streaming reply: one choice with the text (completions) or the assistant
// message (chat), the generated ids, the finish reason, and the usage.
std::string completion_response_body(const ResponseHeader& header, std::string text,
                                     std::span<const TokenId> token_ids, FinishReason reason,
                                     TokenUsage usage);

// One event of a streamed reply, "data: {chunk}\n\n": the text (completions) or a delta (chat;
// the first chunk's delta also names the role), the ids it covers, and once `reason` is set (the
// final chunk) the finish reason and the usage; finish_reason is null before.
std::string stream_chunk_event(const ResponseHeader& header, bool first_chunk, std::string text,
                               std::span<const TokenId> token_ids,
                               std::optional<FinishReason> reason, TokenUsage usage);

// The usage-only chunk OpenAI sends last when asked (stream_options.include_usage): empty
// choices and the usage.
std::string stream_usage_event(const ResponseHeader& header, TokenUsage usage);

// The event that ends a stream already answered 200 with an error: "data: {error body}\n\n".
std::string stream_error_event(const ApiError& error);

// The event after a stream's final chunk.
inline constexpr std::string_view kStreamDoneEvent = "data: [DONE]\n\n";

// GET /v1/models: the one served model.
std::string models_body(std::string_view model, std::int64_t created_unix_s,
                        std::int32_t max_model_len);

// GET /health: {"status", "instances_ready", "instances"}.
std::string health_body(std::string_view status, int instances_ready, int instances);

}  // namespace podserve
