// Parsing and validation of OpenAI-style `POST /v1/completions` and `/v1/chat/completions` bodies
// into a prompt and sampling parameters, and the OpenAI error body the router answers with. Pure
// functions, thread-safe, no I/O.
//
// Accepted fields (anything else is rejected with 400 naming the field, so that a typo such as
// "max_token" is not silently ignored):
//   model        string, optional; must equal the served model name (else 404 model_not_found)
//   prompt       non-empty string (prompt_ids: the checkpoint's tokenizer with its special
//                tokens, or BOS and the bytes) or non-empty array of token
//                ids in [0, vocab_size); batched prompts (array of strings/arrays) are rejected
//   max_tokens   integer in [1, max_tokens_limit], default 16 (null: default); alias
//                max_completion_tokens
//   temperature  number in [0, 2];  top_p: number in (0, 1]; defaults from limits.defaults (1 and
//                1, or the checkpoint's generation_config.json)
//   seed         integer in [0, 2^64), optional (the router picks one when absent)
//   ignore_eos, stream   booleans, default false
//   stream_options  null or an object; its include_usage (boolean) asks a stream for a last
//                chunk with empty choices and the usage, as OpenAI sends (the chunk that
//                finishes a stream carries the usage too, either way); other keys ignored
//   user         accepted and ignored
//   n, best_of   only 1;  echo only false;  logprobs, suffix only null;
//   stop         a non-empty string or an array of at most 4 (null or empty: none): generation
//                ends before the first occurrence of any of them in the output text
//   presence_penalty, frequency_penalty  only 0;  logit_bias  only null or empty
// prompt tokens + max_tokens must not exceed max_model_len (else 400 context_length_exceeded).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/chat_template.h"
#include "core/text_tokenizer.h"
#include "core/types.h"

namespace podserve {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, empty when none
  std::string code;   // machine-readable reason, empty when none
};

// {"error": {"message", "type", "param", "code"}} (param/code null when empty).
std::string api_error_body(const ApiError& error);

struct CompletionLimits {
  std::string served_model_name;
  std::int32_t vocab_size = 0;
  std::int32_t max_model_len = 0;     // prompt + generated tokens
  std::int32_t max_tokens_limit = 0;  // largest max_tokens
  TokenId bos_token_id = 1;
  SamplingParams defaults;  // temperature and top_p of requests that leave them out
  // Text prompts: this checkpoint tokenizer (owned by the router, outliving the limits), or
  // the byte tokenizer when null.
  const TextTokenizer* tokenizer = nullptr;
  // Chat prompts: this checkpoint chat template (owned by the router), or the Llama-3 layout of
  // render_chat_prompt after BOS when null.
  const CheckpointChat* chat = nullptr;
};

// The ids of `text` (no BOS) under limits.tokenizer, or the byte tokenizer.
std::vector<TokenId> encode_text(std::string_view text, const CompletionLimits& limits);
// A text prompt's ids: the checkpoint tokenizer's encoding with its special tokens (BOS where
// it adds one, as transformers does), or BOS and the bytes.
std::vector<TokenId> prompt_ids(std::string_view text, const CompletionLimits& limits);

struct CompletionRequest {
  std::vector<TokenId> prompt;
  SamplingParams sampling;  // seed valid only when has_seed
  bool has_seed = false;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool chat = false;              // from /v1/chat/completions: answered as chat.completion objects
  std::vector<std::string> stop;  // stop strings, each non-empty
};

std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body,
                                                                   const CompletionLimits& limits);

struct ChatMessage {
  std::string role;  // system | developer | user | assistant
  std::string content;
  std::string name;  // empty when absent
};

// The chat template (text, byte-tokenized like a prompt, after BOS): per message
// "<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>", then the assistant's header
// "<|start_header_id|>assistant<|end_header_id|>\n\n" (Llama 3's layout, spelled out in bytes:
// the byte tokenizer has no special tokens beyond BOS).
std::string render_chat_prompt(const std::vector<ChatMessage>& messages);

// `POST /v1/chat/completions`: `messages` (required, non-empty; each {role, content, name?}
// with role system, developer, user or assistant and content a string or an array of
// {"type": "text", "text"} parts) rendered by limits.chat (the checkpoint's template, messages
// as {role, content (the text parts joined), name?}; a template's raise_exception is a 400 on
// `messages`) or else render_chat_prompt; `max_completion_tokens` is
// max_tokens, and without either the request may fill the context (up to max_tokens_limit); the
// sampling fields, model, stream, n, penalties, stop and logit_bias as above; logprobs only false;
// top_logprobs, tools, tool_choice, functions, function_call only null or empty; response_format
// only {"type": "text"}. The result has chat = true.
std::variant<CompletionRequest, ApiError> parse_chat_completion_request(
    std::string_view body, const CompletionLimits& limits);

// POST /v1/tokenize (vLLM's shapes): {"prompt": string, "add_special_tokens"?: bool (default
// true: prompt_ids, as completions do; false: encode_text), "model"?}, or the chat form {"messages"
// (as chat completions take them), "add_generation_prompt"?: bool (default true), "model"?}: the
// ids a chat completion's prompt would be. The ids, or the error to answer.
std::variant<std::vector<TokenId>, ApiError> parse_tokenize_request(std::string_view body,
                                                                    const CompletionLimits& limits);
// POST /v1/detokenize (vLLM's shape): {"tokens": [ids in [0, vocab_size)], "model"?}.
std::variant<std::vector<TokenId>, ApiError> parse_detokenize_request(
    std::string_view body, const CompletionLimits& limits);

}  // namespace podserve
