#include "router/completion_request.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

#include "core/tokenizer.h"
#include "nlohmann/json.hpp"

namespace podserve {
namespace {

using nlohmann::json;

ApiError invalid(std::string param, std::string message, std::string code = "invalid_value") {
  return ApiError{.http_status = 400,
                  .message = std::move(message),
                  .type = "invalid_request_error",
                  .param = std::move(param),
                  .code = std::move(code)};
}

ApiError wrong_type(const std::string& param, const char* expected) {
  return invalid(param, "'" + param + "' must be " + expected, "invalid_type");
}

ApiError unsupported(const std::string& param, const char* allowed) {
  return invalid(param, "'" + param + "' is not supported by podserve except as " + allowed,
                 "unsupported_value");
}

bool is_null_or_empty(const json& value) {
  return value.is_null() ||
         ((value.is_array() || value.is_object() || value.is_string()) && value.empty());
}

// Token ids from an array prompt, or an error naming the first bad element.
std::variant<std::vector<TokenId>, ApiError> token_ids_prompt(const json& prompt,
                                                              std::int32_t vocab_size) {
  std::vector<TokenId> ids;
  ids.reserve(prompt.size());
  for (std::size_t i = 0; i < prompt.size(); ++i) {
    const json& element = prompt[i];
    if (element.is_string() || element.is_array()) {
      return invalid("prompt", "batched prompts (an array of prompts) are not supported",
                     "unsupported_value");
    }
    if (!element.is_number_unsigned() ||
        element.get<std::uint64_t>() >= static_cast<std::uint64_t>(vocab_size)) {
      return invalid("prompt", "prompt[" + std::to_string(i) + "] must be a token id in [0, " +
                                   std::to_string(vocab_size) + ")");
    }
    ids.push_back(static_cast<TokenId>(element.get<std::uint64_t>()));
  }
  return ids;
}

}  // namespace

std::string api_error_body(const ApiError& error) {
  const json body = {{"error",
                      {{"message", error.message},
                       {"type", error.type},
                       {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                       {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// The parsed body's object, or the error for a body that is not a JSON object.
std::variant<json, ApiError> parse_body(std::string_view body) {
  json document = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return invalid("", "the request body is not valid JSON", "invalid_json");
  }
  if (!document.is_object()) return invalid("", "the request body must be a JSON object");
  return document;
}

constexpr std::size_t kMaxStopStrings = 4;  // OpenAI's limit

// Checks one field's value and applies it to the request; nullopt when accepted.
using FieldRule = std::optional<ApiError> (*)(const std::string& key, const json& value,
                                              const CompletionLimits& limits,
                                              CompletionRequest& request);

struct CommonField {
  std::string_view key;
  FieldRule rule;
};

std::optional<ApiError> model_rule(const std::string& key, const json& value,
                                   const CompletionLimits& limits, CompletionRequest&) {
  if (!value.is_string()) return wrong_type(key, "a string");
  if (value.get<std::string>() == limits.served_model_name) return std::nullopt;
  return ApiError{.http_status = 404,
                  .message = "the model '" + value.get<std::string>() +
                             "' does not exist; this server serves '" + limits.served_model_name +
                             "'",
                  .param = key,
                  .code = "model_not_found"};
}

std::optional<ApiError> max_tokens_rule(const std::string& key, const json& value,
                                        const CompletionLimits& limits,
                                        CompletionRequest& request) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number_integer()) return wrong_type(key, "an integer");
  const std::int64_t max_tokens = value.get<std::int64_t>();
  if (max_tokens < 1 || max_tokens > limits.max_tokens_limit) {
    return invalid(key, "'" + key + "' must be in [1, " + std::to_string(limits.max_tokens_limit) +
                            "], got " + std::to_string(max_tokens));
  }
  request.sampling.max_tokens = static_cast<std::int32_t>(max_tokens);
  return std::nullopt;
}

// A sampling number (null: the default) stored in `field` when `in_range` accepts it.
std::optional<ApiError> sampling_number(const std::string& key, const json& value,
                                        bool (*in_range)(double), const char* range, float& field) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number()) return wrong_type(key, "a number");
  const double number = value.get<double>();
  if (!in_range(number)) return invalid(key, "'" + key + "' must be in " + range);
  field = static_cast<float>(number);
  return std::nullopt;
}

std::optional<ApiError> temperature_rule(const std::string& key, const json& value,
                                         const CompletionLimits&, CompletionRequest& request) {
  return sampling_number(
      key, value, [](double t) { return t >= 0.0 && t <= 2.0; }, "[0, 2]",
      request.sampling.temperature);
}

std::optional<ApiError> top_p_rule(const std::string& key, const json& value,
                                   const CompletionLimits&, CompletionRequest& request) {
  return sampling_number(
      key, value, [](double p) { return p > 0.0 && p <= 1.0; }, "(0, 1]", request.sampling.top_p);
}

std::optional<ApiError> seed_rule(const std::string& key, const json& value,
                                  const CompletionLimits&, CompletionRequest& request) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number_unsigned()) return wrong_type(key, "a non-negative integer");
  request.sampling.seed = value.get<std::uint64_t>();
  request.has_seed = true;
  return std::nullopt;
}

