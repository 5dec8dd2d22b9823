// The response builders: the fields of each object kind (completion / chat, response / stream
// chunk), the role only in a chat stream's first delta, usage only in the final chunk, SSE
// framing, and text that is empty, multi-byte UTF-8, or not UTF-8 at all.
#include "router/completion_response.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace podserve {
namespace {

using nlohmann::json;

// The JSON of one "data: {...}\n\n" event.
json event_json(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n") << event;
  return json::parse(event.substr(6, event.size() - 8));
}

const std::vector<TokenId> kIds{72, 105, 2};

TEST(CompletionResponseTest, CompletionBodyCarriesTextIdsReasonAndUsage) {
  const ResponseHeader header{.id = 42, .chat = false, .created_unix_s = 1700000000, .model = "m"};
  const json body = json::parse(completion_response_body(
      header, "Hi", kIds, FinishReason::kStop, {.prompt_tokens = 5, .completion_tokens = 3}));
  EXPECT_EQ(body["id"], "cmpl-42");
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["created"], 1700000000);
  EXPECT_EQ(body["model"], "m");
  ASSERT_EQ(body["choices"].size(), 1u);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["text"], "Hi");
  EXPECT_FALSE(choice.contains("message"));
  EXPECT_EQ(choice["token_ids"], json(kIds));
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ(choice["finish_reason"], "stop");
  EXPECT_EQ(body["usage"],
            json({{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
}

TEST(CompletionResponseTest, ChatBodyHasTheAssistantMessage) {
  const ResponseHeader header{.id = 7, .chat = true, .created_unix_s = 3, .model = "tiny"};
  const json body = json::parse(completion_response_body(
      header, "ok", kIds, FinishReason::kLength, {.prompt_tokens = 10, .completion_tokens = 3}));
  EXPECT_EQ(body["id"], "chatcmpl-7");
  EXPECT_EQ(body["object"], "chat.completion");
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["message"], json({{"role", "assistant"}, {"content", "ok"}}));
  EXPECT_FALSE(choice.contains("text"));
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["total_tokens"], 13);
}

TEST(CompletionResponseTest, CompletionChunksCarryUsageOnlyWhenFinished) {
  const ResponseHeader header{.id = 9, .chat = false, .created_unix_s = 5, .model = "m"};
  const json middle =
      event_json(stream_chunk_event(header, /*first_chunk=*/true, "a", std::span(kIds).first(1),
                                    std::nullopt, {.prompt_tokens = 4, .completion_tokens = 1}));
  EXPECT_EQ(middle["object"], "text_completion");
  EXPECT_EQ(middle["id"], "cmpl-9");
  EXPECT_EQ(middle["choices"][0]["text"], "a");
  EXPECT_EQ(middle["choices"][0]["token_ids"], json({72}));
  EXPECT_TRUE(middle["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(middle.contains("usage"));
  const json last = event_json(stream_chunk_event(header, /*first_chunk=*/false, "",
                                                  std::span(kIds).subspan(2), FinishReason::kStop,
                                                  {.prompt_tokens = 4, .completion_tokens = 3}));
  EXPECT_EQ(last["choices"][0]["text"], "");
  EXPECT_EQ(last["choices"][0]["token_ids"], json({2}));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["usage"],
            json({{"prompt_tokens", 4}, {"completion_tokens", 3}, {"total_tokens", 7}}));
}

TEST(CompletionResponseTest, ChatChunksNameTheRoleOnlyInTheFirstDelta) {
  const ResponseHeader header{.id = 1, .chat = true, .created_unix_s = 5, .model = "m"};
  const json first = event_json(stream_chunk_event(header, /*first_chunk=*/true, "H",
                                                   std::span(kIds).first(1), std::nullopt, {}));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["id"], "chatcmpl-1");
  EXPECT_EQ(first["choices"][0]["delta"], json({{"role", "assistant"}, {"content", "H"}}));
  EXPECT_FALSE(first["choices"][0].contains("message"));
  const json next = event_json(stream_chunk_event(header, /*first_chunk=*/false, "i",
                                                  std::span(kIds).subspan(1, 1), std::nullopt, {}));
  EXPECT_EQ(next["choices"][0]["delta"], json({{"content", "i"}}));
}

TEST(CompletionResponseTest, TextIsUtf8WithBadBytesReplaced) {
  const ResponseHeader header{.id = 2, .chat = false, .created_unix_s = 0, .model = "m"};
  const std::string unicode = "caf\xc3\xa9 \xe2\x9c\x93";
  EXPECT_EQ(json::parse(completion_response_body(header, unicode, kIds, FinishReason::kStop,
                                                 {}))["choices"][0]["text"],
            unicode);
  // A multi-byte character cut after its first byte, as a stream chunk can end.
  const json cut = event_json(
      stream_chunk_event(header, false, "ok\xc3", std::span(kIds).first(1), std::nullopt, {}));
  EXPECT_EQ(cut["choices"][0]["text"], "ok\xef\xbf\xbd");  // U+FFFD
  EXPECT_EQ(cut["choices"][0]["token_ids"], json({72}));   // ids stay exact
}

TEST(CompletionResponseTest, StreamErrorAndDoneEvents) {
  const ApiError error{
      .http_status = 503, .message = "gone", .type = "server_error", .code = "request_aborted"};
  const json body = event_json(stream_error_event(error));
  EXPECT_EQ(body, json::parse(api_error_body(error)));
  EXPECT_EQ(body["error"]["code"], "request_aborted");
  EXPECT_EQ(kStreamDoneEvent, "data: [DONE]\n\n");
}

TEST(CompletionResponseTest, ModelsAndHealthBodies) {
  const json models = json::parse(models_body("tiny", 123, 2048));
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0], json({{"id", "tiny"},
                                     {"object", "model"},
                                     {"created", 123},
                                     {"owned_by", "podserve"},
                                     {"max_model_len", 2048}}));
  EXPECT_EQ(json::parse(health_body("starting", 1, 3)),
            json({{"status", "starting"}, {"instances_ready", 1}, {"instances", 3}}));
}

