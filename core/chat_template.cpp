#include "core/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace podserve {
namespace chat_template_detail {

// ---- Values ----------------------------------------------------------------------------------

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, as Python keeps it
using Args = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;
using Function = std::function<Value(const Args&, const Kwargs&)>;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Kind kind = Kind::kUndefined;
  bool boolean = false;
  std::int64_t integer = 0;
  double number = 0.0;
  std::string string;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // also a namespace (is_namespace), shared so `set ns.x` mutates it
  bool is_namespace = false;
  std::shared_ptr<Function> function;

  static Value none() { return make(Kind::kNone); }
  static Value of(bool b) {
    Value v = make(Kind::kBool);
    v.boolean = b;
    return v;
  }
  static Value of(std::int64_t i) {
    Value v = make(Kind::kInt);
    v.integer = i;
    return v;
  }
  static Value of(double d) {
    Value v = make(Kind::kFloat);
    v.number = d;
    return v;
  }
  static Value of(std::string s) {
    Value v = make(Kind::kString);
    v.string = std::move(s);
    return v;
  }
  static Value of(List l) {
    Value v = make(Kind::kList);
    v.list = std::make_shared<List>(std::move(l));
    return v;
  }
  static Value of(Dict d) {
    Value v = make(Kind::kDict);
    v.dict = std::make_shared<Dict>(std::move(d));
    return v;
  }
  static Value of(Function f) {
    Value v = make(Kind::kFunction);
    v.function = std::make_shared<Function>(std::move(f));
    return v;
  }
  static Value make(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
  bool is(Kind k) const { return kind == k; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  double as_double() const { return kind == Kind::kInt ? static_cast<double>(integer) : number; }
  const Value* find(std::string_view key) const {
    if (!dict) return nullptr;
    for (const auto& [k, v] : *dict)
      if (k == key) return &v;
    return nullptr;
  }
};

using Kind = Value::Kind;

struct RenderError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& message) { throw RenderError(message); }

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::of(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned: return Value::of(j.get<std::int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return Value::of(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::of(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      for (const auto& e : j) list.push_back(from_json(e));
      return Value::of(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      for (const auto& [k, v] : j.items()) dict.emplace_back(k, from_json(v));
      return Value::of(std::move(dict));
    }
    default: return Value::none();
  }
}

// Code points of UTF-8 text (Python indexes and measures strings in them).
std::vector<std::string> code_points(std::string_view s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    n = std::min(n, s.size() - i);
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Python's repr of a float: the shortest text that reads back as the same double.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, d);
    if (std::strtod(buffer, nullptr) == d) break;
  }
  std::string s = buffer;
  const std::size_t e = s.find('e');
  if (e != std::string::npos) {
    // Python writes 1e+16 and 1e-05 as C does, but with at least two exponent digits kept.
    std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
    const char sign = exponent[0];
    exponent = exponent.substr(1);
    while (exponent.size() > 2 && exponent[0] == '0') exponent.erase(0, 1);
    // Python switches to exponent form at 1e16 and below 1e-4, as %g at precision 17 does.
    const int exp_value = std::stoi(exponent) * (sign == '-' ? -1 : 1);
    if (exp_value >= -4 && exp_value < 16) {
      std::snprintf(buffer, sizeof buffer, "%.17f", d);
      std::string fixed = buffer;
      // Trim to the shortest fixed form that reads back.
      while (fixed.size() > 1 && fixed.back() == '0') fixed.pop_back();
      if (fixed.back() == '.') fixed += '0';
      return fixed;
    }
    return mantissa + "e" + sign + exponent;
  }
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

std::string string_repr(const std::string& s) {
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char quote = use_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == quote) {
          out += '\\';
          out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + quote;
}

std::string repr(const Value& v);

// Python's str().
std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return v.boolean ? "True" : "False";
    case Kind::kInt: return std::to_string(v.integer);
    case Kind::kFloat: return float_repr(v.number);
    case Kind::kString: return v.string;
    case Kind::kList: {
      std::string out = "[";
      for (std::size_t i = 0; i < v.list->size(); ++i) out += (i ? ", " : "") + repr((*v.list)[i]);
      return out + "]";
    }
    case Kind::kDict: {
      if (v.is_namespace) return "<Namespace>";
      std::string out = "{";
      for (std::size_t i = 0; i < v.dict->size(); ++i)
        out += (i ? ", " : "") + string_repr((*v.dict)[i].first) + ": " + repr((*v.dict)[i].second);
      return out + "}";
    }
    case Kind::kFunction: return "<function>";
  }
  return "";
}

std::string repr(const Value& v) { return v.is(Kind::kString) ? string_repr(v.string) : to_str(v); }

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.boolean;
    case Kind::kInt: return v.integer != 0;
    case Kind::kFloat: return v.number != 0.0;
    case Kind::kString: return !v.string.empty();
    case Kind::kList: return !v.list->empty();
    case Kind::kDict: return v.is_namespace || !v.dict->empty();
    case Kind::kFunction: return true;
  }
  return false;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is(Kind::kInt) && b.is(Kind::kInt)) return a.integer == b.integer;
    return a.as_double() == b.as_double();
  }
  if (a.is(Kind::kBool) && b.is_number()) return equal(Value::of(std::int64_t{a.boolean}), b);
  if (b.is(Kind::kBool) && a.is_number()) return equal(a, Value::of(std::int64_t{b.boolean}));
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kBool: return a.boolean == b.boolean;
    case Kind::kString: return a.string == b.string;
    case Kind::kList:
      if (a.list->size() != b.list->size()) return false;
      for (std::size_t i = 0; i < a.list->size(); ++i)
        if (!equal((*a.list)[i], (*b.list)[i])) return false;
      return true;
    case Kind::kDict:
      if (a.dict == b.dict) return true;
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [k, v] : *a.dict) {
        const Value* other = b.find(k);
        if (other == nullptr || !equal(v, *other)) return false;
      }
      return true;
    default: return false;
  }
}

bool less(const Value& a, const Value& b) {
  if ((a.is_number() || a.is(Kind::kBool)) && (b.is_number() || b.is(Kind::kBool))) {
    const auto num = [](const Value& v) {
      return v.is(Kind::kBool) ? static_cast<double>(v.boolean) : v.as_double();
    };
    return num(a) < num(b);
  }
  if (a.is(Kind::kString) && b.is(Kind::kString)) return a.string < b.string;
  if (a.is(Kind::kList) && b.is(Kind::kList)) {
    return std::lexicographical_compare(a.list->begin(), a.list->end(), b.list->begin(),
                                        b.list->end(), less);
  }
  fail("cannot compare " + repr(a) + " with " + repr(b));
}

// The items a for loop or a filter walks: a list's elements, a dict's keys, a string's code
// points; nothing for undefined and none.
List iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kList: return *v.list;
    case Kind::kDict: {
      List keys;
      for (const auto& [k, unused] : *v.dict) keys.push_back(Value::of(k));
      return keys;
    }
    case Kind::kString: {
      List chars;
      for (auto& c : code_points(v.string)) chars.push_back(Value::of(std::move(c)));
      return chars;
    }
    case Kind::kUndefined: return {};
    default: fail(repr(v) + " is not iterable");
  }
}

