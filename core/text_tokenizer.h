// The tokenizer a checkpoint ships, behind one interface: Hugging Face byte-level BPE
// (tokenizer.json, core/hf_tokenizer.h) or SentencePiece (tokenizer.model,
// core/sp_tokenizer.h). The router encodes text prompts and decodes replies through it.
//
// decode() must be prefix-stable: the decoding of ids[0..n) is a prefix of the decoding of
// ids[0..m) for n < m, as byte concatenations are (streams send the new part of the text; a
// UTF-8 character split across tokens is held back by the stream, not by the tokenizer).
// Implementations are thread-safe after load.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

class TextTokenizer {
 public:
  virtual ~TextTokenizer() = default;
  // The ids of `text`, without BOS or other added-around tokens.
  virtual std::vector<TokenId> encode(std::string_view text) const = 0;
  // The same with the tokens the checkpoint's tokenizer puts around a text (transformers'
  // encode with add_special_tokens=True: BOS for Llama-3, Llama-2 and Mistral, none for Qwen2).
  virtual std::vector<TokenId> encode_with_special_tokens(std::string_view text) const = 0;
  // The bytes of `ids`, special tokens left out.
  virtual std::string decode(std::span<const TokenId> ids) const = 0;
  // Ids 0..vocab_size()-1 may be valid.
  virtual std::int32_t vocab_size() const = 0;
  virtual std::string_view kind() const = 0;  // "tokenizer.json" or "tokenizer.model"
};

// DIR/tokenizer.json when present and supported, else DIR/tokenizer.model (Llama-2 and Mistral
// ship a SentencePiece-style tokenizer.json, which HfTokenizer refuses, beside it); the
// tokenizer.json error when there is no tokenizer.model; kNotFound when it has neither.
Result<std::unique_ptr<TextTokenizer>> load_checkpoint_tokenizer(const std::string& dir);

}  // namespace podserve
