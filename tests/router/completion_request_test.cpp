// parse_completion_request and parse_chat_completion_request: defaults, both prompt forms, the
// chat template, and each rejection names its field.
#include "router/completion_request.h"

#include <string>
#include <variant>
#include <vector>

#include "core/hf_tokenizer.h"
#include "core/hf_tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace podserve {
namespace {

const CompletionLimits kLimits{.served_model_name = "tiny",
                               .vocab_size = 512,
                               .max_model_len = 64,
                               .max_tokens_limit = 32,
                               .bos_token_id = 256};

TEST(CompletionRequestTest, TextPromptGetsBosAndDefaults) {
  auto parsed = parse_completion_request(R"({"prompt": "hi"})", kLimits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed));
  const auto& request = std::get<CompletionRequest>(parsed);
  EXPECT_EQ(request.prompt, (std::vector<TokenId>{256, 'h', 'i'}));
  EXPECT_EQ(request.sampling.max_tokens, 16);
  EXPECT_FLOAT_EQ(request.sampling.temperature, 1.0f);
  EXPECT_FALSE(request.has_seed);
  EXPECT_FALSE(request.stream);
}

TEST(CompletionRequestTest, CheckpointSamplingDefaultsApplyWhenLeftOut) {
  CompletionLimits limits = kLimits;
  limits.max_model_len = 512;  // room for the chat layout
  limits.defaults.temperature = 0.6f;
  limits.defaults.top_p = 0.9f;
  for (const bool chat : {false, true}) {
    const std::string omitted =
        chat ? R"({"messages": [{"role": "user", "content": "hi"}]})" : R"({"prompt": "hi"})";
    auto parsed = chat ? parse_chat_completion_request(omitted, limits)
                       : parse_completion_request(omitted, limits);
    ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed));
    EXPECT_FLOAT_EQ(std::get<CompletionRequest>(parsed).sampling.temperature, 0.6f);
    EXPECT_FLOAT_EQ(std::get<CompletionRequest>(parsed).sampling.top_p, 0.9f);
  }
  auto given =
      parse_completion_request(R"({"prompt": "hi", "temperature": 0, "top_p": 1})", limits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(given));
  EXPECT_FLOAT_EQ(std::get<CompletionRequest>(given).sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(std::get<CompletionRequest>(given).sampling.top_p, 1.0f);
}

TEST(CompletionRequestTest, TokenPromptAndAllParameters) {
  auto parsed = parse_completion_request(
      R"({"model": "tiny", "prompt": [5, 511, 0], "max_tokens": 32, "temperature": 0,
          "top_p": 0.5, "seed": 18446744073709551615, "ignore_eos": true, "stream": true,
          "n": 1, "stop": null, "echo": false, "stream_options": {"include_usage": true}})",
      kLimits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed))
      << std::get<ApiError>(parsed).message;
  const auto& request = std::get<CompletionRequest>(parsed);
  EXPECT_EQ(request.prompt, (std::vector<TokenId>{5, 511, 0}));
  EXPECT_EQ(request.sampling.max_tokens, 32);
  EXPECT_FLOAT_EQ(request.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(request.sampling.top_p, 0.5f);
  EXPECT_EQ(request.sampling.seed, 18446744073709551615ull);
  EXPECT_TRUE(request.has_seed);
  EXPECT_TRUE(request.sampling.ignore_eos);
  EXPECT_TRUE(request.stream);
  EXPECT_TRUE(request.include_usage);
}

TEST(CompletionRequestTest, StopIsAStringOrUpToFourStrings) {
  auto one = parse_completion_request(R"({"prompt": "a", "stop": "\n\n"})", kLimits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(one));
  EXPECT_EQ(std::get<CompletionRequest>(one).stop, (std::vector<std::string>{"\n\n"}));
  auto four =
      parse_completion_request(R"({"prompt": "a", "stop": ["x", "yz", "END", "."]})", kLimits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(four));
  EXPECT_EQ(std::get<CompletionRequest>(four).stop.size(), 4u);
  for (const char* none : {R"({"prompt": "a", "stop": null})", R"({"prompt": "a", "stop": []})"}) {
    auto parsed = parse_completion_request(none, kLimits);
    ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed)) << none;
    EXPECT_TRUE(std::get<CompletionRequest>(parsed).stop.empty()) << none;
  }
}