std::optional<ApiError> ignore_eos_rule(const std::string& key, const json& value,
                                        const CompletionLimits&, CompletionRequest& request) {
  if (!value.is_boolean()) return wrong_type(key, "a boolean");
  request.sampling.ignore_eos = value.get<bool>();
  return std::nullopt;
}

std::optional<ApiError> stream_rule(const std::string& key, const json& value,
                                    const CompletionLimits&, CompletionRequest& request) {
  if (!value.is_boolean()) return wrong_type(key, "a boolean");
  request.stream = value.get<bool>();
  return std::nullopt;
}

std::optional<ApiError> stream_options_rule(const std::string& key, const json& value,
                                            const CompletionLimits&, CompletionRequest& request) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_object()) return wrong_type(key, "an object");
  if (const auto usage = value.find("include_usage"); usage != value.end() && !usage->is_null()) {
    if (!usage->is_boolean()) return wrong_type(key, "an object whose include_usage is a boolean");
    request.include_usage = usage->get<bool>();
  }
  return std::nullopt;
}

// Accepted for client compatibility; users are not tracked.
std::optional<ApiError> ignored_rule(const std::string&, const json&, const CompletionLimits&,
                                     CompletionRequest&) {
  return std::nullopt;
}

std::optional<ApiError> only_one_rule(const std::string& key, const json& value,
                                      const CompletionLimits&, CompletionRequest&) {
  if (value.is_null() || (value.is_number_unsigned() && value.get<std::uint64_t>() == 1)) {
    return std::nullopt;
  }
  return unsupported(key, "1");
}

std::optional<ApiError> only_zero_rule(const std::string& key, const json& value,
                                       const CompletionLimits&, CompletionRequest&) {
  if (value.is_null() || (value.is_number() && value.get<double>() == 0.0)) return std::nullopt;
  return unsupported(key, "0");
}

std::optional<ApiError> only_null_or_empty_rule(const std::string& key, const json& value,
                                                const CompletionLimits&, CompletionRequest&) {
  if (is_null_or_empty(value)) return std::nullopt;
  return unsupported(key, "null or empty");
}

std::optional<ApiError> stop_rule(const std::string& key, const json& value,
                                  const CompletionLimits&, CompletionRequest& request) {
  // null, [] and "" all mean no stop string.
  if (is_null_or_empty(value) || (value.is_string() && value.get_ref<const std::string&>().empty()))
    return std::nullopt;
  const json strings = value.is_string() ? json::array({value}) : value;
  if (!strings.is_array() || strings.size() > kMaxStopStrings) {
    return wrong_type(key, "a string or an array of at most 4 strings");
  }
  for (const json& stop : strings) {
    if (!stop.is_string() || stop.get_ref<const std::string&>().empty()) {
      return invalid(key, "'stop' strings must be non-empty strings");
    }
    request.stop.push_back(stop.get<std::string>());
  }
  return std::nullopt;
}

// The fields both endpoints take, each with its rule.
constexpr CommonField kCommonFields[] = {
    {"model", model_rule},
    {"max_tokens", max_tokens_rule},
    {"max_completion_tokens", max_tokens_rule},
    {"temperature", temperature_rule},
    {"top_p", top_p_rule},
    {"seed", seed_rule},
    {"ignore_eos", ignore_eos_rule},
    {"stream", stream_rule},
    {"stream_options", stream_options_rule},
    {"user", ignored_rule},
    {"n", only_one_rule},
    {"presence_penalty", only_zero_rule},
    {"frequency_penalty", only_zero_rule},
    {"stop", stop_rule},
    {"logit_bias", only_null_or_empty_rule},
};

