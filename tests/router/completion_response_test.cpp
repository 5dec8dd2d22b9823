// The response builders: the fields of each object kind (completion / chat, response / stream
// chunk), the role only in a chat stream's first delta, usage only in the final chunk, SSE
// framing, and text that is empty, multi-byte UTF-8, or not UTF-8 at all.
#include "router/completion_response.h"

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

}  // namespace
}  // namespace podserve