struct RejectCase {
  const char* name;
  const char* body;
  int http_status;
  const char* param;
};

class CompletionRejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(CompletionRejectTest, RejectsWithOpenAiError) {
  auto parsed = parse_completion_request(GetParam().body, kLimits);
  ASSERT_TRUE(std::holds_alternative<ApiError>(parsed));
  const ApiError& error = std::get<ApiError>(parsed);
  EXPECT_EQ(error.http_status, GetParam().http_status);
  EXPECT_EQ(error.param, GetParam().param);
  EXPECT_FALSE(error.message.empty());
  const auto body = nlohmann::json::parse(api_error_body(error));
  EXPECT_EQ(body["error"]["message"], error.message);
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CompletionRejectTest,
    ::testing::Values(
        RejectCase{"NotJson", R"({"prompt": )", 400, ""},
        RejectCase{"NotAnObject", R"([1, 2])", 400, ""},
        RejectCase{"MissingPrompt", R"({"max_tokens": 4})", 400, "prompt"},
        RejectCase{"EmptyPrompt", R"({"prompt": ""})", 400, "prompt"},
        RejectCase{"PromptWrongType", R"({"prompt": 12})", 400, "prompt"},
        RejectCase{"TokenOutOfVocab", R"({"prompt": [1, 512]})", 400, "prompt"},
        RejectCase{"NegativeToken", R"({"prompt": [-1]})", 400, "prompt"},
        RejectCase{"BatchedPrompts", R"({"prompt": ["a", "b"]})", 400, "prompt"},
        RejectCase{"MaxTokensZero", R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens"},
        RejectCase{"MaxTokensTooLarge", R"({"prompt": "a", "max_tokens": 33})", 400, "max_tokens"},
        RejectCase{"MaxTokensFloat", R"({"prompt": "a", "max_tokens": 1.5})", 400, "max_tokens"},
        RejectCase{"TemperatureTooHigh", R"({"prompt": "a", "temperature": 2.5})", 400,
                   "temperature"},
        RejectCase{"TopPZero", R"({"prompt": "a", "top_p": 0})", 400, "top_p"},
        RejectCase{"SeedNegative", R"({"prompt": "a", "seed": -3})", 400, "seed"},
        RejectCase{"StreamNotBool", R"({"prompt": "a", "stream": "yes"})", 400, "stream"},
        RejectCase{"UnknownField", R"({"prompt": "a", "max_token": 3})", 400, "max_token"},
        RejectCase{"NGreaterThanOne", R"({"prompt": "a", "n": 2})", 400, "n"},
        RejectCase{"FiveStops", R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})", 400,
                   "stop"},
        RejectCase{"EmptyStopString", R"({"prompt": "a", "stop": ["a", ""]})", 400, "stop"},
        RejectCase{"StopNotString", R"({"prompt": "a", "stop": [1]})", 400, "stop"},
        RejectCase{"ContextTooLong", R"({"prompt": "0123456789012345678901234567890123456789",
                                         "max_tokens": 30})",
                   400, "prompt"},
        RejectCase{"WrongModel", R"({"model": "gpt-4", "prompt": "a"})", 404, "model"}),
    [](const ::testing::TestParamInfo<RejectCase>& info) { return info.param.name; });

// The fields both endpoints take: each accepted value is applied the same way by both, and each
// rejected value is rejected by both naming the field.
struct CommonFieldCase {
  const char* name;
  const char* field;
  const char* accepted;  // JSON; nullptr when no value is accepted
  bool (*applied)(const CompletionRequest& request);
  const char* rejected;  // JSON; nullptr when every value is accepted
  int http_status;
  const char* code;
};

