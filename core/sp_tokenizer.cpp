#include "core/sp_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <filesystem>

#include "core/hf_tokenizer.h"

namespace podserve {

SentencePieceTokenizer::SentencePieceTokenizer()
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

Result<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::load(
    const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "tokenizer.model";
  if (!std::filesystem::exists(file)) return not_found(fmt::format("no '{}'", file.string()));
  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer());
  const auto status = tok->processor_->Load(file.string());
  if (!status.ok()) {
    return invalid_argument(fmt::format("'{}': {}", file.string(), status.ToString()));
  }
  const int size = tok->processor_->GetPieceSize();
  tok->pieces_.resize(static_cast<std::size_t>(size));
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // ▁
  for (int id = 0; id < size; ++id) {
    if (tok->processor_->IsControl(id) || tok->processor_->IsUnknown(id)) continue;
    const std::string piece = tok->processor_->IdToPiece(id);
    std::string& bytes = tok->pieces_[static_cast<std::size_t>(id)];
    if (tok->processor_->IsByte(id)) {  // <0xNN>
      bytes.push_back(static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
      continue;
    }
    for (std::size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        bytes += ' ';
        i += kSpace.size();
      } else {
        bytes += piece[i++];
      }
    }
  }
  return tok;
}

std::vector<TokenId> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  if (!processor_->Encode(text, &ids).ok()) return {};
  return std::vector<TokenId>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (TokenId id : ids) {
    if (id >= 0 && id < vocab_size()) out += pieces_[static_cast<std::size_t>(id)];
  }
  return out;
}

Result<std::unique_ptr<TextTokenizer>> load_checkpoint_tokenizer(const std::string& dir) {
  const std::filesystem::path root(dir);
  const bool has_model = std::filesystem::exists(root / "tokenizer.model");
  if (std::filesystem::exists(root / "tokenizer.json")) {
    auto tok = HfTokenizer::load((root / "tokenizer.json").string());
    if (tok.ok()) return std::unique_ptr<TextTokenizer>(std::move(tok).value());
    // Llama-2 and Mistral ship a Metaspace tokenizer.json beside their tokenizer.model.
    if (!has_model) return tok.status();
  }
  if (has_model) {
    PODSERVE_ASSIGN_OR_RETURN(auto tok,
                              SentencePieceTokenizer::load((root / "tokenizer.model").string()));
    return std::unique_ptr<TextTokenizer>(std::move(tok));
  }
  return not_found(fmt::format("'{}' has neither tokenizer.json nor tokenizer.model", dir));
}

}  // namespace podserve