// Python's json.dumps with transformers' tojson options.
void dump_json(const Value& v, std::string& out, int indent, int level, const std::string& item_sep,
               const std::string& key_sep, bool sort_keys, bool ensure_ascii) {
  const auto newline = [&](int depth) {
    if (indent >= 0) out += "\n" + std::string(static_cast<std::size_t>(indent * depth), ' ');
  };
  const auto string = [&](const std::string& s) {
    out += '"';
    for (std::size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20) {
            out += fmt::format("\\u{:04x}", c);
          } else if (c >= 0x80 && ensure_ascii) {
            const std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            std::uint32_t cp = c & (0xFF >> (n + 1));
            for (std::size_t k = 1; k < n && i + k < s.size(); ++k)
              cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
            i += n - 1;
            if (cp >= 0x10000) {
              cp -= 0x10000;
              out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
              out += fmt::format("\\u{:04x}", cp);
            }
          } else {
            out += static_cast<char>(c);
          }
      }
    }
    out += '"';
  };
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: out += "null"; return;
    case Kind::kBool: out += v.boolean ? "true" : "false"; return;
    case Kind::kInt: out += std::to_string(v.integer); return;
    case Kind::kFloat:
      out += std::isnan(v.number)   ? "NaN"
             : std::isinf(v.number) ? (v.number > 0 ? "Infinity" : "-Infinity")
                                    : float_repr(v.number);
      return;
    case Kind::kString: string(v.string); return;
    case Kind::kList:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        dump_json((*v.list)[i], out, indent, level + 1, item_sep, key_sep, sort_keys, ensure_ascii);
      }
      newline(level);
      out += ']';
      return;
    case Kind::kDict: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      Dict items = *v.dict;
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
      out += '{';
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        string(items[i].first);
        out += key_sep;
        dump_json(items[i].second, out, indent, level + 1, item_sep, key_sep, sort_keys,
                  ensure_ascii);
      }
      newline(level);
      out += '}';
      return;
    }
    case Kind::kFunction: fail("a function is not JSON serializable");
  }
}

// ---- Syntax tree -----------------------------------------------------------------------------

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;

struct Expr {
  enum class Type {
    kLiteral,
    kName,
    kList,
    kDict,
    kAttr,
    kItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kUnary,
    kBinary,
    kAnd,
    kOr,
    kNot,
    kTernary
  };
  Type type = Type::kLiteral;
  Value literal;
  std::string name;               // name, attribute, filter, test, operator
  std::vector<ExprPtr> children;  // operands / call arguments (first: the callee or subject)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // is not
};

struct Node {
  enum class Type { kText, kOutput, kIf, kFor, kSet, kMacro, kBreak, kContinue, kSequence };
  Type type = Type::kSequence;
  std::string text;
  ExprPtr expr;                                             // output, set value, for iterable
  std::vector<std::pair<ExprPtr, std::vector<Node>>> arms;  // if: (condition or null, body)
  std::vector<std::string> targets;                         // for / set / macro name
  ExprPtr filter;                                           // for ... if filter
  std::vector<Node> body, else_body;                        // for, macro
  std::string attribute;                                    // set ns.attribute
  std::vector<std::pair<std::string, ExprPtr>> params;      // macro parameters and defaults
};

// ---- Lexing the template ---------------------------------------------------------------------

struct Segment {
  enum class Type { kText, kOutput, kStatement };
  Type type;
  std::string content;
  int line;
};

// Jinja's lexer with transformers' options: `{%-`/`-%}` (and the same on {{ }} and {# #}) strip
// all white space on that side; trim_blocks drops the newline right after a block or comment
// tag; lstrip_blocks drops spaces and tabs before a block or comment tag that starts its line
// (after a newline in the text, or at a line start left by the previous tag's end), unless the
// tag opens with `{%+`. One line break at the very end of the source is dropped.
std::vector<Segment> split_template(std::string_view src) {
  // keep_trailing_newline is off: one final line break of the source is not output.
  if (src.ends_with("\r\n"))
    src.remove_suffix(2);
  else if (src.ends_with('\n') || src.ends_with('\r'))
    src.remove_suffix(1);
  std::vector<Segment> out;
  bool strip_next = false, trim_next = false;
  bool line_starting = true;  // the current text begins at a line start
  std::size_t i = 0;
  int line = 1;
  const auto add_text = [&](std::string text) {
    if (strip_next) {
      const std::size_t first = text.find_first_not_of(" \t\r\n\f\v");
      const std::size_t removed = first == std::string::npos ? text.size() : first;
      line_starting = removed > 0 ? text[removed - 1] == '\n' : false;
      text.erase(0, removed);
    } else if (trim_next && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
      line_starting = true;
    } else if (trim_next || !out.empty()) {
      line_starting = false;
    }
    strip_next = trim_next = false;
    out.push_back({Segment::Type::kText, std::move(text), line});
  };
  while (i < src.size()) {
    std::size_t open = i;
    while (true) {
      open = src.find('{', open);
      if (open == std::string_view::npos || open + 1 >= src.size()) {
        open = std::string_view::npos;
        break;
      }
      const char next = src[open + 1];
      if (next == '{' || next == '%' || next == '#') break;
      ++open;
    }
    const std::string_view text = src.substr(i, open == std::string_view::npos ? open : open - i);
    add_text(std::string(text));
    line += static_cast<int>(std::count(text.begin(), text.end(), '\n'));
    if (open == std::string_view::npos) break;
    const char kind = src[open + 1];
    std::size_t start = open + 2;
    const bool minus_open = start < src.size() && src[start] == '-';
    const bool plus_open = start < src.size() && src[start] == '+';
    if (minus_open || plus_open) ++start;
    std::string& before = out.back().content;
    if (minus_open) {
      const std::size_t last = before.find_last_not_of(" \t\r\n\f\v");
      before.erase(last == std::string::npos ? 0 : last + 1);
    } else if (kind != '{' && !plus_open) {
      const std::size_t newline = before.find_last_of('\n');
      const std::size_t from = newline == std::string::npos ? 0 : newline + 1;
      if ((from > 0 || line_starting) && from < before.size() &&
          before.find_first_not_of(" \t\r\f\v", from) == std::string::npos)
        before.erase(from);
    }
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    // The closing delimiter, skipping quoted strings in expressions.
    std::size_t k = start;
    char quote = 0;
    for (; k < src.size(); ++k) {
      if (kind != '#') {
        if (quote) {
          if (src[k] == '\\')
            ++k;
          else if (src[k] == quote)
            quote = 0;
          continue;
        }
        if (src[k] == '\'' || src[k] == '"') {
          quote = src[k];
          continue;
        }
      }
      if (src.compare(k, 2, close) == 0) break;
    }
    if (k >= src.size()) fail(fmt::format("line {}: unclosed '{{{}'", line, kind));
    std::size_t end = k;
    const bool minus_close = end > start && src[end - 1] == '-';
    const bool plus_close = end > start && src[end - 1] == '+' && kind == '%';
    if (minus_close || plus_close) --end;
    const std::string_view inner = src.substr(start, end - start);
    if (kind != '#') {
      out.push_back({kind == '{' ? Segment::Type::kOutput : Segment::Type::kStatement,
                     std::string(inner), line});
    }
    line += static_cast<int>(std::count(inner.begin(), inner.end(), '\n'));
    strip_next = minus_close;
    trim_next = !minus_close && !plus_close && kind != '{';  // trim_blocks
    i = k + 2;
  }
  if (strip_next || trim_next) add_text("");
  return out;
}

// ---- Expression parsing ----------------------------------------------------------------------

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp, kEnd };
  Type type;
  std::string text;
  Value value;
};