class CommonFieldTest : public ::testing::TestWithParam<CommonFieldCase> {
 protected:
  // The same field in a completion body and in a chat body.
  using Parsed = std::vector<std::variant<CompletionRequest, ApiError>>;

  // Room for the chat template's prompt.
  static CompletionLimits limits() {
    CompletionLimits limits = kLimits;
    limits.max_model_len = 512;
    return limits;
  }

  static Parsed parse_both(const char* value) {
    nlohmann::json completion = {{"prompt", "a"}};
    nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", "x"}}}}};
    completion[GetParam().field] = nlohmann::json::parse(value);
    chat[GetParam().field] = nlohmann::json::parse(value);
    return {parse_completion_request(completion.dump(), limits()),
            parse_chat_completion_request(chat.dump(), limits())};
  }
};

TEST_P(CommonFieldTest, BothEndpointsApplyAndRejectItAlike) {
  const CommonFieldCase& c = GetParam();
  for (const auto& parsed : c.accepted == nullptr ? Parsed{} : parse_both(c.accepted)) {
    ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed))
        << std::get<ApiError>(parsed).message;
    EXPECT_TRUE(c.applied(std::get<CompletionRequest>(parsed))) << c.accepted;
  }
  if (c.rejected == nullptr) return;
  for (const auto& parsed : parse_both(c.rejected)) {
    ASSERT_TRUE(std::holds_alternative<ApiError>(parsed)) << c.rejected;
    const ApiError& error = std::get<ApiError>(parsed);
    EXPECT_EQ(error.http_status, c.http_status);
    EXPECT_EQ(error.param, c.field);
    EXPECT_EQ(error.code, c.code);
    EXPECT_NE(error.message.find(c.field), std::string::npos) << error.message;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fields, CommonFieldTest,
    ::testing::Values(
        CommonFieldCase{"Model", "model", R"("tiny")",
                        [](const CompletionRequest&) { return true; }, R"("other")", 404,
                        "model_not_found"},
        CommonFieldCase{"ModelNotString", "model", nullptr,
                        [](const CompletionRequest&) { return true; }, "null", 400, "invalid_type"},
        CommonFieldCase{"MaxTokens", "max_tokens", "8",
                        [](const CompletionRequest& r) { return r.sampling.max_tokens == 8; }, "0",
                        400, "invalid_value"},
        CommonFieldCase{"MaxCompletionTokens", "max_completion_tokens", "9",
                        [](const CompletionRequest& r) { return r.sampling.max_tokens == 9; },
                        R"("9")", 400, "invalid_type"},
        CommonFieldCase{"Temperature", "temperature", "0.25",
                        [](const CompletionRequest& r) { return r.sampling.temperature == 0.25f; },
                        "-0.5", 400, "invalid_value"},
        CommonFieldCase{"TopP", "top_p", "0.5",
                        [](const CompletionRequest& r) { return r.sampling.top_p == 0.5f; }, "1.5",
                        400, "invalid_value"},
        CommonFieldCase{
            "Seed", "seed", "7",
            [](const CompletionRequest& r) { return r.has_seed && r.sampling.seed == 7; }, "2.5",
            400, "invalid_type"},
        CommonFieldCase{"SeedNull", "seed", "null",
                        [](const CompletionRequest& r) { return !r.has_seed; }, nullptr, 0, ""},
        CommonFieldCase{"IgnoreEos", "ignore_eos", "true",
                        [](const CompletionRequest& r) { return r.sampling.ignore_eos; }, "null",
                        400, "invalid_type"},
        CommonFieldCase{"Stream", "stream", "true",
                        [](const CompletionRequest& r) { return r.stream; }, "1", 400,
                        "invalid_type"},
        CommonFieldCase{"StreamOptions", "stream_options", R"({"include_usage": true})",
                        [](const CompletionRequest& r) { return r.include_usage; },
                        R"({"include_usage": 1})", 400, "invalid_type"},
        CommonFieldCase{"StreamOptionsNull", "stream_options", "null",
                        [](const CompletionRequest& r) { return !r.include_usage; }, "[]", 400,
                        "invalid_type"},
        CommonFieldCase{"User", "user", R"("someone")",
                        [](const CompletionRequest&) { return true; }, nullptr, 0, ""},
        CommonFieldCase{"N", "n", "1", [](const CompletionRequest&) { return true; }, "2", 400,
                        "unsupported_value"},
        CommonFieldCase{"PresencePenalty", "presence_penalty", "0",
                        [](const CompletionRequest&) { return true; }, "0.5", 400,
                        "unsupported_value"},
        CommonFieldCase{"FrequencyPenalty", "frequency_penalty", "null",
                        [](const CompletionRequest&) { return true; }, "-1", 400,
                        "unsupported_value"},
        CommonFieldCase{"Stop", "stop", R"(["\u00e9", "ab"])",
                        [](const CompletionRequest& r) {
                          return r.stop == std::vector<std::string>{"\xc3\xa9", "ab"};
                        },
                        R"(["ab", ""])", 400, "invalid_value"},
        CommonFieldCase{"StopWrongType", "stop", "[]",
                        [](const CompletionRequest& r) { return r.stop.empty(); }, "5", 400,
                        "invalid_type"},
        CommonFieldCase{"StopEmptyStringIsNone", "stop", R"("")",
                        [](const CompletionRequest& r) { return r.stop.empty(); }, R"([""])", 400,
                        "invalid_value"},
        CommonFieldCase{"LogitBias", "logit_bias", "{}",
                        [](const CompletionRequest&) { return true; }, R"({"5": 1})", 400,
                        "unsupported_value"}),
    [](const ::testing::TestParamInfo<CommonFieldCase>& info) { return info.param.name; });