TEST(CompletionResponseTest, CompleteUtf8Prefix) {
  EXPECT_EQ(complete_utf8_prefix(""), 0u);
  EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(complete_utf8_prefix("a\xC3"), 1u);              // é's lead byte alone
  EXPECT_EQ(complete_utf8_prefix("a\xC3\xA9"), 3u);          // é whole
  EXPECT_EQ(complete_utf8_prefix("a\xF0\x9F\x98"), 1u);      // 3 of 😀's 4 bytes
  EXPECT_EQ(complete_utf8_prefix("a\xF0\x9F\x98\x80"), 5u);  // 😀 whole
  EXPECT_EQ(complete_utf8_prefix("a\x80\x80\x80\x80"), 5u);  // not UTF-8: sent as it is
}

// Random UTF-8 text (1- to 4-byte characters) revealed a random number of bytes at a time, as
// tokens of a byte-level BPE vocabulary reveal it: every piece is whole characters, and the
// pieces add up to the text.
TEST(CompletionResponseTest, StreamedPiecesNeverSplitACharacter) {
  const std::vector<std::string> chars = {"a", " ", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
                                          "\n"};
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int length = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < length; ++i) text += chars[rng() % chars.size()];
    Utf8StreamCursor cursor;
    std::string joined;
    for (std::size_t shown = 0; shown < text.size();) {
      shown = std::min(text.size(), shown + 1 + rng() % 4);
      const bool finished = shown == text.size() && rng() % 2 == 0;
      const std::string piece = cursor.next(std::string_view(text).substr(0, shown), finished);
      EXPECT_EQ(complete_utf8_prefix(piece), piece.size()) << "piece ends inside a character";
      if (!piece.empty()) {
        const auto lead = static_cast<unsigned char>(piece[0]);
        EXPECT_NE(lead & 0xC0, 0x80) << "piece starts inside a character";
      }
      joined += piece;
    }
    joined += cursor.next(text, true);
    EXPECT_EQ(joined, text);
  }
}

TEST(CompletionResponseTest, TokenizeAndDetokenizeBodies) {
  const std::vector<TokenId> ids{1, 2, 3};
  const json tokenized = json::parse(tokenize_body(ids, 4096));
  EXPECT_EQ(tokenized["count"], 3);
  EXPECT_EQ(tokenized["max_model_len"], 4096);
  EXPECT_EQ(tokenized["tokens"].get<std::vector<TokenId>>(), ids);
  EXPECT_TRUE(tokenized["token_strs"].is_null());
  EXPECT_EQ(json::parse(detokenize_body("h\xC3\xA9"))["prompt"], "h\xC3\xA9");
}

}  // namespace
}  // namespace podserve
