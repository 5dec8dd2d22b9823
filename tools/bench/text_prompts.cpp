#include "tools/bench/text_prompts.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdlib>
#include <random>

namespace podserve::bench {

std::string TextPrompts::generated_prose(std::size_t bytes, std::uint64_t seed) {
  static constexpr std::array<const char*, 48> kWords = {
      "the",     "service", "reads",    "a",        "request", "and",      "schedules", "its",
      "prefill", "chunks",  "between",  "decode",   "steps",   "while",    "another",   "instance",
      "ships",   "pages",   "of",       "cache",    "across",  "nodes",    "so",        "that",
      "latency", "stays",   "low",      "for",      "every",   "user",     "who",       "asks",
      "about",   "weather", "recipes,", "history,", "or",      "numbers:", "12",        "345",
      "6789",    "today.",  "Then",     "it",       "answers", "quickly",  "with",      "care."};
  std::mt19937_64 rng(seed);
  std::string text;
  while (text.size() < bytes) {
    const int sentence = 6 + static_cast<int>(rng() % 12);
    for (int w = 0; w < sentence; ++w) {
      std::string word = kWords[rng() % kWords.size()];
      if (w == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      text += word;
      text += w + 1 == sentence ? ". " : " ";
    }
    if (rng() % 5 == 0) text += "\n\n";
  }
  return text;
}

TextPrompts::TextPrompts(const TextTokenizer& tokenizer, std::string corpus)
    : tokenizer_(tokenizer) {
  if (corpus.empty()) corpus = generated_prose(1 << 20, 20261202);
  corpus_ids_ = tokenizer_.encode(corpus);
}

std::string TextPrompts::make(std::int32_t length, std::uint64_t seed) const {
  if (length < 1 || corpus_ids_.empty()) return {};
  std::mt19937_64 rng(seed);
  const std::size_t n = corpus_ids_.size();
  const std::size_t start = rng() % n;
  // Ids [start, start + take) (wrapping), decoded; re-encoding may merge across the cut, so the
  // window grows or shrinks until the text is `length` tokens again.
  const auto window = [&](std::int64_t take) {
    std::vector<TokenId> ids;
    ids.reserve(static_cast<std::size_t>(take));
    for (std::int64_t i = 0; i < take; ++i)
      ids.push_back(corpus_ids_[(start + static_cast<std::size_t>(i)) % n]);
    return tokenizer_.decode(ids);
  };
  std::int64_t take = length;
  std::string best;
  std::int64_t best_miss = INT64_MAX;
  for (int attempt = 0; attempt < 16 && take >= 1; ++attempt) {
    std::string text = window(take);
    const auto count = static_cast<std::int64_t>(tokenizer_.encode(text).size());
    if (std::llabs(count - length) < best_miss) {
      best_miss = std::llabs(count - length);
      best = std::move(text);
    }
    if (count == length) break;
    take += length - count;
  }
  return best;
}

}  // namespace podserve::bench