std::vector<TokenId> bos_and_bytes(const std::string& text) {
  std::vector<TokenId> ids{256};
  for (const unsigned char c : text) ids.push_back(c);
  return ids;
}

TEST(ChatCompletionRequestTest, MessagesRenderThroughTheTemplateAfterBos) {
  const CompletionLimits limits{.served_model_name = "tiny",
                                .vocab_size = 512,
                                .max_model_len = 512,
                                .max_tokens_limit = 32,
                                .bos_token_id = 256};
  auto parsed = parse_chat_completion_request(
      R"({"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}],
           "name": "ann"}],
          "max_completion_tokens": 7, "temperature": 0, "stream": true, "logprobs": false,
          "tools": [], "response_format": {"type": "text"}})",
      limits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed))
      << std::get<ApiError>(parsed).message;
  const auto& request = std::get<CompletionRequest>(parsed);
  EXPECT_TRUE(request.chat);
  EXPECT_TRUE(request.stream);
  EXPECT_EQ(request.sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(request.sampling.temperature, 0.0f);
  const std::string rendered =
      "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(render_chat_prompt({{"system", "Be brief."}, {"user", "Hi!"}}), rendered);
  EXPECT_EQ(request.prompt, bos_and_bytes(rendered));
  // The same prompt through /v1/completions: a client can check one against the other.
  auto as_completion = parse_completion_request(
      nlohmann::json{{"prompt", rendered}, {"max_tokens", 7}}.dump(), limits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(as_completion));
  EXPECT_EQ(std::get<CompletionRequest>(as_completion).prompt, request.prompt);
  EXPECT_FALSE(std::get<CompletionRequest>(as_completion).chat);
}

