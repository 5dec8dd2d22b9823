// ChatTemplate against transformers' apply_chat_template: the templates of tests/data/hf/chat/
// (written for these fixtures in the styles of the Llama-3, Llama-3.1, Mistral, Qwen2.5 and
// Qwen3 templates) rendered for 200 randomized conversations by tools/make_hf_fixtures.py
// (cases.json); every rendering must be byte for byte the same, and every conversation the
// template refuses (raise_exception) refused with the same message. Also constructs written out
// here with the output Jinja gives for them.
#include "core/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace podserve {
namespace {

using nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ChatTemplate, RendersAsTransformersDoes) {
  const std::string dir = std::string(PODSERVE_SOURCE_DIR) + "/tests/data/hf/chat/";
  const auto fixture = ordered_json::parse(read_file(dir + "cases.json"));
  std::map<std::string, ChatTemplate> templates;
  int rendered = 0, refused = 0;
  for (const auto& c : fixture.at("cases")) {
    const std::string name = c.at("template");
    if (!templates.contains(name)) {
      auto parsed = ChatTemplate::parse(read_file(dir + name + ".jinja"));
      ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status().to_string();
      templates.emplace(name, std::move(parsed).value());
    }
    ordered_json context;
    context["messages"] = c.at("messages");
    context["tools"] = c.at("tools");
    context["documents"] = nullptr;
    context["add_generation_prompt"] = c.at("add_generation_prompt");
    context["bos_token"] = fixture.at("bos_token");
    context["eos_token"] = fixture.at("eos_token");
    const auto result = templates.at(name).render(context);
    if (c.contains("error")) {
      ASSERT_FALSE(result.ok()) << name << ": " << c.dump();
      EXPECT_NE(result.status().message().find(c.at("error").get<std::string>()), std::string::npos)
          << result.status().to_string();
      ++refused;
    } else {
      ASSERT_TRUE(result.ok()) << name << ": " << result.status().to_string();
      EXPECT_EQ(*result, c.at("rendered").get<std::string>()) << name << ": " << c.dump();
      ++rendered;
    }
  }
  EXPECT_GE(rendered, 150);
  EXPECT_GE(refused, 5);
}

std::string render(const std::string& source,
                   const ordered_json& context = ordered_json::object()) {
  auto t = ChatTemplate::parse(source);
  if (!t.ok()) return "PARSE ERROR: " + t.status().message();
  auto out = t->render(context);
  return out.ok() ? *out : "RENDER ERROR: " + out.status().message();
}

// Outputs of Jinja 3.1 with trim_blocks and lstrip_blocks, for constructs the fixture templates
// touch lightly.
TEST(ChatTemplate, Constructs) {
  EXPECT_EQ(render("{{ [1, 'a', none, true, 2.50] }}"), "[1, 'a', None, True, 2.5]");
  EXPECT_EQ(render("{{ {'k': \"it's\"} }}"), "{'k': \"it's\"}");
  EXPECT_EQ(
      render("{{ x | tojson(indent=2) }}", {{"x", {{"a", {1, 2}}, {"b", ordered_json::array()}}}}),
      "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": []\n}");
  EXPECT_EQ(render("{{ x | tojson }}", {{"x", {{"z", "\u00e9\n\""}, {"a", 1.0}}}}),
            "{\"z\": \"\u00e9\\n\\\"\", \"a\": 1.0}");
  EXPECT_EQ(render("{{ 'abcdef'[1:-1] }}|{{ 'abc'[::-1] }}|{{ [1,2,3,4][::2] }}"),
            "bcde|cba|[1, 3]");
  EXPECT_EQ(
      render("{% for x in 'ab' %}{{ loop.index }}{{ loop.revindex0 }}{{ loop.first }}{% endfor %}"),
      "11True20False");
  EXPECT_EQ(render("{% for x in [1,2,3,4] if x is even %}{{ x }}{% else %}none{% endfor %}"), "24");
  EXPECT_EQ(render("{% for x in [] %}{{ x }}{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(
      render("{% for x in [1,2,3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
      "13");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for x in [1,2] %}{% set ns.n = ns.n + x %}"
                   "{% set local = 5 %}{% endfor %}{{ ns.n }}{{ local is defined }}"),
            "3False");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"),
            "3 -4 1 2 3.5 1024");
  EXPECT_EQ(render("{{ '  x ' | trim }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}"),
            "x|['a', 'b', '', 'c']|['a', 'b']");
  EXPECT_EQ(render("{{ 'Hello World' | lower }} {{ 'hello world' | title }} {{ 'x' | upper }}"),
            "hello world Hello World X");
  EXPECT_EQ(
      render("{{ undefined_name }}|{{ undefined_name | default('d') }}|{{ none | default('d') }}"),
      "|d|None");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}"),
            "True False True");
  EXPECT_EQ(
      render("{{ 'yes' if x else 'no' }}{{ 'never' if false }}", {{"x", ordered_json::array()}}),
      "no");
  EXPECT_EQ(render("{{ [3, 1, 2] | sort | join(',') }} {{ 'h\u00e9' | length }}"), "1,2,3 2");
  EXPECT_EQ(
      render("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('A') }}/"
             "{{ greet('B', p='Yo') }}"),
      "Hi A/Yo B");
  // Whitespace: trim_blocks eats the newline after a block tag, lstrip_blocks the indentation
  // before one; `-` strips everything on its side; expressions keep theirs.
  EXPECT_EQ(render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif %}  c"), "ab  c");
  EXPECT_EQ(render("{{ 'x' }}\n{{ 'y' }}\n"), "x\ny");  // the source's last newline dropped
  EXPECT_EQ(render("  {# note #}\nz"), "z");
  EXPECT_EQ(render("{% if x %}A{% elif y %}B{% else %}C{% endif %}", {{"x", 0}, {"y", "s"}}), "B");
  EXPECT_EQ(render("{{ raise_exception('stop here') }}"), "RENDER ERROR: chat template: stop here");
  EXPECT_EQ(render("{% if %}").rfind("PARSE ERROR", 0), 0u);
  EXPECT_EQ(render("{% unknownstatement %}").rfind("PARSE ERROR", 0), 0u);
  EXPECT_EQ(render("{{ x | nosuchfilter }}").rfind("RENDER ERROR", 0), 0u);
}

TEST(ChatTemplate, CheckpointTemplateSources) {
  const auto dir = std::filesystem::temp_directory_path() / "podserve_checkpoint_chat";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]})";
  auto listed = load_checkpoint_chat(dir.string());
  ASSERT_TRUE(listed.ok()) << listed.status().to_string();
  ASSERT_TRUE(listed->has_value());
  auto text = (*listed)->render(ordered_json::parse(R"([{"role": "user", "content": "hi"}])"));
  ASSERT_TRUE(text.ok()) << text.status().to_string();
  EXPECT_EQ(*text, "<s>hi");
  // transformers 5.x: chat_template.jinja beside tokenizer_config.json wins.
  std::ofstream(dir / "chat_template.jinja") << "{{ eos_token }}{{ add_generation_prompt }}\n";
  auto file = load_checkpoint_chat(dir.string());
  ASSERT_TRUE(file.ok() && file->has_value());
  EXPECT_EQ(*(*file)->render(ordered_json::array()), "</s>True");
  std::filesystem::remove_all(dir);
  auto none = load_checkpoint_chat(dir.string());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace podserve