// A field both endpoints take: applied to `request` (true), not one of them (false), or an error.
std::variant<bool, ApiError> common_field(const std::string& key, const json& value,
                                          const CompletionLimits& limits,
                                          CompletionRequest& request) {
  const auto field = std::find_if(std::begin(kCommonFields), std::end(kCommonFields),
                                  [&key](const CommonField& f) { return f.key == key; });
  if (field == std::end(kCommonFields)) return false;
  if (std::optional<ApiError> error = field->rule(key, value, limits, request)) return *error;
  return true;
}

// The context-length check both endpoints end with.
std::variant<CompletionRequest, ApiError> within_context(CompletionRequest request,
                                                         const CompletionLimits& limits,
                                                         const char* prompt_param) {
  const std::int64_t total =
      static_cast<std::int64_t>(request.prompt.size()) + request.sampling.max_tokens;
  if (total > limits.max_model_len) {
    return invalid(prompt_param,
                   "this model's maximum context length is " +
                       std::to_string(limits.max_model_len) + " tokens; the request asks for " +
                       std::to_string(request.prompt.size()) + " prompt tokens + " +
                       std::to_string(request.sampling.max_tokens) + " max_tokens",
                   "context_length_exceeded");
  }
  return request;
}

void append_text(std::vector<TokenId>& ids, std::string_view text, const CompletionLimits& limits) {
  const std::vector<TokenId> text_ids = encode_text(text, limits);
  ids.insert(ids.end(), text_ids.begin(), text_ids.end());
}