std::vector<Token> lex_expression(std::string_view s, int line) {
  std::vector<Token> tokens;
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      std::size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::Type::kName, std::string(s.substr(i, j - i)), {}});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      std::size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_' ||
                              (s[j] == '.' && j + 1 < s.size() &&
                               std::isdigit(static_cast<unsigned char>(s[j + 1]))) ||
                              s[j] == 'e' || s[j] == 'E')) {
        if (s[j] == '.' || s[j] == 'e' || s[j] == 'E') is_float = true;
        ++j;
      }
      std::string digits(s.substr(i, j - i));
      digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
      Token t{is_float ? Token::Type::kFloat : Token::Type::kInt, digits, {}};
      t.value =
          is_float ? Value::of(std::stod(digits)) : Value::of(std::int64_t{std::stoll(digits)});
      tokens.push_back(std::move(t));
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string text;
      std::size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          text += s[j];
          continue;
        }
        const char e = s[++j];
        switch (e) {
          case 'n': text += '\n'; break;
          case 't': text += '\t'; break;
          case 'r': text += '\r'; break;
          case '\\': text += '\\'; break;
          case '\'': text += '\''; break;
          case '"': text += '"'; break;
          default: text += '\\'; text += e;
        }
      }
      if (j >= s.size()) fail(fmt::format("line {}: unterminated string", line));
      tokens.push_back({Token::Type::kString, text, Value::of(text)});
      i = j + 1;
    } else {
      static const char* const kOps[] = {"==", "!=", "<=", ">=", "//", "**", "<", ">", "+",
                                         "-",  "*",  "/",  "%",  "~",  "|",  ".", ",", ":",
                                         "(",  ")",  "[",  "]",  "{",  "}",  "="};
      bool matched = false;
      for (const char* op : kOps) {
        if (s.compare(i, std::strlen(op), op) == 0) {
          tokens.push_back({Token::Type::kOp, op, {}});
          i += std::strlen(op);
          matched = true;
          break;
        }
      }
      if (!matched) fail(fmt::format("line {}: unexpected character '{}'", line, c));
    }
  }
  tokens.push_back({Token::Type::kEnd, "", {}});
  return tokens;
}

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : tokens_(std::move(tokens)), line_(line) {}

  ExprPtr parse_expression() { return parse_ternary(); }
  bool at_end() const { return peek().type == Token::Type::kEnd; }
  bool accept_name(std::string_view name) {
    if (peek().type == Token::Type::kName && peek().text == name) return ++pos_, true;
    return false;
  }
  bool accept_op(std::string_view op) {
    if (peek().type == Token::Type::kOp && peek().text == op) return ++pos_, true;
    return false;
  }
  void expect_op(std::string_view op) {
    if (!accept_op(op)) error(fmt::format("expected '{}'", op));
  }
  std::string expect_name() {
    if (peek().type != Token::Type::kName) error("expected a name");
    return tokens_[pos_++].text;
  }
  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  bool peek_name(std::string_view name) const {
    return peek().type == Token::Type::kName && peek().text == name;
  }
  [[noreturn]] void error(const std::string& what) const {
    fail(fmt::format("line {}: {} near '{}'", line_, what, peek().text));
  }
  // Without the ternary (a for loop's iterable, before its `if`).
  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (accept_name("or")) left = node(Expr::Type::kOr, {left, parse_and()});
    return left;
  }

 private:
  static ExprPtr node(Expr::Type type, std::vector<ExprPtr> children, std::string name = "") {
    auto e = std::make_shared<Expr>();
    e->type = type;
    e->children = std::move(children);
    e->name = std::move(name);
    return e;
  }

  ExprPtr parse_ternary() {
    ExprPtr value = parse_or();
    if (accept_name("if")) {
      ExprPtr condition = parse_or();
      ExprPtr otherwise = accept_name("else") ? parse_ternary() : nullptr;
      auto e = node(Expr::Type::kTernary, {condition, value, otherwise});
      return e;
    }
    return value;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (accept_name("and")) left = node(Expr::Type::kAnd, {left, parse_not()});
    return left;
  }
  ExprPtr parse_not() {
    if (accept_name("not")) return node(Expr::Type::kNot, {parse_not()});
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr left = parse_math1();
    while (true) {
      const Token& t = peek();
      if (t.type == Token::Type::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                         t.text == ">" || t.text == "<=" || t.text == ">=")) {
        const std::string op = tokens_[pos_++].text;
        left = node(Expr::Type::kBinary, {left, parse_math1()}, op);
      } else if (peek_name("in")) {
        ++pos_;
        left = node(Expr::Type::kBinary, {left, parse_math1()}, "in");
      } else if (peek_name("not") && peek(1).type == Token::Type::kName && peek(1).text == "in") {
        pos_ += 2;
        left = node(Expr::Type::kBinary, {left, parse_math1()}, "not in");
      } else {
        return left;
      }
    }
  }
  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (peek().type == Token::Type::kOp && (peek().text == "+" || peek().text == "-")) {
      const std::string op = tokens_[pos_++].text;
      left = node(Expr::Type::kBinary, {left, parse_concat()}, op);
    }
    return left;
  }
  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (accept_op("~")) left = node(Expr::Type::kBinary, {left, parse_math2()}, "~");
    return left;
  }
  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (peek().type == Token::Type::kOp && (peek().text == "*" || peek().text == "/" ||
                                               peek().text == "//" || peek().text == "%")) {
      const std::string op = tokens_[pos_++].text;
      left = node(Expr::Type::kBinary, {left, parse_pow()}, op);
    }
    return left;
  }
  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (accept_op("**")) left = node(Expr::Type::kBinary, {left, parse_unary(true)}, "**");
    return left;
  }
  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (accept_op("-")) {
      e = node(Expr::Type::kUnary, {parse_unary(false)}, "-");
    } else if (accept_op("+")) {
      e = node(Expr::Type::kUnary, {parse_unary(false)}, "+");
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filter ? parse_filters(e) : e;
  }
  void parse_call_args(Expr& call) {
    while (!accept_op(")")) {
      if (peek().type == Token::Type::kName && peek(1).type == Token::Type::kOp &&
          peek(1).text == "=") {
        std::string key = tokens_[pos_].text;
        pos_ += 2;
        call.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        call.children.push_back(parse_expression());
      }
      if (!accept_op(",")) {
        expect_op(")");
        break;
      }
    }
  }
  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      if (accept_op("|")) {
        auto f = node(Expr::Type::kFilter, {e}, expect_name());
        if (accept_op("(")) parse_call_args(*f);
        e = f;
      } else if (accept_name("is")) {
        const bool negated = accept_name("not");
        std::string name =
            peek_name("none") || peek_name("None") ? (++pos_, "none") : expect_name();
        auto t = node(Expr::Type::kTest, {e}, name);
        t->negated = negated;
        if (accept_op("(")) {
          parse_call_args(*t);
        } else if (peek().type == Token::Type::kString || peek().type == Token::Type::kInt ||
                   peek().type == Token::Type::kFloat) {
          t->children.push_back(parse_primary());
        }
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (accept_op(".")) {
        e = node(Expr::Type::kAttr, {e}, expect_name());
      } else if (accept_op("[")) {
        // A slice [a:b:c] (any part may be missing) or an item.
        std::array<ExprPtr, 3> parts{};
        bool is_slice = false;
        for (int part = 0; part < 3; ++part) {
          if (!(peek().type == Token::Type::kOp && (peek().text == ":" || peek().text == "]")))
            parts[static_cast<std::size_t>(part)] = parse_expression();
          if (!accept_op(":")) break;
          is_slice = true;
        }
        expect_op("]");
        if (is_slice) {
          auto s = node(Expr::Type::kSlice, {e, parts[0], parts[1], parts[2]});
          e = s;
        } else {
          e = node(Expr::Type::kItem, {e, parts[0]});
        }
      } else if (accept_op("(")) {
        auto call = node(Expr::Type::kCall, {e});
        parse_call_args(*call);
        e = call;
      } else {
        return e;
      }
    }
  }
  ExprPtr parse_primary() {
    const Token t = peek();
    ++pos_;
    switch (t.type) {
      case Token::Type::kString: {
        std::string text = t.text;
        while (peek().type == Token::Type::kString) text += tokens_[pos_++].text;  // 'a' 'b'
        auto e = node(Expr::Type::kLiteral, {});
        e->literal = Value::of(std::move(text));
        return e;
      }
      case Token::Type::kInt:
      case Token::Type::kFloat: {
        auto e = node(Expr::Type::kLiteral, {});
        e->literal = t.value;
        return e;
      }
      case Token::Type::kName: {
        auto e = node(Expr::Type::kLiteral, {});
        if (t.text == "true" || t.text == "True")
          e->literal = Value::of(true);
        else if (t.text == "false" || t.text == "False")
          e->literal = Value::of(false);
        else if (t.text == "none" || t.text == "None")
          e->literal = Value::none();
        else
          return node(Expr::Type::kName, {}, t.text);
        return e;
      }
      case Token::Type::kOp:
        if (t.text == "(") {
          ExprPtr inner = parse_expression();
          if (accept_op(",")) {  // a tuple: a list here
            auto list = node(Expr::Type::kList, {inner});
            while (!accept_op(")")) {
              list->children.push_back(parse_expression());
              if (!accept_op(",")) {
                expect_op(")");
                break;
              }
            }
            return list;
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          auto list = node(Expr::Type::kList, {});
          while (!accept_op("]")) {
            list->children.push_back(parse_expression());
            if (!accept_op(",")) {
              expect_op("]");
              break;
            }
          }
          return list;
        }
        if (t.text == "{") {
          auto dict = node(Expr::Type::kDict, {});
          while (!accept_op("}")) {
            dict->children.push_back(parse_expression());
            expect_op(":");
            dict->children.push_back(parse_expression());
            if (!accept_op(",")) {
              expect_op("}");
              break;
            }
          }
          return dict;
        }
        break;
      case Token::Type::kEnd: break;
    }
    --pos_;
    error("unexpected token");
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  int line_;
};

// ---- Statement parsing -----------------------------------------------------------------------

class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Segment> segments) : segments_(std::move(segments)) {}

  std::vector<Node> parse_all() {
    std::string end;
    std::vector<Node> body = parse_body({}, end);
    if (!end.empty()) fail(fmt::format("unexpected '{}'", end));
    return body;
  }

 private:
  // Parses nodes until a statement whose keyword is one of `stops` (returned in `stop`, its
  // parser left after the keyword in stop_parser_).
  std::vector<Node> parse_body(const std::vector<std::string>& stops, std::string& stop) {
    std::vector<Node> nodes;
    while (pos_ < segments_.size()) {
      const Segment& seg = segments_[pos_++];
      if (seg.type == Segment::Type::kText) {
        if (seg.content.empty()) continue;
        Node n;
        n.type = Node::Type::kText;
        n.text = seg.content;
        nodes.push_back(std::move(n));
        continue;
      }
      auto parser = std::make_shared<ExprParser>(lex_expression(seg.content, seg.line), seg.line);
      if (seg.type == Segment::Type::kOutput) {
        Node n;
        n.type = Node::Type::kOutput;
        n.expr = parser->parse_expression();
        if (!parser->at_end()) parser->error("unexpected text in {{ }}");
        nodes.push_back(std::move(n));
        continue;
      }
      const std::string keyword = parser->expect_name();
      if (std::find(stops.begin(), stops.end(), keyword) != stops.end()) {
        stop = keyword;
        stop_parser_ = parser;
        return nodes;
      }
      nodes.push_back(parse_statement(keyword, *parser, seg.line));
    }
    if (!stops.empty()) fail(fmt::format("missing '{}'", stops.back()));
    return nodes;
  }

  Node parse_statement(const std::string& keyword, ExprParser& p, int line) {
    Node n;
    std::string stop;
    if (keyword == "if") {
      n.type = Node::Type::kIf;
      ExprPtr condition = p.parse_expression();
      while (true) {
        std::vector<Node> body = parse_body({"elif", "else", "endif"}, stop);
        n.arms.emplace_back(condition, std::move(body));
        if (stop == "elif") {
          condition = stop_parser_->parse_expression();
        } else if (stop == "else") {
          n.arms.emplace_back(nullptr, parse_body({"endif"}, stop));
          break;
        } else {
          break;
        }
      }
      return n;
    }
    if (keyword == "for") {
      n.type = Node::Type::kFor;
      do {
        n.targets.push_back(p.expect_name());
      } while (p.accept_op(","));
      if (!p.accept_name("in")) p.error("expected 'in'");
      n.expr = p.parse_or();
      if (p.accept_name("if")) n.filter = p.parse_or();
      if (p.accept_name("recursive")) p.error("recursive loops are not supported");
      n.body = parse_body({"else", "endfor"}, stop);
      if (stop == "else") n.else_body = parse_body({"endfor"}, stop);
      return n;
    }
    if (keyword == "set") {
      n.type = Node::Type::kSet;
      n.targets.push_back(p.expect_name());
      if (p.accept_op(".")) n.attribute = p.expect_name();
      while (p.accept_op(",")) n.targets.push_back(p.expect_name());
      if (!p.accept_op("=")) p.error("block set ({% set x %}...{% endset %}) is not supported");
      n.expr = p.parse_expression();
      return n;
    }
    if (keyword == "macro") {
      n.type = Node::Type::kMacro;
      n.targets.push_back(p.expect_name());
      p.expect_op("(");
      while (!p.accept_op(")")) {
        std::string param = p.expect_name();
        ExprPtr default_value = p.accept_op("=") ? p.parse_expression() : nullptr;
        n.params.emplace_back(std::move(param), default_value);
        if (!p.accept_op(",")) {
          p.expect_op(")");
          break;
        }
      }
      n.body = parse_body({"endmacro"}, stop);
      return n;
    }
    if (keyword == "break") {
      n.type = Node::Type::kBreak;
      return n;
    }
    if (keyword == "continue") {
      n.type = Node::Type::kContinue;
      return n;
    }
    fail(fmt::format("line {}: the '{}' statement is not supported", line, keyword));
  }

  std::vector<Segment> segments_;
  std::size_t pos_ = 0;
  std::shared_ptr<ExprParser> stop_parser_;
};

