#include "core/hf_tokenizer.h"

#include <fmt/format.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace podserve {
namespace {

// The pre-tokenizer regexes, as tokenizer.json writes them.
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's byte-to-character map (byte-level BPE stores byte b as this code point): printable
// Latin-1 bytes map to themselves, the other 68 bytes to 256, 257, ... in byte order.
std::array<char32_t, 256> byte_to_char() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    map[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}

// One code point of UTF-8 at `i`: its value and byte length (an invalid byte is one unit of
// value 0xFFFFFFFF, which is in no character class).
struct CodePoint {
  char32_t value;
  std::size_t length;
};

CodePoint decode_utf8(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {b0, 1};
  const std::size_t length = b0 >= 0xF0 && b0 < 0xF8 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC2 ? 2 : 0;
  if (length == 0 || b0 >= 0xF8 || i + length > s.size()) return {0xFFFFFFFF, 1};
  char32_t value = b0 & (0x7F >> length);
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return {0xFFFFFFFF, 1};
    value = (value << 6) | (byte(i + k) & 0x3F);
  }
  return {value, length};
}

enum class CharClass : std::uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass classify(char32_t c) {
  if (c < 0x80) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CharClass::kLetter;
    if (c >= '0' && c <= '9') return CharClass::kNumber;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return CharClass::kSpace;
    return CharClass::kOther;
  }
  if (c > 0x10FFFF) return CharClass::kOther;
  const auto cp = static_cast<UChar32>(c);
  if (U_GET_GC_MASK(cp) & U_GC_L_MASK) return CharClass::kLetter;
  if (U_GET_GC_MASK(cp) & U_GC_N_MASK) return CharClass::kNumber;
  if (u_isUWhiteSpace(cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

// The text as code points with their classes and byte offsets, for the scanners.
struct Chars {
  std::vector<char32_t> value;
  std::vector<CharClass> cls;
  std::vector<std::size_t> offset;  // [n + 1]: byte offset of each code point, then the end

  explicit Chars(std::string_view s) {
    value.reserve(s.size());
    cls.reserve(s.size());
    offset.reserve(s.size() + 1);
    for (std::size_t i = 0; i < s.size();) {
      const CodePoint cp = decode_utf8(s, i);
      value.push_back(cp.value);
      cls.push_back(classify(cp.value));
      offset.push_back(i);
      i += cp.length;
    }
    offset.push_back(s.size());
  }
  std::size_t size() const { return value.size(); }
  bool is(std::size_t i, CharClass c) const { return i < size() && cls[i] == c; }
  bool is_newline(std::size_t i) const {
    return i < size() && (value[i] == '\r' || value[i] == '\n');
  }
};

char32_t lower_ascii(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's 't 're 've 'm 'll 'd at i: their length in code points, or 0.
std::size_t match_contraction(const Chars& t, std::size_t i, bool ignore_case) {
  if (t.value[i] != '\'' || i + 1 >= t.size()) return 0;
  const auto at = [&](std::size_t k) {
    return k < t.size() ? (ignore_case ? lower_ascii(t.value[k]) : t.value[k]) : 0;
  };
  const char32_t a = at(i + 1), b = at(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

std::size_t run_end(const Chars& t, std::size_t i, CharClass c) {
  while (t.is(i, c)) ++i;
  return i;
}

// The end of the match of `\s+(?!\S)|\s+` at i (a space), given the run end.
std::size_t match_spaces(const Chars& t, std::size_t i, std::size_t end) {
  if (end == t.size() || end - i < 2) return end;
  return end - 1;  // leave the last space to the next piece
}

// Llama-3 / Qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
std::size_t match_llama3(const Chars& t, std::size_t i, std::size_t max_digits) {
  if (std::size_t n = match_contraction(t, i, true)) return i + n;
  const CharClass c = t.cls[i];
  if (c == CharClass::kLetter) return run_end(t, i, CharClass::kLetter);
  if (c != CharClass::kNumber && !t.is_newline(i) && t.is(i + 1, CharClass::kLetter))
    return run_end(t, i + 1, CharClass::kLetter);
  if (c == CharClass::kNumber) {
    std::size_t end = i;
    while (end - i < max_digits && t.is(end, CharClass::kNumber)) ++end;
    return end;
  }
  const std::size_t start = t.value[i] == ' ' && t.is(i + 1, CharClass::kOther) ? i + 1 : i;
  if (t.is(start, CharClass::kOther)) {
    std::size_t end = run_end(t, start, CharClass::kOther);
    while (t.is_newline(end)) ++end;
    return end;
  }
  // c is a space.
  const std::size_t end = run_end(t, i, CharClass::kSpace);
  for (std::size_t k = end; k > i; --k) {
    if (t.is_newline(k - 1)) return k;  // \s*[\r\n]+: up to the run's last line break
  }
  return match_spaces(t, i, end);
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::size_t match_gpt2(const Chars& t, std::size_t i) {
  if (std::size_t n = match_contraction(t, i, false)) return i + n;
  const std::size_t start =
      t.value[i] == ' ' && i + 1 < t.size() && t.cls[i + 1] != CharClass::kSpace ? i + 1 : i;
  const CharClass c = t.cls[start];
  if (c != CharClass::kSpace) return run_end(t, start, c);
  return match_spaces(t, i, run_end(t, i, CharClass::kSpace));
}

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char ch) { return (ch & 0x80) == 0; }))
    return std::string(text);
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(error);
  if (U_FAILURE(error)) return std::string(text);
  const icu::StringPiece piece(text.data(), static_cast<std::int32_t>(text.size()));
  if (normalizer->isNormalizedUTF8(piece, error) && U_SUCCESS(error)) return std::string(text);
  error = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out);
  normalizer->normalizeUTF8(0, piece, sink, nullptr, error);
  return U_SUCCESS(error) ? out : std::string(text);
}

Status unsupported(std::string_view what, const nlohmann::json& j) {
  return invalid_argument(
      fmt::format("tokenizer.json: {} is not supported: {}", what, j.dump().substr(0, 200)));
}

}  // namespace

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  std::ifstream in(file);
  if (!in) return not_found(fmt::format("cannot open '{}'", file.string()));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", file.string(), e.what()));
  }
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  try {
    // Normalizer.
    const auto read_normalizer = [&](const nlohmann::json& n, auto& self) -> Status {
      if (n.is_null()) return Status::Ok();
      const std::string type = n.at("type");
      if (type == "NFC") {
        tok->nfc_ = true;
        return Status::Ok();
      }
      if (type == "Sequence") {
        for (const auto& part : n.at("normalizers")) PODSERVE_RETURN_IF_ERROR(self(part, self));
        return Status::Ok();
      }
      return unsupported("normalizer", n);
    };
    PODSERVE_RETURN_IF_ERROR(
        read_normalizer(j.value("normalizer", nlohmann::json()), read_normalizer));
    // Pre-tokenizer.
    const nlohmann::json& pre = j.at("pre_tokenizer");
    const auto byte_level_ok = [&](const nlohmann::json& p, bool use_regex) {
      return p.value("type", "") == "ByteLevel" && p.value("use_regex", true) == use_regex;
    };
    if (byte_level_ok(pre, true)) {
      tok->pre_tokenizer_ = PreTokenizerKind::kGpt2;
      tok->add_prefix_space_ = pre.value("add_prefix_space", false);
    } else if (pre.value("type", "") == "Sequence" && pre.at("pretokenizers").size() == 2 &&
               pre["pretokenizers"][0].value("type", "") == "Split" &&
               byte_level_ok(pre["pretokenizers"][1], false)) {
      const nlohmann::json& split = pre["pretokenizers"][0];
      const std::string pattern = split.at("pattern").value("Regex", "");
      if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
        return unsupported("Split pre-tokenizer", split);
      if (pattern == kLlama3Pattern)
        tok->pre_tokenizer_ = PreTokenizerKind::kLlama3;
      else if (pattern == kQwen2Pattern)
        tok->pre_tokenizer_ = PreTokenizerKind::kQwen2;
      else
        return unsupported("Split regex", split.at("pattern"));
      tok->add_prefix_space_ = pre["pretokenizers"][1].value("add_prefix_space", false);
    } else {
      return unsupported("pre_tokenizer", pre);
    }
    // Decoder.
    const nlohmann::json& decoder = j.at("decoder");
    if (decoder.value("type", "") != "ByteLevel") return unsupported("decoder", decoder);
    // Model.
    const nlohmann::json& model = j.at("model");
    if (model.value("type", "") != "BPE") return unsupported("model", model);
    if (!model.value("dropout", nlohmann::json()).is_null() ||
        !model.value("continuing_subword_prefix", nlohmann::json()).is_null() ||
        !model.value("end_of_word_suffix", nlohmann::json()).is_null() ||
        model.value("byte_fallback", false)) {
      return unsupported("BPE option (dropout, subword prefix/suffix, byte_fallback)", model);
    }
    tok->ignore_merges_ = model.value("ignore_merges", false);
    std::array<int, 0x200> char_to_byte{};
    char_to_byte.fill(-1);
    const auto table = byte_to_char();
    for (int b = 0; b < 256; ++b) char_to_byte[table[static_cast<std::size_t>(b)]] = b;
    // A vocabulary string (byte-level characters) as the raw bytes it stands for.
    const auto raw_bytes = [&](std::string_view token) -> Result<std::string> {
      std::string out;
      for (std::size_t i = 0; i < token.size();) {
        const CodePoint cp = decode_utf8(token, i);
        if (cp.value >= char_to_byte.size() || char_to_byte[cp.value] < 0)
          return invalid_argument(fmt::format("vocabulary entry '{}' is not byte-level", token));
        out += static_cast<char>(char_to_byte[cp.value]);
        i += cp.length;
      }
      return out;
    };
    std::int32_t size = 0;
    for (const auto& [token, id] : model.at("vocab").items())
      size = std::max(size, id.get<int>() + 1);
    for (const auto& added : j.value("added_tokens", nlohmann::json::array()))
      size = std::max(size, added.at("id").get<int>() + 1);
    tok->id_to_bytes_.assign(static_cast<std::size_t>(size), std::string());
    tok->special_.assign(static_cast<std::size_t>(size), 0);
    for (const auto& [token, id] : model.at("vocab").items()) {
      PODSERVE_ASSIGN_OR_RETURN(std::string bytes, raw_bytes(token));
      tok->id_to_bytes_[static_cast<std::size_t>(id.get<int>())] = bytes;
      tok->bytes_to_id_.emplace(std::move(bytes), id.get<TokenId>());
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = tok->bytes_to_id_.find(std::string(1, static_cast<char>(b)));
      if (it == tok->bytes_to_id_.end())
        return invalid_argument(fmt::format("tokenizer.json: byte {} has no token", b));
      tok->byte_ids_[static_cast<std::size_t>(b)] = it->second;
    }
    std::int32_t rank = 0;
    for (const auto& merge : model.at("merges")) {
      std::string left, right;
      if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const std::size_t space = text.find(' ');
        if (space == std::string::npos) return unsupported("merge", merge);
        left = text.substr(0, space);
        right = text.substr(space + 1);
      } else {
        left = merge.at(0).get<std::string>();
        right = merge.at(1).get<std::string>();
      }
      PODSERVE_ASSIGN_OR_RETURN(const std::string left_bytes, raw_bytes(left));
      PODSERVE_ASSIGN_OR_RETURN(const std::string right_bytes, raw_bytes(right));
      const auto l = tok->bytes_to_id_.find(left_bytes);
      const auto r = tok->bytes_to_id_.find(right_bytes);
      const auto m = tok->bytes_to_id_.find(left_bytes + right_bytes);
      if (l == tok->bytes_to_id_.end() || r == tok->bytes_to_id_.end() ||
          m == tok->bytes_to_id_.end()) {
        return invalid_argument(
            fmt::format("tokenizer.json: merge {} has a part not in the vocab", merge.dump()));
      }
      const std::uint64_t key = (std::uint64_t{static_cast<std::uint32_t>(l->second)} << 32) |
                                static_cast<std::uint32_t>(r->second);
      tok->merges_.emplace(key, Merge{rank++, m->second});
    }
    // Added tokens (raw text, not byte-level).
    for (const auto& added : j.value("added_tokens", nlohmann::json::array())) {
      AddedToken a;
      a.content = added.at("content").get<std::string>();
      a.id = added.at("id").get<TokenId>();
      a.special = added.value("special", false);
      a.lstrip = added.value("lstrip", false);
      a.rstrip = added.value("rstrip", false);
      if (a.content.empty()) continue;
      tok->id_to_bytes_[static_cast<std::size_t>(a.id)] = a.content;
      tok->special_[static_cast<std::size_t>(a.id)] = a.special ? 1 : 0;
      tok->added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
      tok->added_.push_back(std::move(a));
    }
    std::stable_sort(tok->added_.begin(), tok->added_.end(),
                     [](const AddedToken& a, const AddedToken& b) {
                       return a.content.size() > b.content.size();
                     });
    // Post-processor: special tokens around a single sequence.
    const nlohmann::json post = j.value("post_processor", nlohmann::json());
    if (!post.is_null()) {
      const std::string type = post.value("type", "");
      const auto read_template = [&](const nlohmann::json& p) -> Status {
        bool after = false;
        for (const auto& piece : p.at("single")) {
          if (piece.contains("Sequence")) {
            after = true;
            continue;
          }
          const std::string name = piece.at("SpecialToken").at("id");
          for (const auto& id : p.at("special_tokens").at(name).at("ids"))
            (after ? tok->suffix_special_ : tok->prefix_special_).push_back(id.get<TokenId>());
        }
        return Status::Ok();
      };
      if (type == "TemplateProcessing") {
        PODSERVE_RETURN_IF_ERROR(read_template(post));
      } else if (type == "Sequence") {
        for (const auto& p : post.at("processors")) {
          if (p.value("type", "") == "TemplateProcessing")
            PODSERVE_RETURN_IF_ERROR(read_template(p));
          else if (p.value("type", "") != "ByteLevel")
            return unsupported("post_processor", p);
        }
      } else if (type != "ByteLevel") {
        return unsupported("post_processor", post);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("'{}': {}", file.string(), e.what()));
  }
  return tok;
}

