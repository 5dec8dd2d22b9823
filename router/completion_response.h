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

// /v1/tokenize's reply: {"count", "max_model_len", "tokens", "token_strs": null}.
std::string tokenize_body(std::span<const TokenId> tokens, std::int32_t max_model_len);
// /v1/detokenize's reply: {"prompt": text}.
std::string detokenize_body(const std::string& text);

// The length of the longest prefix of `text` that does not end inside a UTF-8 character (a
// lead byte whose continuation bytes have not all arrived); bytes that are not UTF-8 at all
// count as whole.
std::size_t complete_utf8_prefix(std::string_view text);

// A growing reply text streamed in pieces that never end inside a UTF-8 character (a character
// whose bytes come in several tokens goes out once complete). Not thread-safe.
class Utf8StreamCursor {
 public:
  // The part of `text` (the whole reply so far) not returned before, up to its last whole
  // character; all of it when `finished`.
  std::string next(std::string_view text, bool finished);

 private:
  std::size_t sent_ = 0;
};

}  // namespace podserve