// ---- Evaluation ------------------------------------------------------------------------------

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  explicit Renderer(const nlohmann::ordered_json& context) {
    scopes_.emplace_back();
    auto& globals = scopes_.back();
    for (const auto& [k, v] : context.items()) globals[k] = from_json(v);
    install_globals(globals);
  }

  Flow render(const std::vector<Node>& nodes, std::string& out) {
    for (const Node& n : nodes) {
      const Flow flow = render(n, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

 private:
  static void install_globals(std::unordered_map<std::string, Value>& g) {
    g["raise_exception"] = Value::of(Function([](const Args& args, const Kwargs&) -> Value {
      fail(args.empty() ? "raise_exception" : to_str(args[0]));
    }));
    g["namespace"] = Value::of(Function([](const Args& args, const Kwargs& kwargs) {
      Dict attributes;
      for (const Value& a : args)
        if (a.dict) attributes.insert(attributes.end(), a.dict->begin(), a.dict->end());
      for (const auto& kv : kwargs) attributes.push_back(kv);
      Value v = Value::of(std::move(attributes));
      v.is_namespace = true;
      return v;
    }));
    g["dict"] = Value::of(Function([](const Args& args, const Kwargs& kwargs) {
      Dict d;
      for (const Value& a : args)
        if (a.dict) d.insert(d.end(), a.dict->begin(), a.dict->end());
      for (const auto& kv : kwargs) d.push_back(kv);
      return Value::of(std::move(d));
    }));
    g["range"] = Value::of(Function([](const Args& args, const Kwargs&) {
      std::int64_t start = 0, stop = 0, step = 1;
      if (args.size() == 1) stop = args[0].integer;
      if (args.size() >= 2) start = args[0].integer, stop = args[1].integer;
      if (args.size() >= 3) step = args[2].integer;
      if (step == 0) fail("range() step must not be zero");
      List l;
      for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        l.push_back(Value::of(i));
      return Value::of(std::move(l));
    }));
    g["strftime_now"] = Value::of(Function([](const Args& args, const Kwargs&) {
      const std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buffer[256];
      const std::string format = args.empty() ? "" : to_str(args[0]);
      const std::size_t n = std::strftime(buffer, sizeof buffer, format.c_str(), &local);
      return Value::of(std::string(buffer, n));
    }));
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value{};
  }

  Flow render(const Node& n, std::string& out) {
    switch (n.type) {
      case Node::Type::kText: out += n.text; return Flow::kNormal;
      case Node::Type::kOutput: out += to_str(eval(*n.expr)); return Flow::kNormal;
      case Node::Type::kIf:
        for (const auto& [condition, body] : n.arms) {
          if (!condition || truthy(eval(*condition))) return render(body, out);
        }
        return Flow::kNormal;
      case Node::Type::kFor: render_for(n, out); return Flow::kNormal;
      case Node::Type::kSet: {
        Value value = eval(*n.expr);
        if (!n.attribute.empty()) {
          Value ns = lookup(n.targets[0]);
          if (!ns.is_namespace) fail("'" + n.targets[0] + "' is not a namespace");
          for (auto& [k, v] : *ns.dict) {
            if (k == n.attribute) {
              v = std::move(value);
              return Flow::kNormal;
            }
          }
          ns.dict->emplace_back(n.attribute, std::move(value));
        } else if (n.targets.size() == 1) {
          scopes_.back()[n.targets[0]] = std::move(value);
        } else {
          const List items = iterate(value);
          if (items.size() != n.targets.size()) fail("set: wrong number of values to unpack");
          for (std::size_t i = 0; i < items.size(); ++i) scopes_.back()[n.targets[i]] = items[i];
        }
        return Flow::kNormal;
      }
      case Node::Type::kMacro: {
        const Node* macro = &n;
        scopes_.back()[n.targets[0]] =
            Value::of(Function([this, macro](const Args& args, const Kwargs& kwargs) {
              std::unordered_map<std::string, Value> locals;
              for (std::size_t i = 0; i < macro->params.size(); ++i) {
                const auto& [name, default_value] = macro->params[i];
                if (i < args.size())
                  locals[name] = args[i];
                else if (default_value)
                  locals[name] = eval(*default_value);
              }
              for (const auto& [k, v] : kwargs) locals[k] = v;
              scopes_.push_back(std::move(locals));
              std::string text;
              render(macro->body, text);
              scopes_.pop_back();
              return Value::of(std::move(text));
            }));
        return Flow::kNormal;
      }
      case Node::Type::kBreak: return Flow::kBreak;
      case Node::Type::kContinue: return Flow::kContinue;
      case Node::Type::kSequence: return render(n.body, out);
    }
    return Flow::kNormal;
  }

  void bind_targets(const std::vector<std::string>& targets, const Value& item,
                    std::unordered_map<std::string, Value>& scope) {
    if (targets.size() == 1) {
      scope[targets[0]] = item;
      return;
    }
    const List parts = iterate(item);
    if (parts.size() != targets.size()) fail("for: wrong number of values to unpack");
    for (std::size_t i = 0; i < parts.size(); ++i) scope[targets[i]] = parts[i];
  }

  void render_for(const Node& n, std::string& out) {
    const List all = iterate(eval(*n.expr));
    List items;
    if (n.filter) {
      for (const Value& item : all) {
        scopes_.emplace_back();
        bind_targets(n.targets, item, scopes_.back());
        const bool keep = truthy(eval(*n.filter));
        scopes_.pop_back();
        if (keep) items.push_back(item);
      }
    } else {
      items = all;
    }
    if (items.empty()) {
      render(n.else_body, out);
      return;
    }
    const auto length = static_cast<std::int64_t>(items.size());
    for (std::int64_t i = 0; i < length; ++i) {
      scopes_.emplace_back();
      auto& scope = scopes_.back();
      bind_targets(n.targets, items[static_cast<std::size_t>(i)], scope);
      Dict loop = {{"index", Value::of(i + 1)},         {"index0", Value::of(i)},
                   {"revindex", Value::of(length - i)}, {"revindex0", Value::of(length - i - 1)},
                   {"first", Value::of(i == 0)},        {"last", Value::of(i == length - 1)},
                   {"length", Value::of(length)}};
      if (i > 0) loop.emplace_back("previtem", items[static_cast<std::size_t>(i - 1)]);
      if (i + 1 < length) loop.emplace_back("nextitem", items[static_cast<std::size_t>(i + 1)]);
      scope["loop"] = Value::of(std::move(loop));
      const Flow flow = render(n.body, out);
      scopes_.pop_back();
      if (flow == Flow::kBreak) break;
    }
  }

  Value eval(const Expr& e) {
    switch (e.type) {
      case Expr::Type::kLiteral: return e.literal;
      case Expr::Type::kName: return lookup(e.name);
      case Expr::Type::kList: {
        List l;
        for (const auto& c : e.children) l.push_back(eval(*c));
        return Value::of(std::move(l));
      }
      case Expr::Type::kDict: {
        Dict d;
        for (std::size_t i = 0; i + 1 < e.children.size(); i += 2)
          d.emplace_back(to_str(eval(*e.children[i])), eval(*e.children[i + 1]));
        return Value::of(std::move(d));
      }
      case Expr::Type::kAttr: return attribute(eval(*e.children[0]), e.name);
      case Expr::Type::kItem: return item(eval(*e.children[0]), eval(*e.children[1]));
      case Expr::Type::kSlice:
        return slice(eval(*e.children[0]), e.children[1], e.children[2], e.children[3]);
      case Expr::Type::kCall: {
        const Value callee = eval(*e.children[0]);
        if (!callee.is(Kind::kFunction)) fail("calling something that is not a function");
        Args args;
        for (std::size_t i = 1; i < e.children.size(); ++i) args.push_back(eval(*e.children[i]));
        Kwargs kwargs;
        for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
        return (*callee.function)(args, kwargs);
      }
      case Expr::Type::kFilter: {
        Args args;
        for (const auto& c : e.children) args.push_back(eval(*c));
        Kwargs kwargs;
        for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
        return filter(e.name, args, kwargs);
      }
      case Expr::Type::kTest: {
        Args args;
        for (const auto& c : e.children) args.push_back(eval(*c));
        return Value::of(test(e.name, args) != e.negated);
      }
      case Expr::Type::kUnary: {
        const Value v = eval(*e.children[0]);
        if (e.name == "+") return v;
        if (v.is(Kind::kInt)) return Value::of(-v.integer);
        if (v.is(Kind::kFloat)) return Value::of(-v.number);
        fail("bad operand for unary -: " + repr(v));
      }
      case Expr::Type::kNot: return Value::of(!truthy(eval(*e.children[0])));
      case Expr::Type::kAnd: {
        Value left = eval(*e.children[0]);
        return truthy(left) ? eval(*e.children[1]) : left;
      }
      case Expr::Type::kOr: {
        Value left = eval(*e.children[0]);
        return truthy(left) ? left : eval(*e.children[1]);
      }
      case Expr::Type::kTernary:
        if (truthy(eval(*e.children[0]))) return eval(*e.children[1]);
        return e.children[2] ? eval(*e.children[2]) : Value{};
      case Expr::Type::kBinary: return binary(e.name, eval(*e.children[0]), eval(*e.children[1]));
    }
    return Value{};
  }

  static std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    if (b == 0) fail("division by zero");
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
  }

  static Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return Value::of(equal(a, b));
    if (op == "!=") return Value::of(!equal(a, b));
    if (op == "<") return Value::of(less(a, b));
    if (op == ">") return Value::of(less(b, a));
    if (op == "<=") return Value::of(!less(b, a));
    if (op == ">=") return Value::of(!less(a, b));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is(Kind::kString)) {
        found = b.string.find(to_str(a)) != std::string::npos;
      } else if (b.is(Kind::kDict)) {
        found = a.is(Kind::kString) && b.find(a.string) != nullptr;
      } else if (b.is(Kind::kList)) {
        found = std::any_of(b.list->begin(), b.list->end(),
                            [&](const Value& x) { return equal(x, a); });
      } else if (!b.is(Kind::kUndefined)) {
        fail("'in' needs a string, list or mapping on its right");
      }
      return Value::of(op == "in" ? found : !found);
    }
    if (op == "~") return Value::of(to_str(a) + to_str(b));
    if (op == "+") {
      if (a.is(Kind::kString) && b.is(Kind::kString)) return Value::of(a.string + b.string);
      if (a.is(Kind::kList) && b.is(Kind::kList)) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::of(std::move(l));
      }
    }
    if (op == "*" && a.is(Kind::kString) && b.is(Kind::kInt)) {
      std::string s;
      for (std::int64_t i = 0; i < b.integer; ++i) s += a.string;
      return Value::of(std::move(s));
    }
    if (!a.is_number() || !b.is_number())
      fail("unsupported operands for " + op + ": " + repr(a) + " and " + repr(b));
    const bool ints = a.is(Kind::kInt) && b.is(Kind::kInt);
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return ints ? Value::of(a.integer + b.integer) : Value::of(x + y);
    if (op == "-") return ints ? Value::of(a.integer - b.integer) : Value::of(x - y);
    if (op == "*") return ints ? Value::of(a.integer * b.integer) : Value::of(x * y);
    if (op == "/") {
      if (y == 0) fail("division by zero");
      return Value::of(x / y);
    }
    if (op == "//") {
      if (ints) return Value::of(floor_div(a.integer, b.integer));
      if (y == 0) fail("division by zero");
      return Value::of(std::floor(x / y));
    }
    if (op == "%") {
      if (ints) {
        if (b.integer == 0) fail("modulo by zero");
        return Value::of(a.integer - floor_div(a.integer, b.integer) * b.integer);
      }
      return Value::of(x - std::floor(x / y) * y);
    }
    if (op == "**") {
      if (ints && b.integer >= 0) {
        std::int64_t r = 1;
        for (std::int64_t i = 0; i < b.integer; ++i) r *= a.integer;
        return Value::of(r);
      }
      return Value::of(std::pow(x, y));
    }
    fail("unknown operator " + op);
  }

  static Value method(const Value& self, const std::string& name) {
    if (self.is(Kind::kString)) {
      const std::string s = self.string;
      const auto strip_chars = [](const Args& args) {
        return args.empty() || args[0].is(Kind::kNone) ? std::string(" \t\n\r\f\v")
                                                       : to_str(args[0]);
      };
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        return Value::of(Function([s, name, strip_chars](const Args& args, const Kwargs&) {
          const std::string chars = strip_chars(args);
          std::size_t begin = 0, end = s.size();
          if (name != "rstrip")
            while (begin < end && chars.find(s[begin]) != std::string::npos) ++begin;
          if (name != "lstrip")
            while (end > begin && chars.find(s[end - 1]) != std::string::npos) --end;
          return Value::of(s.substr(begin, end - begin));
        }));
      }
      if (name == "startswith" || name == "endswith") {
        return Value::of(Function([s, name](const Args& args, const Kwargs&) {
          List options = args.empty()              ? List{}
                         : args[0].is(Kind::kList) ? *args[0].list
                                                   : List{args[0]};
          for (const Value& o : options) {
            const std::string p = to_str(o);
            const bool hit =
                name == "startswith"
                    ? s.compare(0, p.size(), p) == 0
                    : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
            if (hit) return Value::of(true);
          }
          return Value::of(false);
        }));
      }
      if (name == "split") {
        return Value::of(Function([s](const Args& args, const Kwargs&) {
          List parts;
          if (args.empty() || args[0].is(Kind::kNone)) {
            std::size_t i = 0;
            while (i < s.size()) {
              while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
              std::size_t j = i;
              while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
              if (j > i) parts.push_back(Value::of(s.substr(i, j - i)));
              i = j;
            }
            return Value::of(std::move(parts));
          }
          const std::string sep = to_str(args[0]);
          if (sep.empty()) fail("split: empty separator");
          std::int64_t max_split = args.size() > 1 ? args[1].integer : -1;
          std::size_t start = 0;
          while (true) {
            const std::size_t at = s.find(sep, start);
            if (at == std::string::npos || max_split == 0) break;
            parts.push_back(Value::of(s.substr(start, at - start)));
            start = at + sep.size();
            --max_split;
          }
          parts.push_back(Value::of(s.substr(start)));
          return Value::of(std::move(parts));
        }));
      }
      if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        return Value::of(Function(
            [s, name](const Args&, const Kwargs&) { return Value::of(change_case(s, name)); }));
      }
      if (name == "replace") {
        return Value::of(Function([s](const Args& args, const Kwargs&) {
          if (args.size() < 2) fail("replace needs two arguments");
          return Value::of(replace_all(s, to_str(args[0]), to_str(args[1]),
                                       args.size() > 2 ? args[2].integer : -1));
        }));
      }
      if (name == "find" || name == "count") {
        return Value::of(Function([s, name](const Args& args, const Kwargs&) {
          const std::string needle = args.empty() ? "" : to_str(args[0]);
          if (name == "find") {
            const std::size_t at = s.find(needle);
            return Value::of(at == std::string::npos
                                 ? std::int64_t{-1}
                                 : static_cast<std::int64_t>(code_points(s.substr(0, at)).size()));
          }
          std::int64_t n = 0;
          for (std::size_t at = 0;
               !needle.empty() && (at = s.find(needle, at)) != std::string::npos;
               at += needle.size())
            ++n;
          return Value::of(n);
        }));
      }
      if (name == "join") {
        return Value::of(Function([s](const Args& args, const Kwargs&) {
          std::string out;
          const List items = args.empty() ? List{} : iterate(args[0]);
          for (std::size_t i = 0; i < items.size(); ++i) out += (i ? s : "") + to_str(items[i]);
          return Value::of(std::move(out));
        }));
      }
    }
    if (self.is(Kind::kDict) && !self.is_namespace) {
      if (name == "items" || name == "keys" || name == "values") {
        return Value::of(Function([self, name](const Args&, const Kwargs&) {
          List l;
          for (const auto& [k, v] : *self.dict) {
            if (name == "items")
              l.push_back(Value::of(List{Value::of(k), v}));
            else
              l.push_back(name == "keys" ? Value::of(k) : v);
          }
          return Value::of(std::move(l));
        }));
      }
      if (name == "get") {
        return Value::of(Function([self](const Args& args, const Kwargs&) {
          const Value* found = args.empty() ? nullptr : self.find(to_str(args[0]));
          if (found) return *found;
          return args.size() > 1 ? args[1] : Value::none();
        }));
      }
    }
    return Value{};
  }

  static Value attribute(const Value& v, const std::string& name) {
    Value m = method(v, name);
    if (!m.is(Kind::kUndefined)) return m;
    if (v.is(Kind::kDict)) {
      const Value* found = v.find(name);
      return found ? *found : Value{};
    }
    return Value{};
  }

  static Value item(const Value& v, const Value& key) {
    if (v.is(Kind::kDict)) {
      const Value* found = v.find(to_str(key));
      if (found) return *found;
      return method(v, to_str(key));
    }
    if ((v.is(Kind::kList) || v.is(Kind::kString)) && key.is(Kind::kInt)) {
      const List items = iterate(v);
      std::int64_t i = key.integer;
      if (i < 0) i += static_cast<std::int64_t>(items.size());
      if (i < 0 || i >= static_cast<std::int64_t>(items.size())) return Value{};
      return items[static_cast<std::size_t>(i)];
    }
    if (key.is(Kind::kString)) return attribute(v, key.string);
    return Value{};
  }

  Value slice(const Value& v, const ExprPtr& start_e, const ExprPtr& stop_e,
              const ExprPtr& step_e) {
    const List items = iterate(v);
    const auto n = static_cast<std::int64_t>(items.size());
    const std::int64_t step = step_e ? eval(*step_e).integer : 1;
    if (step == 0) fail("slice step cannot be zero");
    const auto bound = [&](const ExprPtr& e, std::int64_t fallback) {
      if (!e) return fallback;
      const Value x = eval(*e);
      if (x.is(Kind::kNone)) return fallback;
      std::int64_t i = x.integer;
      if (i < 0) i += n;
      return step > 0 ? std::clamp<std::int64_t>(i, 0, n) : std::clamp<std::int64_t>(i, -1, n - 1);
    };
    const std::int64_t start = bound(start_e, step > 0 ? 0 : n - 1);
    const std::int64_t stop = bound(stop_e, step > 0 ? n : -1);
    List out;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
      out.push_back(items[static_cast<std::size_t>(i)]);
    if (v.is(Kind::kString)) {
      std::string s;
      for (const Value& c : out) s += c.string;
      return Value::of(std::move(s));
    }
    return Value::of(std::move(out));
  }

  static std::string change_case(const std::string& s, const std::string& how) {
    std::string out = s;
    bool word_start = true;
    for (std::size_t i = 0; i < out.size(); ++i) {
      char& c = out[i];
      const bool alpha = std::isalpha(static_cast<unsigned char>(c));
      if (how == "upper")
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      else if (how == "lower")
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      else if (how == "capitalize")
        c = static_cast<char>(i == 0 ? std::toupper(static_cast<unsigned char>(c))
                                     : std::tolower(static_cast<unsigned char>(c)));
      else  // title
        c = static_cast<char>(word_start ? std::toupper(static_cast<unsigned char>(c))
                                         : std::tolower(static_cast<unsigned char>(c)));
      word_start = !alpha;
    }
    return out;
  }

  static std::string replace_all(const std::string& s, const std::string& from,
                                 const std::string& to, std::int64_t count) {
    if (from.empty()) return s;
    std::string out;
    std::size_t start = 0;
    while (count != 0) {
      const std::size_t at = s.find(from, start);
      if (at == std::string::npos) break;
      out += s.substr(start, at - start) + to;
      start = at + from.size();
      --count;
    }
    return out + s.substr(start);
  }

  static const Value* kwarg(const Kwargs& kwargs, std::string_view name) {
    for (const auto& [k, v] : kwargs)
      if (k == name) return &v;
    return nullptr;
  }

  bool test(const std::string& name, const Args& args) {
    const Value& v = args[0];
    const Value other = args.size() > 1 ? args[1] : Value{};
    if (name == "defined") return !v.is(Kind::kUndefined);
    if (name == "undefined") return v.is(Kind::kUndefined);
    if (name == "none") return v.is(Kind::kNone);
    if (name == "string") return v.is(Kind::kString);
    if (name == "number") return v.is_number();
    if (name == "integer") return v.is(Kind::kInt);
    if (name == "float") return v.is(Kind::kFloat);
    if (name == "boolean") return v.is(Kind::kBool);
    if (name == "true") return v.is(Kind::kBool) && v.boolean;
    if (name == "false") return v.is(Kind::kBool) && !v.boolean;
    if (name == "mapping") return v.is(Kind::kDict) && !v.is_namespace;
    if (name == "iterable") return v.is(Kind::kList) || v.is(Kind::kString) || v.is(Kind::kDict);
    if (name == "sequence") return v.is(Kind::kList) || v.is(Kind::kString) || v.is(Kind::kDict);
    if (name == "callable") return v.is(Kind::kFunction);
    if (name == "even") return v.is(Kind::kInt) && v.integer % 2 == 0;
    if (name == "odd") return v.is(Kind::kInt) && v.integer % 2 != 0;
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, other);
    if (name == "ne" || name == "!=") return !equal(v, other);
    if (name == "gt" || name == "greaterthan") return less(other, v);
    if (name == "ge") return !less(v, other);
    if (name == "lt" || name == "lessthan") return less(v, other);
    if (name == "le") return !less(other, v);
    if (name == "in") return truthy(binary("in", v, other));
    fail("the test '" + name + "' is not supported");
  }

  Value filter(const std::string& name, const Args& args, const Kwargs& kwargs) {
    const Value& v = args[0];
    const auto arg = [&](std::size_t i, std::string_view key) -> const Value* {
      if (const Value* k = kwarg(kwargs, key)) return k;
      return i < args.size() ? &args[i] : nullptr;
    };
    if (name == "trim") {
      return (*method(Value::of(to_str(v)), "strip").function)(
          arg(1, "chars") ? Args{*arg(1, "chars")} : Args{}, {});
    }
    if (name == "tojson") {
      const Value* indent = arg(1, "indent");
      const Value* separators = kwarg(kwargs, "separators");
      const Value* sort_keys = kwarg(kwargs, "sort_keys");
      const Value* ensure_ascii = kwarg(kwargs, "ensure_ascii");
      const int spaces = indent && indent->is(Kind::kInt) ? static_cast<int>(indent->integer) : -1;
      std::string item_sep = spaces >= 0 ? "," : ", ", key_sep = ": ";
      if (separators && separators->is(Kind::kList) && separators->list->size() == 2) {
        item_sep = to_str((*separators->list)[0]);
        key_sep = to_str((*separators->list)[1]);
      }
      std::string out;
      dump_json(v, out, spaces, 0, item_sep, key_sep, sort_keys && truthy(*sort_keys),
                ensure_ascii && truthy(*ensure_ascii));
      return Value::of(std::move(out));
    }
    if (name == "length" || name == "count") {
      if (v.is(Kind::kString))
        return Value::of(static_cast<std::int64_t>(code_points(v.string).size()));
      return Value::of(static_cast<std::int64_t>(iterate(v).size()));
    }
    if (name == "first" || name == "last") {
      const List items = iterate(v);
      if (items.empty()) return Value{};
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const Value* sep = arg(1, "d");
      const Value* attr = kwarg(kwargs, "attribute");
      std::string out;
      const List items = iterate(v);
      for (std::size_t i = 0; i < items.size(); ++i) {
        if (i && sep) out += to_str(*sep);
        out += to_str(attr ? attribute(items[i], to_str(*attr)) : items[i]);
      }
      return Value::of(std::move(out));
    }
    if (name == "default" || name == "d") {
      const Value* fallback = arg(1, "default_value");
      const Value* boolean = arg(2, "boolean");
      const bool use = v.is(Kind::kUndefined) || (boolean && truthy(*boolean) && !truthy(v));
      return use ? (fallback ? *fallback : Value::of(std::string())) : v;
    }
    if (name == "upper" || name == "lower" || name == "capitalize" || name == "title")
      return Value::of(change_case(to_str(v), name));
    if (name == "replace") {
      if (args.size() < 3) fail("replace needs two arguments");
      return Value::of(replace_all(to_str(v), to_str(args[1]), to_str(args[2]),
                                   args.size() > 3 ? args[3].integer : -1));
    }
    if (name == "list") return Value::of(iterate(v));
    if (name == "string") return Value::of(to_str(v));
    if (name == "safe") return v;
    if (name == "int") {
      if (v.is(Kind::kFloat)) return Value::of(static_cast<std::int64_t>(v.number));
      if (v.is(Kind::kString)) {
        try {
          return Value::of(static_cast<std::int64_t>(std::stoll(v.string)));
        } catch (const std::exception&) {
          return Value::of(std::int64_t{0});
        }
      }
      return v.is(Kind::kBool) ? Value::of(std::int64_t{v.boolean}) : v;
    }
    if (name == "float") {
      if (v.is(Kind::kString)) {
        try {
          return Value::of(std::stod(v.string));
        } catch (const std::exception&) {
          return Value::of(0.0);
        }
      }
      return Value::of(v.as_double());
    }
    if (name == "abs")
      return v.is(Kind::kInt) ? Value::of(std::abs(v.integer)) : Value::of(std::fabs(v.number));
    if (name == "items") {
      if (!v.is(Kind::kDict)) return Value::of(List{});
      return (*method(v, "items").function)({}, {});
    }
    if (name == "reverse") {
      if (v.is(Kind::kString)) {
        auto chars = code_points(v.string);
        std::reverse(chars.begin(), chars.end());
        std::string s;
        for (const auto& c : chars) s += c;
        return Value::of(std::move(s));
      }
      List items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::of(std::move(items));
    }
    if (name == "unique") {
      List out;
      for (const Value& x : iterate(v))
        if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return equal(x, y); }))
          out.push_back(x);
      return Value::of(std::move(out));
    }
    if (name == "sort") {
      List items = iterate(v);
      const Value* attr = kwarg(kwargs, "attribute");
      const Value* reverse = arg(1, "reverse");
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        return attr ? less(attribute(a, to_str(*attr)), attribute(b, to_str(*attr))) : less(a, b);
      });
      if (reverse && truthy(*reverse)) std::reverse(items.begin(), items.end());
      return Value::of(std::move(items));
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attr = name.ends_with("attr");
      const bool keep_if = name.starts_with("select");
      List out;
      for (const Value& x : iterate(v)) {
        const Value subject = by_attr ? attribute(x, to_str(args.at(1))) : x;
        const std::size_t test_at = by_attr ? 2 : 1;
        bool passed;
        if (args.size() > test_at) {
          Args test_args{subject};
          test_args.insert(test_args.end(), args.begin() + static_cast<std::ptrdiff_t>(test_at) + 1,
                           args.end());
          passed = test(to_str(args[test_at]), test_args);
        } else {
          passed = truthy(subject);
        }
        if (passed == keep_if) out.push_back(x);
      }
      return Value::of(std::move(out));
    }
    if (name == "map") {
      List out;
      const Value* attr = kwarg(kwargs, "attribute");
      for (const Value& x : iterate(v)) {
        if (attr) {
          out.push_back(attribute(x, to_str(*attr)));
        } else {
          Args filter_args{x};
          filter_args.insert(filter_args.end(), args.begin() + 2, args.end());
          out.push_back(filter(to_str(args.at(1)), filter_args, {}));
        }
      }
      return Value::of(std::move(out));
    }
    fail("the filter '" + name + "' is not supported");
  }

  std::vector<std::unordered_map<std::string, Value>> scopes_;
};

}  // namespace chat_template_detail

