#include "core/sp_tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

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
    if (tok->processor_->IsControl(id) || tok->processor_->IsUnknown(id)) {
      const std::string text = tok->processor_->IdToPiece(id);
      if (!text.empty() && text.front() == '<') tok->specials_.emplace_back(text, id);
      continue;
    }
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
  std::ifstream config_file(file.parent_path() / "tokenizer_config.json");
  if (config_file) {
    const auto config = nlohmann::json::parse(config_file, nullptr, false);
    if (config.is_object()) {
      tok->add_bos_ = config.value("add_bos_token", true);
      tok->add_eos_ = config.value("add_eos_token", false);
    }
  }
  std::sort(tok->specials_.begin(), tok->specials_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return tok;
}

void SentencePieceTokenizer::encode_segment(std::string_view text,
                                            std::vector<TokenId>& out) const {
  if (text.empty()) return;
  // SentencePiece's dummy prefix stands for a leading space: one the text already has is not
  // doubled (as transformers' Metaspace pre-tokenizer does it).
  if (text.front() == ' ') {
    text.remove_prefix(1);
    if (text.empty()) {  // a lone space: the "▁" piece
      const int space = processor_->PieceToId("\xE2\x96\x81");
      if (!processor_->IsUnknown(space)) out.push_back(space);
      return;
    }
  }
  std::vector<int> ids;
  if (!processor_->Encode(text, &ids).ok()) return;
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<TokenId> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<TokenId> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto special = std::find_if(specials_.begin(), specials_.end(), [&](const auto& s) {
      return text.compare(i, s.first.size(), s.first) == 0;
    });
    if (text[i] != '<' || special == specials_.end()) {
      ++i;
      continue;
    }
    encode_segment(text.substr(start, i - start), out);
    out.push_back(special->second);
    i += special->first.size();
    start = i;
  }
  encode_segment(text.substr(start), out);
  return out;
}

std::vector<TokenId> SentencePieceTokenizer::encode_with_special_tokens(
    std::string_view text) const {
  std::vector<TokenId> out;
  if (add_bos_ && processor_->bos_id() >= 0) out.push_back(processor_->bos_id());
  const std::vector<TokenId> body = encode(text);
  out.insert(out.end(), body.begin(), body.end());
  if (add_eos_ && processor_->eos_id() >= 0) out.push_back(processor_->eos_id());
  return out;
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