// One message's content: a string, or an array of {"type": "text", "text": ...} parts.
std::variant<std::string, ApiError> message_content(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return wrong_type(param, "a string or an array of text parts");
  std::string text;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_param = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return invalid(part_param, "'" + part_param + "' must be {\"type\": \"text\", \"text\": ...}",
                     "unsupported_value");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace

std::vector<TokenId> prompt_ids(std::string_view text, const CompletionLimits& limits) {
  if (limits.tokenizer != nullptr) return limits.tokenizer->encode_with_special_tokens(text);
  std::vector<TokenId> ids{limits.bos_token_id};
  const std::vector<TokenId> bytes = ByteTokenizer::encode(text);
  ids.insert(ids.end(), bytes.begin(), bytes.end());
  return ids;
}

std::vector<TokenId> encode_text(std::string_view text, const CompletionLimits& limits) {
  if (limits.tokenizer != nullptr) return limits.tokenizer->encode(text);
  return ByteTokenizer::encode(text);
}

std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body,
                                                                   const CompletionLimits& limits) {
  auto parsed = parse_body(body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  const json& document = std::get<json>(parsed);

  CompletionRequest request;
  request.sampling.temperature = limits.defaults.temperature;
  request.sampling.top_p = limits.defaults.top_p;
  bool has_prompt = false;
  for (const auto& [key, value] : document.items()) {
    auto common = common_field(key, value, limits, request);
    if (auto* error = std::get_if<ApiError>(&common)) return *error;
    if (std::get<bool>(common)) continue;
    if (key == "prompt") {
      has_prompt = true;
      if (value.is_string()) {
        if (value.get_ref<const std::string&>().empty()) {
          return invalid(key, "'prompt' must not be empty");
        }
        request.prompt = prompt_ids(value.get_ref<const std::string&>(), limits);
      } else if (value.is_array()) {
        if (value.empty()) return invalid(key, "'prompt' must not be empty");
        auto ids = token_ids_prompt(value, limits.vocab_size);
        if (auto* error = std::get_if<ApiError>(&ids)) return *error;
        request.prompt = std::move(std::get<std::vector<TokenId>>(ids));
      } else {
        return wrong_type(key, "a string or an array of token ids");
      }
    } else if (key == "best_of") {
      if (!value.is_null() && !(value.is_number_unsigned() && value.get<std::uint64_t>() == 1)) {
        return unsupported(key, "1");
      }
    } else if (key == "echo") {
      if (!value.is_null() && !(value.is_boolean() && !value.get<bool>())) {
        return unsupported(key, "false");
      }
    } else if (key == "logprobs" || key == "suffix") {
      if (!value.is_null()) return unsupported(key, "null");
    } else {
      return invalid(key, "unknown field '" + key + "'", "unknown_parameter");
    }
  }
  if (!has_prompt) return invalid("prompt", "'prompt' is required", "missing_required_parameter");
  return within_context(std::move(request), limits, "prompt");
}

namespace {

constexpr char kAssistantHeader[] = "<|start_header_id|>assistant<|end_header_id|>\n\n";

// `messages`: a non-empty array of {role, content, name?}.
std::variant<std::vector<ChatMessage>, ApiError> parse_messages(const json& value) {
  const std::string key = "messages";
  std::vector<ChatMessage> messages;
  if (!value.is_array()) return wrong_type(key, "an array of messages");
  if (value.empty()) return invalid(key, "'messages' must not be empty");
  for (std::size_t i = 0; i < value.size(); ++i) {
    const json& message = value[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) return wrong_type(param, "an object");
    ChatMessage parsed_message;
    bool has_content = false;
    for (const auto& [field, field_value] : message.items()) {
      if (field == "role") {
        if (!field_value.is_string()) return wrong_type(param + ".role", "a string");
        parsed_message.role = field_value.get<std::string>();
        if (parsed_message.role != "system" && parsed_message.role != "developer" &&
            parsed_message.role != "user" && parsed_message.role != "assistant") {
          return invalid(param + ".role",
                         "'" + param + ".role' must be system, developer, user or assistant",
                         "unsupported_value");
        }
      } else if (field == "content") {
        auto content = message_content(field_value, param + ".content");
        if (auto* error = std::get_if<ApiError>(&content)) return *error;
        parsed_message.content = std::move(std::get<std::string>(content));
        has_content = true;
      } else if (field == "name") {
        if (!field_value.is_string()) return wrong_type(param + ".name", "a string");
        parsed_message.name = field_value.get<std::string>();
      } else {
        return invalid(param + "." + field, "unknown message field '" + field + "'",
                       "unknown_parameter");
      }
    }
    if (parsed_message.role.empty()) {
      return invalid(param + ".role", "'" + param + ".role' is required",
                     "missing_required_parameter");
    }
    if (!has_content) {
      return invalid(param + ".content", "'" + param + ".content' is required",
                     "missing_required_parameter");
    }
    messages.push_back(std::move(parsed_message));
  }
  return messages;
}

// The prompt ids of a chat: the checkpoint's template through its tokenizer, or BOS and the
// Llama-3 layout of render_chat_prompt.
std::variant<std::vector<TokenId>, ApiError> chat_prompt(const std::vector<ChatMessage>& messages,
                                                         bool add_generation_prompt,
                                                         const CompletionLimits& limits) {
  std::vector<TokenId> prompt;
  if (limits.chat != nullptr) {
    nlohmann::ordered_json template_messages = nlohmann::ordered_json::array();
    for (const ChatMessage& m : messages) {
      nlohmann::ordered_json message = {{"role", m.role}, {"content", m.content}};
      if (!m.name.empty()) message["name"] = m.name;
      template_messages.push_back(std::move(message));
    }
    Result<std::string> text = limits.chat->render(template_messages, add_generation_prompt);
    if (!text.ok()) return invalid("messages", text.status().message());
    append_text(prompt, *text, limits);  // BOS comes from the template, if it has one
  } else {
    prompt.push_back(limits.bos_token_id);
    std::string text = render_chat_prompt(messages);
    if (!add_generation_prompt)
      text.resize(text.size() - std::string_view(kAssistantHeader).size());
    append_text(prompt, text, limits);
  }
  return prompt;
}

}  // namespace

std::string render_chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const ChatMessage& message : messages) {
    text += "<|start_header_id|>" + message.role + "<|end_header_id|>\n\n" + message.content +
            "<|eot_id|>";
  }
  return text + kAssistantHeader;
}

