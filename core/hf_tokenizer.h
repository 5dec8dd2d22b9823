// Hugging Face byte-level BPE tokenizers (tokenizer.json) as Llama-3, Qwen2 and GPT-2-style
// checkpoints ship them: added/special tokens split out first, then the normalizer (none or
// NFC), the pre-tokenizer, byte-level BPE over each piece, and the byte-level decoder.
//
// Supported tokenizer.json parts (anything else is refused at load, naming it):
//   normalizer     null, NFC, or a Sequence of those
//   pre_tokenizer  ByteLevel (GPT-2's regex when use_regex), or a Sequence of a Split on the
//                  Llama-3 or Qwen2 regex (behavior Isolated) and ByteLevel(use_regex false)
//   model          BPE (merges as "a b" strings or pairs; ignore_merges; no dropout, no
//                  continuing-subword prefix or end-of-word suffix)
//   post_processor null, ByteLevel, or TemplateProcessing (its special tokens around a single
//                  sequence are added when encode() is asked to add special tokens)
//   decoder        ByteLevel
// The pre-tokenizer regexes are matched by hand-written scanners (the same alternation order
// and backtracking as the regex), with Unicode letter/number/white-space classes from ICU.
//
// Thread-safe after load (every method is const and keeps no state); encode() of English text
// runs at several million tokens per second on one core (docs/tokenizers.md).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "core/text_tokenizer.h"
#include "core/types.h"

namespace podserve {

// The pre-tokenizer regex families supported.
enum class PreTokenizerKind : std::uint8_t { kLlama3, kQwen2, kGpt2 };

class HfTokenizer final : public TextTokenizer {
 public:
  // Reads `path` (a tokenizer.json file, or a directory holding one).
  static Result<std::unique_ptr<HfTokenizer>> load(const std::string& path);

  // Token ids of `text`. Added tokens (special or not) written in the text become their ids.
  std::vector<TokenId> encode(std::string_view text) const override;
  // The same with the post-processor's tokens (e.g. BOS) around the result.
  std::vector<TokenId> encode_with_special_tokens(std::string_view text) const override;
  // The text of `ids`: their bytes concatenated (special tokens left out when asked); bytes
  // that do not form valid UTF-8 are kept as they are (the caller decides what to do with them).
  std::string decode(std::span<const TokenId> ids, bool skip_special_tokens) const;
  std::string decode(std::span<const TokenId> ids) const override { return decode(ids, true); }
  std::string_view kind() const override { return "tokenizer.json"; }
  // The bytes one id stands for (empty for an unknown id, and for a special token when
  // skip_special_tokens).
  std::string_view token_bytes(TokenId id, bool skip_special_tokens = true) const;

  // Splits `text` as the pre-tokenizer does (after the normalizer; no added-token handling),
  // for tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  // Ids 0..vocab_size()-1 may be valid (model vocabulary plus added tokens).
  std::int32_t vocab_size() const override {
    return static_cast<std::int32_t>(id_to_bytes_.size());
  }
  std::optional<TokenId> token_id(std::string_view token_text) const;
  bool is_special(TokenId id) const;
  PreTokenizerKind pre_tokenizer_kind() const { return pre_tokenizer_; }

 private:
  struct AddedToken {
    std::string content;
    TokenId id = 0;
    bool special = false;
    bool lstrip = false, rstrip = false;
  };
  struct Merge {
    std::int32_t rank = 0;
    TokenId merged = 0;
  };

  HfTokenizer() = default;
  // Appends the BPE ids of one pre-tokenized piece (raw bytes).
  void encode_piece(std::string_view piece, std::vector<TokenId>& out) const;
  // Appends the ids of text without added tokens in it.
  void encode_ordinary(std::string_view text, std::vector<TokenId>& out) const;
  std::vector<TokenId> encode_impl(std::string_view text, bool add_special_tokens) const;

  PreTokenizerKind pre_tokenizer_ = PreTokenizerKind::kLlama3;
  bool nfc_ = false;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, TokenId> bytes_to_id_;  // raw bytes -> id (model vocabulary)
  std::vector<std::string> id_to_bytes_;                  // [vocab_size] raw bytes
  std::vector<std::uint8_t> special_;                     // [vocab_size] 1: a special token
  std::unordered_map<std::uint64_t, Merge> merges_;       // (left id << 32 | right id) -> merge
  std::array<TokenId, 256> byte_ids_{};                   // the id of each single byte
  std::vector<AddedToken> added_;                         // longest content first
  std::array<bool, 256> added_first_byte_{};              // some added token starts with it
  std::vector<TokenId> prefix_special_, suffix_special_;  // post-processor, single sequence
};

}  // namespace podserve
