// HfTokenizer against the `tokenizers` library: the byte-level BPE tokenizers of
// tests/data/hf/tokenizer*/ (one per pre-tokenizer family: Llama-3, Qwen2 with NFC, GPT-2; made
// by tools/make_hf_fixtures.py) encode a corpus of English, non-ASCII text, emoji, whitespace
// runs and special tokens to exactly the ids `tokenizers` gave (reference_ids.json), and decode
// them back to the text. Also: pre-tokenizer splits written out by hand, refusals, and the
// encoding rate on English text (printed; the bound asserted is far below it, to catch a
// pathological slowdown, not to time the machine).
#include "core/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace podserve {
namespace {

std::string fixture(const std::string& name) {
  return std::string(PODSERVE_SOURCE_DIR) + "/tests/data/hf/" + name;
}

std::unique_ptr<HfTokenizer> load(const std::string& name) {
  auto tok = HfTokenizer::load(fixture(name));
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

class HfTokenizerReference : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTokenizerReference, IdsMatchTokenizersLibrary) {
  const auto tok = load(GetParam());
  ASSERT_NE(tok, nullptr);
  std::ifstream in(fixture(GetParam()) + "/reference_ids.json");
  const auto reference = nlohmann::json::parse(in);
  int checked = 0;
  for (const auto& c : reference.at("cases")) {
    const std::string text = c.at("text");
    const auto expected = c.at("ids").get<std::vector<TokenId>>();
    EXPECT_EQ(tok->encode(text), expected) << GetParam() << ": '" << text << "'";
    if (GetParam() != "tokenizer-qwen2") {  // NFC changes what decodes back
      EXPECT_EQ(tok->decode(expected, /*skip_special_tokens=*/false), text);
    }
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

INSTANTIATE_TEST_SUITE_P(Families, HfTokenizerReference,
                         ::testing::Values("tokenizer", "tokenizer-qwen2", "tokenizer-gpt2"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

using Pieces = std::vector<std::string>;

TEST(HfTokenizer, Llama3PreTokenizerSplits) {
  const auto tok = load("tokenizer");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->pre_tokenizer_kind(), PreTokenizerKind::kLlama3);
  EXPECT_EQ(tok->pre_tokenize("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(tok->pre_tokenize("I'LL we're"), (Pieces{"I", "'LL", " we", "'re"}));
  EXPECT_EQ(tok->pre_tokenize("12345 x"), (Pieces{"123", "45", " x"}));
  EXPECT_EQ(tok->pre_tokenize("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(tok->pre_tokenize("a \n\n b"), (Pieces{"a", " \n\n", " b"}));
  EXPECT_EQ(tok->pre_tokenize("x!!\n\ny"), (Pieces{"x", "!!\n\n", "y"}));
  EXPECT_EQ(tok->pre_tokenize("end   "), (Pieces{"end", "   "}));
  EXPECT_EQ(tok->pre_tokenize("\tcode"), (Pieces{"\tcode"}));
  EXPECT_EQ(tok->pre_tokenize("caf\u00e9 \u65e5\u672c"), (Pieces{"caf\u00e9", " \u65e5\u672c"}));
}

TEST(HfTokenizer, Gpt2AndQwen2PreTokenizerSplits) {
  const auto gpt2 = load("tokenizer-gpt2");
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(gpt2->pre_tokenize("I'LL we're 12345"),
            (Pieces{"I", "'", "LL", " we", "'re", " 12345"}));
  EXPECT_EQ(gpt2->pre_tokenize("a  b!"), (Pieces{"a", " ", " b", "!"}));
  const auto qwen2 = load("tokenizer-qwen2");
  ASSERT_NE(qwen2, nullptr);
  EXPECT_EQ(qwen2->pre_tokenize("123"), (Pieces{"1", "2", "3"}));
  EXPECT_EQ(qwen2->pre_tokenize("e\u0301"), (Pieces{"\u00e9"}));  // NFC first
}

TEST(HfTokenizer, SpecialTokensAndDecoding) {
  const auto tok = load("tokenizer");
  ASSERT_NE(tok, nullptr);
  const auto eot = tok->token_id("<|eot_id|>");
  ASSERT_TRUE(eot.has_value());
  EXPECT_TRUE(tok->is_special(*eot));
  const auto ids = tok->encode("hi<|eot_id|>");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), *eot);
  EXPECT_EQ(tok->decode(ids), "hi");  // special tokens skipped by default
  EXPECT_EQ(tok->decode(ids, false), "hi<|eot_id|>");
  // The post-processor's BOS (Llama-3's TemplateProcessing) only with special tokens; Qwen2's
  // tokenizer adds none.
  const auto with_bos = tok->encode_with_special_tokens("hi");
  ASSERT_EQ(with_bos.size(), tok->encode("hi").size() + 1);
  EXPECT_EQ(with_bos.front(), *tok->token_id("<|begin_of_text|>"));
  const auto qwen2 = load("tokenizer-qwen2");
  ASSERT_NE(qwen2, nullptr);
  EXPECT_EQ(qwen2->encode_with_special_tokens("hi"), qwen2->encode("hi"));
  EXPECT_EQ(tok->token_bytes(-1), "");
  EXPECT_EQ(tok->token_bytes(tok->vocab_size()), "");
}

TEST(HfTokenizer, UnsupportedPartsRefusedNamingThem) {
  std::ifstream in(fixture("tokenizer") + "/tokenizer.json");
  auto j = nlohmann::json::parse(in);
  const auto dir = std::filesystem::temp_directory_path() / "podserve_hf_tokenizer_refused";
  std::filesystem::create_directories(dir);
  const auto refused = [&](nlohmann::json changed, const std::string& reason) {
    std::ofstream(dir / "tokenizer.json") << changed.dump();
    auto tok = HfTokenizer::load(dir.string());
    ASSERT_FALSE(tok.ok()) << reason;
    EXPECT_NE(tok.status().message().find(reason), std::string::npos) << tok.status().to_string();
  };
  auto other_regex = j;
  other_regex["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  refused(other_regex, "Split regex");
  auto wordpiece = j;
  wordpiece["model"]["type"] = "WordPiece";
  refused(wordpiece, "model");
  auto nfkc = j;
  nfkc["normalizer"] = {{"type", "NFKC"}};
  refused(nfkc, "normalizer");
  std::filesystem::remove_all(dir);
}

// English prose (the words of a paragraph in a fixed shuffled order, ~2 MB) encoded on one
// core: tokens per second.
TEST(HfTokenizer, EnglishEncodingRate) {
  const auto tok = load("tokenizer");
  ASSERT_NE(tok, nullptr);
  const std::vector<std::string> words = {
      "the",    "service",       "reads",    "a",       "checkpoint", "directory,", "checks",
      "its",    "configuration", "and",      "loads",   "weights.",   "tokenizer",  "turns",
      "text",   "into",          "numbers;", "model",   "more",       "sampling",   "picks",
      "next",   "one.",          "We're",    "testing", "that",       "it's",       "done",
      "way",    "reference",     "library",  "does",    "it,",        "token",      "for",
      "token.", "Prefill",       "decode",   "share",   "GPUs,",      "or",         "they",
      "don't:", "question",      "this",     "testbed", "answers.",   "In",         "1859,"};
  std::string text;
  std::uint64_t state = 88172645463325252ull;
  while (text.size() < (2u << 20)) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    text += words[state % words.size()];
    text += state % 17 == 0 ? "\n" : " ";
  }
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = static_cast<double>(ids.size()) / seconds;
  std::printf("encoded %zu bytes into %zu tokens in %.3f s: %.2f M tokens/s\n", text.size(),
              ids.size(), seconds, rate / 1e6);
  RecordProperty("tokens_per_second", std::to_string(rate));
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_GT(rate, 2e5);
}

}  // namespace
}  // namespace podserve