std::variant<CompletionRequest, ApiError> parse_chat_completion_request(
    std::string_view body, const CompletionLimits& limits) {
  auto parsed = parse_body(body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  const json& document = std::get<json>(parsed);

  CompletionRequest request;
  request.sampling.temperature = limits.defaults.temperature;
  request.sampling.top_p = limits.defaults.top_p;
  std::vector<ChatMessage> messages;
  bool has_messages = false;
  for (const auto& [key, value] : document.items()) {
    auto common = common_field(key, value, limits, request);
    if (auto* error = std::get_if<ApiError>(&common)) return *error;
    if (std::get<bool>(common)) continue;
    if (key == "messages") {
      has_messages = true;
      auto parsed_messages = parse_messages(value);
      if (auto* error = std::get_if<ApiError>(&parsed_messages)) return *error;
      messages = std::move(std::get<std::vector<ChatMessage>>(parsed_messages));
    } else if (key == "logprobs") {
      if (!value.is_null() && !(value.is_boolean() && !value.get<bool>())) {
        return unsupported(key, "false");
      }
    } else if (key == "top_logprobs" || key == "tools" || key == "tool_choice" ||
               key == "functions" || key == "function_call") {
      if (!is_null_or_empty(value)) return unsupported(key, "null or empty");
    } else if (key == "response_format") {
      if (!value.is_null() &&
          !(value.is_object() && value.value("type", "") == "text" && value.size() == 1)) {
        return unsupported(key, "{\"type\": \"text\"}");
      }
    } else {
      return invalid(key, "unknown field '" + key + "'", "unknown_parameter");
    }
  }
  if (!has_messages) {
    return invalid("messages", "'messages' is required", "missing_required_parameter");
  }
  request.chat = true;
  auto prompt = chat_prompt(messages, /*add_generation_prompt=*/true, limits);
  if (auto* error = std::get_if<ApiError>(&prompt)) return *error;
  request.prompt = std::move(std::get<std::vector<TokenId>>(prompt));
  if (!document.contains("max_tokens") && !document.contains("max_completion_tokens")) {
    // As chat clients expect: no limit asked, so up to the context (and the router's limit).
    const std::int64_t room = static_cast<std::int64_t>(limits.max_model_len) -
                              static_cast<std::int64_t>(request.prompt.size());
    request.sampling.max_tokens =
        static_cast<std::int32_t>(std::clamp<std::int64_t>(room, 1, limits.max_tokens_limit));
  }
  return within_context(std::move(request), limits, "messages");
}

std::variant<std::vector<TokenId>, ApiError> parse_tokenize_request(
    std::string_view body, const CompletionLimits& limits) {
  auto parsed = parse_body(body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  const json& document = std::get<json>(parsed);
  CompletionRequest unused;
  std::optional<std::string> prompt;
  std::optional<std::vector<ChatMessage>> messages;
  bool add_special_tokens = true, add_generation_prompt = true;
  for (const auto& [key, value] : document.items()) {
    if (key == "model") {
      if (auto error = model_rule(key, value, limits, unused)) return *error;
    } else if (key == "messages") {
      auto parsed_messages = parse_messages(value);
      if (auto* error = std::get_if<ApiError>(&parsed_messages)) return *error;
      messages = std::move(std::get<std::vector<ChatMessage>>(parsed_messages));
    } else if (key == "add_generation_prompt") {
      if (!value.is_boolean()) return wrong_type(key, "a boolean");
      add_generation_prompt = value.get<bool>();
    } else if (key == "prompt") {
      if (!value.is_string()) return wrong_type(key, "a string");
      prompt = value.get<std::string>();
    } else if (key == "add_special_tokens") {
      if (!value.is_boolean()) return wrong_type(key, "a boolean");
      add_special_tokens = value.get<bool>();
    } else {
      return invalid(key, "unknown field '" + key + "'", "unknown_field");
    }
  }
  if (prompt && messages) return invalid("messages", "give 'prompt' or 'messages', not both");
  if (messages) return chat_prompt(*messages, add_generation_prompt, limits);
  if (!prompt) return invalid("prompt", "'prompt' or 'messages' is required", "missing_field");
  return add_special_tokens ? prompt_ids(*prompt, limits) : encode_text(*prompt, limits);
}

std::variant<std::vector<TokenId>, ApiError> parse_detokenize_request(
    std::string_view body, const CompletionLimits& limits) {
  auto parsed = parse_body(body);
  if (auto* error = std::get_if<ApiError>(&parsed)) return *error;
  const json& document = std::get<json>(parsed);
  CompletionRequest unused;
  std::optional<std::vector<TokenId>> tokens;
  for (const auto& [key, value] : document.items()) {
    if (key == "model") {
      if (auto error = model_rule(key, value, limits, unused)) return *error;
    } else if (key == "tokens") {
      if (!value.is_array()) return wrong_type(key, "an array of token ids");
      auto ids = token_ids_prompt(value, limits.vocab_size);
      if (auto* error = std::get_if<ApiError>(&ids)) {
        error->param = "tokens";
        return *error;
      }
      tokens = std::get<std::vector<TokenId>>(std::move(ids));
    } else {
      return invalid(key, "unknown field '" + key + "'", "unknown_field");
    }
  }
  if (!tokens) return invalid("tokens", "'tokens' is required", "missing_field");
  return *tokens;
}

}  // namespace podserve