Result<ChatTemplate> ChatTemplate::parse(std::string_view source) {
  using namespace chat_template_detail;
  try {
    auto root = std::make_shared<Node>();
    root->type = Node::Type::kSequence;
    root->body = TemplateParser(split_template(source)).parse_all();
    ChatTemplate t;
    t.root_ = std::move(root);
    return t;
  } catch (const RenderError& e) {
    return invalid_argument(fmt::format("chat template: {}", e.what()));
  }
}

Result<std::string> ChatTemplate::render(const nlohmann::ordered_json& context) const {
  using namespace chat_template_detail;
  if (!root_) return internal_error("chat template: not parsed");
  try {
    Renderer renderer(context);
    std::string out;
    renderer.render(root_->body, out);
    return out;
  } catch (const RenderError& e) {
    return invalid_argument(fmt::format("chat template: {}", e.what()));
  }
}

Result<std::string> CheckpointChat::render(const nlohmann::ordered_json& messages,
                                           bool add_generation_prompt) const {
  nlohmann::ordered_json context;
  context["messages"] = messages;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  for (const auto& [name, value] : special_tokens.items()) context[name] = value;
  return chat_template.render(context);
}

Result<std::optional<CheckpointChat>> load_checkpoint_chat(const std::string& dir) {
  const auto read = [](const std::filesystem::path& path) -> std::optional<std::string> {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  const std::filesystem::path root(dir);
  std::optional<std::string> source = read(root / "chat_template.jinja");
  nlohmann::ordered_json special = nlohmann::ordered_json::object();
  if (const auto config_text = read(root / "tokenizer_config.json")) {
    nlohmann::ordered_json config;
    try {
      config = nlohmann::ordered_json::parse(*config_text);
    } catch (const nlohmann::json::exception& e) {
      return invalid_argument(
          fmt::format("'{}': {}", (root / "tokenizer_config.json").string(), e.what()));
    }
    const auto template_field = config.value("chat_template", nlohmann::ordered_json());
    if (!source && template_field.is_string()) source = template_field.get<std::string>();
    if (!source && template_field.is_array()) {
      for (const auto& named : template_field)
        if (named.value("name", "") == "default") source = named.value("template", "");
    }
    for (const char* name : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
      const auto token = config.value(name, nlohmann::ordered_json());
      if (token.is_string()) special[name] = token;
      if (token.is_object() && token.contains("content")) special[name] = token["content"];
    }
  }
  if (!source) return std::optional<CheckpointChat>();
  PODSERVE_ASSIGN_OR_RETURN(ChatTemplate parsed, ChatTemplate::parse(*source));
  return std::optional<CheckpointChat>(CheckpointChat{std::move(parsed), std::move(special)});
}

}  // namespace podserve