// Without max_tokens a chat request may fill the context, within the router's limit.
TEST(ChatCompletionRequestTest, NoMaxTokensMeansUpToTheContext) {
  const std::string user = R"({"messages": [{"role": "user", "content": "x"}]})";
  const std::size_t prompt = 1 + render_chat_prompt({{"user", "x"}}).size();
  CompletionLimits roomy = kLimits;
  roomy.max_model_len = static_cast<std::int32_t>(prompt) + 100;
  auto parsed = parse_chat_completion_request(user, roomy);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed));
  EXPECT_EQ(std::get<CompletionRequest>(parsed).sampling.max_tokens, roomy.max_tokens_limit);
  CompletionLimits tight = kLimits;
  tight.max_model_len = static_cast<std::int32_t>(prompt) + 5;
  parsed = parse_chat_completion_request(user, tight);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed));
  EXPECT_EQ(std::get<CompletionRequest>(parsed).sampling.max_tokens, 5);
  tight.max_model_len = static_cast<std::int32_t>(prompt);
  parsed = parse_chat_completion_request(user, tight);
  ASSERT_TRUE(std::holds_alternative<ApiError>(parsed)) << "no room for one token";
  EXPECT_EQ(std::get<ApiError>(parsed).code, "context_length_exceeded");
}

class ChatRejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(ChatRejectTest, RejectsWithOpenAiError) {
  auto parsed = parse_chat_completion_request(GetParam().body, kLimits);
  ASSERT_TRUE(std::holds_alternative<ApiError>(parsed));
  const ApiError& error = std::get<ApiError>(parsed);
  EXPECT_EQ(error.http_status, GetParam().http_status);
  EXPECT_EQ(error.param, GetParam().param);
  EXPECT_FALSE(error.message.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ChatRejectTest,
    ::testing::Values(
        RejectCase{"MissingMessages", R"({"max_tokens": 4})", 400, "messages"},
        RejectCase{"EmptyMessages", R"({"messages": []})", 400, "messages"},
        RejectCase{"MessagesNotArray", R"({"messages": "hi"})", 400, "messages"},
        RejectCase{"MessageNotObject", R"({"messages": ["hi"]})", 400, "messages[0]"},
        RejectCase{"UnknownRole", R"({"messages": [{"role": "tool", "content": "x"}]})", 400,
                   "messages[0].role"},
        RejectCase{"MissingRole", R"({"messages": [{"content": "x"}]})", 400, "messages[0].role"},
        RejectCase{"MissingContent", R"({"messages": [{"role": "user"}]})", 400,
                   "messages[0].content"},
        RejectCase{"ImagePart",
                   R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", 400,
                   "messages[0].content[0]"},
        RejectCase{"UnknownMessageField",
                   R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})", 400,
                   "messages[0].tool_calls"},
        RejectCase{
            "Tools",
            R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
            400, "tools"},
        RejectCase{"Logprobs",
                   R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", 400,
                   "logprobs"},
        RejectCase{
            "JsonMode",
            R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
            400, "response_format"},
        RejectCase{"PromptField",
                   R"({"messages": [{"role": "user", "content": "x"}], "prompt": "y"})", 400,
                   "prompt"},
        RejectCase{"ContextTooLong",
                   R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 30})", 400,
                   "messages"},
        RejectCase{"WrongModel",
                   R"({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})", 404,
                   "model"}),
    [](const ::testing::TestParamInfo<RejectCase>& info) { return info.param.name; });

// The chat form of /v1/tokenize gives the prompt a chat completion of the same messages gets.
TEST(CompletionRequestTest, TokenizeChatMessagesAsChatCompletionsDo) {
  CompletionLimits limits = kLimits;
  limits.max_model_len = 512;
  const std::string messages = R"([{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "hi"}])";
  auto chat = parse_chat_completion_request(R"({"messages": )" + messages + "}", limits);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(chat));
  auto tokenized = parse_tokenize_request(R"({"messages": )" + messages + "}", limits);
  ASSERT_TRUE(std::holds_alternative<std::vector<TokenId>>(tokenized));
  EXPECT_EQ(std::get<std::vector<TokenId>>(tokenized), std::get<CompletionRequest>(chat).prompt);
  auto without = parse_tokenize_request(
      R"({"messages": )" + messages + R"(, "add_generation_prompt": false})", limits);
  ASSERT_TRUE(std::holds_alternative<std::vector<TokenId>>(without));
  const std::string header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(std::get<std::vector<TokenId>>(without).size() + header.size(),
            std::get<CompletionRequest>(chat).prompt.size());
}