std::vector<std::string> HfTokenizer::pre_tokenize(std::string_view text) const {
  std::string normalized = nfc_ ? nfc(text) : std::string(text);
  if (add_prefix_space_ && !normalized.empty() && normalized.front() != ' ')
    normalized.insert(normalized.begin(), ' ');
  const Chars chars(normalized);
  std::vector<std::string> pieces;
  for (std::size_t i = 0; i < chars.size();) {
    std::size_t end = 0;
    switch (pre_tokenizer_) {
      case PreTokenizerKind::kLlama3: end = match_llama3(chars, i, 3); break;
      case PreTokenizerKind::kQwen2: end = match_llama3(chars, i, 1); break;
      case PreTokenizerKind::kGpt2: end = match_gpt2(chars, i); break;
    }
    pieces.emplace_back(normalized.substr(chars.offset[i], chars.offset[end] - chars.offset[i]));
    i = end;
  }
  return pieces;
}

void HfTokenizer::encode_piece(std::string_view piece, std::vector<TokenId>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (ignore_merges_) {
    const auto whole = bytes_to_id_.find(std::string(piece));
    if (whole != bytes_to_id_.end()) {
      out.push_back(whole->second);
      return;
    }
  }
  // ids[k]: the symbols so far; ranks[k]: the merge rank of (ids[k], ids[k+1]) or INT_MAX.
  thread_local std::vector<TokenId> ids;
  thread_local std::vector<std::int32_t> ranks;
  thread_local std::vector<TokenId> merged_ids;
  ids.clear();
  for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
  const auto lookup = [&](std::size_t k, TokenId* merged) {
    const std::uint64_t key = (std::uint64_t{static_cast<std::uint32_t>(ids[k])} << 32) |
                              static_cast<std::uint32_t>(ids[k + 1]);
    const auto it = merges_.find(key);
    if (it == merges_.end()) return INT_MAX;
    *merged = it->second.merged;
    return it->second.rank;
  };
  ranks.assign(ids.size() - 1, INT_MAX);
  merged_ids.assign(ids.size() - 1, 0);
  for (std::size_t k = 0; k + 1 < ids.size(); ++k) ranks[k] = lookup(k, &merged_ids[k]);
  while (ids.size() > 1) {
    std::size_t best = 0;
    for (std::size_t k = 1; k < ranks.size(); ++k)
      if (ranks[k] < ranks[best]) best = k;  // the lowest rank, leftmost on ties
    if (ranks[best] == INT_MAX) break;
    ids[best] = merged_ids[best];
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best));
    merged_ids.erase(merged_ids.begin() + static_cast<std::ptrdiff_t>(best));
    if (best < ranks.size()) ranks[best] = lookup(best, &merged_ids[best]);
    if (best > 0) ranks[best - 1] = lookup(best - 1, &merged_ids[best - 1]);
  }
  out.insert(out.end(), ids.begin(), ids.end());
}

