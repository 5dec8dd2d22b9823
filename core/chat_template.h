// Chat templates: the Jinja subset Hugging Face chat templates are written in, rendered as
// transformers' apply_chat_template renders them (its Jinja environment: trim_blocks,
// lstrip_blocks, loop controls, and its tojson, raise_exception, strftime_now and namespace).
//
// Why a subset evaluator here instead of a library: no C++ Jinja implementation is packaged
// for Debian 12 (`apt-cache search jinja` lists only Python and Emacs packages) and the build
// takes dependencies only from Debian packages and PyPI wheels, with no third-party code copied
// into the repository (docs/tokenizers.md, "Chat templates").
//
// Supported: text, {{ }}, {% %} and {# #} with `-` and `+` whitespace control; if/elif/else,
// for (tuple targets, `if` filter, else, loop.index/index0/revindex/revindex0/first/last/
// length/previtem/nextitem, break/continue), set (names, namespace attributes), macro (no
// call blocks); literals (strings, ints, floats, booleans, none, lists, dicts); + - * / // %
// ~, comparisons, in / not in, and / or / not, `a if b else c`, attribute and item access,
// slices with steps; tests defined, undefined, none, string, number, integer, float, boolean,
// mapping, iterable, sequence, true, false, even, odd, eq/ne/gt/ge/lt/le/in; filters trim,
// tojson(indent, separators, sort_keys, ensure_ascii), length/count, first, last, join, default/d,
// upper, lower, capitalize, title, replace, list, string, int, float, abs, items, reverse,
// unique, select/reject/selectattr/rejectattr/map (attribute= or a test), sort, safe; string
// methods strip/lstrip/rstrip/startswith/endswith/split/upper/lower/title/capitalize/replace/
// find/count/join, dict methods items/keys/values/get; globals raise_exception, namespace,
// range, dict, strftime_now. Anything else is a parse or render error naming it.
//
// Thread-safe after parse (render() is const and keeps its state on the stack).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/status.h"

namespace podserve {

namespace chat_template_detail {
struct Node;
}

class ChatTemplate;
struct CheckpointChat;
// A checkpoint's chat template, from DIR/chat_template.jinja (transformers 5.x) or else
// DIR/tokenizer_config.json's chat_template (a string, or a list of {name, template}: the one
// named "default"), with the special-token strings templates read (bos_token, eos_token,
// unk_token, pad_token: strings or {"content": ...}). nullopt when the checkpoint has none.
Result<std::optional<CheckpointChat>> load_checkpoint_chat(const std::string& dir);

class ChatTemplate {
 public:
  // kInvalidArgument with the line of the first construct it cannot parse.
  static Result<ChatTemplate> parse(std::string_view source);

  // Renders with the variables of `context` (a JSON object, key order kept as Python dicts keep
  // it: messages, tools, add_generation_prompt, bos_token, ...). raise_exception() in the
  // template gives kInvalidArgument with its message.
  Result<std::string> render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const chat_template_detail::Node> root_;
};

struct CheckpointChat {
  ChatTemplate chat_template;
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();  // {"bos_token": ...}

  // Renders `messages` as apply_chat_template(messages, add_generation_prompt=...) does: tools
  // and documents none, the special tokens as variables.
  Result<std::string> render(const nlohmann::ordered_json& messages,
                             bool add_generation_prompt = true) const;
};

}  // namespace podserve
