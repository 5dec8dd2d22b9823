// SentencePiece tokenizers (tokenizer.model, as Llama-2 and Mistral checkpoints ship them),
// through Debian's libsentencepiece. encode() gives what transformers' LlamaTokenizer (legacy
// mode, as a checkpoint without tokenizer.json loads) gives with add_special_tokens=False: the
// control and unknown pieces written in the text ("<s>", "</s>", "<unk>") become their ids, each
// text segment between them is SentencePiece's encoding, with the dummy-prefix space not doubled
// where the segment starts with a space. decode() concatenates the
// pieces with "▁" as a space and byte-fallback pieces (<0xNN>) as their bytes, leaving control
// tokens out; unlike SentencePiece's DecodeIds it keeps the leading space of the first piece and
// emits raw bytes for characters split into byte pieces, so it is prefix-stable for streaming.
// Thread-safe after load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/text_tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace podserve {

class SentencePieceTokenizer final : public TextTokenizer {
 public:
  // Reads `path` (a tokenizer.model file, or a directory holding one).
  static Result<std::unique_ptr<SentencePieceTokenizer>> load(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<TokenId> encode(std::string_view text) const override;
  // BOS first (and EOS last) as tokenizer_config.json's add_bos_token (default true) and
  // add_eos_token (default false) beside tokenizer.model say.
  std::vector<TokenId> encode_with_special_tokens(std::string_view text) const override;
  std::string decode(std::span<const TokenId> ids) const override;
  std::int32_t vocab_size() const override { return static_cast<std::int32_t>(pieces_.size()); }
  std::string_view kind() const override { return "tokenizer.model"; }

 private:
  SentencePieceTokenizer();
  // Appends SentencePiece's ids of text holding no special token.
  void encode_segment(std::string_view text, std::vector<TokenId>& out) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::vector<std::pair<std::string, TokenId>> specials_;  // "<s>", "</s>", "<unk>": longest first
  bool add_bos_ = true, add_eos_ = false;
  std::vector<std::string> pieces_;  // [vocab_size] the bytes each id decodes to
};

}  // namespace podserve