void HfTokenizer::encode_ordinary(std::string_view text, std::vector<TokenId>& out) const {
  if (text.empty()) return;
  for (const std::string& piece : pre_tokenize(text)) encode_piece(piece, out);
}

std::vector<TokenId> HfTokenizer::encode(std::string_view text) const {
  return encode_impl(text, false);
}

std::vector<TokenId> HfTokenizer::encode_with_special_tokens(std::string_view text) const {
  return encode_impl(text, true);
}

std::vector<TokenId> HfTokenizer::encode_impl(std::string_view text,
                                              bool add_special_tokens) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special_tokens) out.insert(out.end(), prefix_special_.begin(), prefix_special_.end());
  // Split at added tokens (longest first at each position); the text between goes to BPE.
  std::size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    if (!added_first_byte_[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    for (const AddedToken& a : added_) {
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    std::size_t before_end = i, after = i + hit->content.size();
    const auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
    if (hit->lstrip)
      while (before_end > start && is_space(text[before_end - 1])) --before_end;
    if (hit->rstrip)
      while (after < text.size() && is_space(text[after])) ++after;
    encode_ordinary(text.substr(start, before_end - start), out);
    out.push_back(hit->id);
    start = i = after;
  }
  encode_ordinary(text.substr(start), out);
  if (add_special_tokens) out.insert(out.end(), suffix_special_.begin(), suffix_special_.end());
  return out;
}

std::string_view HfTokenizer::token_bytes(TokenId id, bool skip_special_tokens) const {
  if (id < 0 || id >= vocab_size()) return {};
  if (skip_special_tokens && special_[static_cast<std::size_t>(id)]) return {};
  return id_to_bytes_[static_cast<std::size_t>(id)];
}

std::string HfTokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string out;
  for (TokenId id : ids) out += token_bytes(id, skip_special_tokens);
  return out;
}

std::optional<TokenId> HfTokenizer::token_id(std::string_view token_text) const {
  for (const AddedToken& a : added_)
    if (a.content == token_text) return a.id;
  const auto it = bytes_to_id_.find(std::string(token_text));
  if (it == bytes_to_id_.end()) return std::nullopt;
  return it->second;
}

bool HfTokenizer::is_special(TokenId id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<std::size_t>(id)] != 0;
}

}  // namespace podserve
