// SentencePieceTokenizer (Debian's libsentencepiece) against transformers' LlamaTokenizer
// (legacy): the Llama-2-shaped model of tests/data/hf/sentencepiece/ (byte fallback, split
// digits, dummy prefix; made by tools/make_hf_fixtures.py) encodes the reference corpus, and
// text with <s>, </s> and <unk> written in it, to the same ids, and decodes them back to the
// text (after the dummy prefix's space) prefix-stably (every prefix of the ids decodes to a
// prefix of the text, byte pieces as raw bytes). Also which file load_checkpoint_tokenizer
// picks.
#include "core/sp_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace podserve {
namespace {

const std::string kDir = std::string(PODSERVE_SOURCE_DIR) + "/tests/data/hf/sentencepiece";

TEST(SentencePieceTokenizer, IdsAndTextMatchSentencePiece) {
  auto tok = SentencePieceTokenizer::load(kDir);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  std::ifstream in(kDir + "/reference_ids.json");
  const auto reference = nlohmann::json::parse(in);
  int checked = 0, with_bytes = 0;
  for (const auto& c : reference.at("cases")) {
    const std::string text = c.at("text");
    const auto expected = c.at("ids").get<std::vector<TokenId>>();
    EXPECT_EQ((*tok)->encode(text), expected) << "'" << text << "'";
    const std::string decoded = (*tok)->decode(expected);
    if (text.find("<s>") == std::string::npos && text.find("</s>") == std::string::npos &&
        text.find("<unk>") == std::string::npos) {
      // The dummy prefix's space, unless the text starts with one.
      EXPECT_EQ(decoded, text.empty() || text[0] == ' ' ? text : " " + text);
    }
    for (std::size_t k = 0; k <= expected.size(); ++k) {
      const std::string prefix = (*tok)->decode(std::span<const TokenId>(expected).subspan(0, k));
      ASSERT_EQ(decoded.compare(0, prefix.size(), prefix), 0) << "'" << text << "' at " << k;
    }
    for (TokenId id : expected) with_bytes += (*tok)->decode(std::span(&id, 1)).size() == 1;
    ++checked;
  }
  EXPECT_GE(checked, 24);
  std::vector<TokenId> with_bos{1};  // add_bos_token defaults to true (no tokenizer_config.json)
  for (TokenId id : (*tok)->encode("hi there")) with_bos.push_back(id);
  EXPECT_EQ((*tok)->encode_with_special_tokens("hi there"), with_bos);
  EXPECT_GT(with_bytes, 0);  // byte-fallback pieces were exercised
  EXPECT_EQ((*tok)->vocab_size(), 700);
}

TEST(SentencePieceTokenizer, CheckpointTokenizerChoice) {
  auto json_first =
      load_checkpoint_tokenizer(std::string(PODSERVE_SOURCE_DIR) + "/tests/data/hf/llama");
  ASSERT_TRUE(json_first.ok()) << json_first.status().to_string();
  EXPECT_EQ((*json_first)->kind(), "tokenizer.json");
  auto model = load_checkpoint_tokenizer(kDir);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  EXPECT_EQ((*model)->kind(), "tokenizer.model");
  auto none = load_checkpoint_tokenizer(std::filesystem::temp_directory_path().string());
  EXPECT_FALSE(none.ok());
  EXPECT_FALSE(SentencePieceTokenizer::load(kDir + "/reference_ids.json").ok());

  // A Metaspace (SentencePiece-style) tokenizer.json beside tokenizer.model: the model is used;
  // alone, its refusal is the answer.
  const auto dir = std::filesystem::temp_directory_path() / "podserve_sp_beside_json";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json")
      << R"({"normalizer": null, "pre_tokenizer": {"type": "Metaspace"}, "decoder": null,
            "model": {"type": "BPE", "vocab": {}, "merges": []}})";
  auto alone = load_checkpoint_tokenizer(dir.string());
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(alone.status().message().find("pre_tokenizer"), std::string::npos);
  std::filesystem::copy_file(kDir + "/tokenizer.model", dir / "tokenizer.model");
  auto beside = load_checkpoint_tokenizer(dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(beside.ok()) << beside.status().to_string();
  EXPECT_EQ((*beside)->kind(), "tokenizer.model");
}

}  // namespace
}  // namespace podserve
