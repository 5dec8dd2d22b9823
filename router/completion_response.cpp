#include "router/completion_response.h"

#include <algorithm>
#include <utility>

#include "nlohmann/json.hpp"

namespace podserve {
namespace {

using nlohmann::json;

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// One choice of a response or stream chunk. Completions: {"text"}; chat: {"message"} in a
// response, {"delta"} in a stream chunk (the first one also names the role).
json choice_json(bool chat, bool stream_chunk, bool first_chunk, std::string text,
                 std::span<const TokenId> token_ids, std::optional<FinishReason> reason) {
  json choice = {{"index", 0}};
  if (!chat) {
    choice["text"] = std::move(text);
  } else if (!stream_chunk) {
    choice["message"] = {{"role", "assistant"}, {"content", std::move(text)}};
  } else {
    choice["delta"] = {{"content", std::move(text)}};
    if (first_chunk) choice["delta"]["role"] = "assistant";
  }
  choice["token_ids"] = token_ids;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = reason ? json(std::string(to_string(*reason))) : json(nullptr);
  return choice;
}

json usage_json(TokenUsage usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

// "id", "object", "created" and "model" of a response object or stream chunk.
json header_json(const ResponseHeader& header, bool stream_chunk) {
  const char* object = !header.chat   ? "text_completion"
                       : stream_chunk ? "chat.completion.chunk"
                                      : "chat.completion";
  return {{"id", (header.chat ? "chatcmpl-" : "cmpl-") + std::to_string(header.id)},
          {"object", object},
          {"created", header.created_unix_s},
          {"model", std::string(header.model)}};
}

}  // namespace

std::string completion_response_body(const ResponseHeader& header, std::string text,
                                     std::span<const TokenId> token_ids, FinishReason reason,
                                     TokenUsage usage) {
  json body = header_json(header, /*stream_chunk=*/false);
  body["choices"] =
      json::array({choice_json(header.chat, /*stream_chunk=*/false,
                               /*first_chunk=*/false, std::move(text), token_ids, reason)});
  body["usage"] = usage_json(usage);
  return dump(body);
}

std::string stream_chunk_event(const ResponseHeader& header, bool first_chunk, std::string text,
                               std::span<const TokenId> token_ids,
                               std::optional<FinishReason> reason, TokenUsage usage) {
  json chunk = header_json(header, /*stream_chunk=*/true);
  chunk["choices"] = json::array({choice_json(header.chat, /*stream_chunk=*/true, first_chunk,
                                              std::move(text), token_ids, reason)});
  if (reason) chunk["usage"] = usage_json(usage);
  return "data: " + dump(chunk) + "\n\n";
}

std::string stream_usage_event(const ResponseHeader& header, TokenUsage usage) {
  json chunk = header_json(header, /*stream_chunk=*/true);
  chunk["choices"] = json::array();
  chunk["usage"] = usage_json(usage);
  return "data: " + dump(chunk) + "\n\n";
}

std::string stream_error_event(const ApiError& error) {
  return "data: " + api_error_body(error) + "\n\n";
}

std::string models_body(std::string_view model, std::int64_t created_unix_s,
                        std::int32_t max_model_len) {
  return dump({{"object", "list"},
               {"data", json::array({{{"id", std::string(model)},
                                      {"object", "model"},
                                      {"created", created_unix_s},
                                      {"owned_by", "podserve"},
                                      {"max_model_len", max_model_len}}})}});
}

std::string health_body(std::string_view status, int instances_ready, int instances) {
  return dump({{"status", std::string(status)},
               {"instances_ready", instances_ready},
               {"instances", instances}});
}

std::string tokenize_body(std::span<const TokenId> tokens, std::int32_t max_model_len) {
  return dump({{"count", tokens.size()},
               {"max_model_len", max_model_len},
               {"tokens", tokens},
               {"token_strs", nullptr}});
}

std::string detokenize_body(const std::string& text) { return dump({{"prompt", text}}); }

std::string Utf8StreamCursor::next(std::string_view text, bool finished) {
  const std::size_t end = std::max(sent_, finished ? text.size() : complete_utf8_prefix(text));
  std::string piece(text.substr(std::min(sent_, text.size()), end - sent_));
  sent_ = end;
  return piece;
}

std::size_t complete_utf8_prefix(std::string_view text) {
  const std::size_t look = std::min<std::size_t>(3, text.size());
  for (std::size_t back = 1; back <= look; ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const std::size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return length > back ? text.size() - back : text.size();
  }
  return text.size();
}

}  // namespace podserve