// With a checkpoint tokenizer, a text prompt gets the special tokens that tokenizer adds (as
// transformers does): Llama-3's BOS, nothing for Qwen2.
TEST(CompletionRequestTest, CheckpointTokenizerDecidesTheBos) {
  for (const std::string name : {"tokenizer", "tokenizer-qwen2"}) {
    auto tokenizer = HfTokenizer::load(PODSERVE_SOURCE_DIR "/tests/data/hf/" + name);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
    CompletionLimits limits = kLimits;
    limits.vocab_size = 1024;
    limits.bos_token_id = 0;
    limits.tokenizer = tokenizer->get();
    auto parsed = parse_completion_request(R"({"prompt": "Hello world"})", limits);
    ASSERT_TRUE(std::holds_alternative<CompletionRequest>(parsed));
    const auto& prompt = std::get<CompletionRequest>(parsed).prompt;
    EXPECT_EQ(prompt, (*tokenizer)->encode_with_special_tokens("Hello world")) << name;
    EXPECT_EQ(prompt.size(), (*tokenizer)->encode("Hello world").size() + (name == "tokenizer"))
        << name;
  }
}

TEST(CompletionRequestTest, TokenizeAndDetokenizeRequests) {
  auto with_bos = parse_tokenize_request(R"({"prompt": "hi", "model": "tiny"})", kLimits);
  ASSERT_TRUE(std::holds_alternative<std::vector<TokenId>>(with_bos));
  EXPECT_EQ(std::get<std::vector<TokenId>>(with_bos), (std::vector<TokenId>{256, 'h', 'i'}));
  auto bare = parse_tokenize_request(R"({"prompt": "hi", "add_special_tokens": false})", kLimits);
  ASSERT_TRUE(std::holds_alternative<std::vector<TokenId>>(bare));
  EXPECT_EQ(std::get<std::vector<TokenId>>(bare), (std::vector<TokenId>{'h', 'i'}));
  auto ids = parse_detokenize_request(R"({"tokens": [104, 105]})", kLimits);
  ASSERT_TRUE(std::holds_alternative<std::vector<TokenId>>(ids));
  EXPECT_EQ(std::get<std::vector<TokenId>>(ids), (std::vector<TokenId>{104, 105}));

  const auto error = [](const auto& parsed) { return std::get<ApiError>(parsed); };
  EXPECT_EQ(error(parse_tokenize_request(R"({})", kLimits)).param, "prompt");
  EXPECT_EQ(
      error(parse_tokenize_request(
                R"({"prompt": "x", "messages": [{"role": "user", "content": "x"}]})", kLimits))
          .param,
      "messages");
  EXPECT_EQ(
      error(parse_tokenize_request(R"({"messages": [{"role": "robot", "content": "x"}]})", kLimits))
          .param,
      "messages[0].role");
  EXPECT_EQ(error(parse_tokenize_request(R"({"prompt": 3})", kLimits)).param, "prompt");
  EXPECT_EQ(error(parse_tokenize_request(R"({"prompt": "x", "other": 1})", kLimits)).param,
            "other");
  EXPECT_EQ(error(parse_tokenize_request(R"({"prompt": "x", "model": "m"})", kLimits)).http_status,
            404);
  EXPECT_EQ(error(parse_detokenize_request(R"({"tokens": [512]})", kLimits)).param, "tokens");
  EXPECT_EQ(error(parse_detokenize_request(R"({"tokens": "ab"})", kLimits)).param, "tokens");
  EXPECT_EQ(error(parse_detokenize_request(R"({})", kLimits)).param, "tokens");
}

}  // namespace
}  // namespace podserve
