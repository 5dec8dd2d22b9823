// Text prompts of an exact token length for podserve-bench --tokenizer DIR: windows of a corpus
// of English prose, cut so that the checkpoint's tokenizer (core/text_tokenizer.h) encodes each
// to exactly the length a trace row asks for (the server adds its BOS to that). The corpus is
// generated from a fixed word list and seed (no outside text), or given.
// Thread-safe after construction (make() is const).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/text_tokenizer.h"
#include "core/types.h"

namespace podserve::bench {

class TextPrompts {
 public:
  // `corpus` empty: 1 MiB of generated_prose (windows wrap around its end).
  TextPrompts(const TextTokenizer& tokenizer, std::string corpus = {});

  // Text that encodes to `length` tokens (length >= 1), from a window chosen by `seed`: exactly,
  // once a few window sizes have been tried (the closest text found otherwise).
  std::string make(std::int32_t length, std::uint64_t seed) const;

  // The generated prose the default corpus is made of, `bytes` long or a little more.
  static std::string generated_prose(std::size_t bytes, std::uint64_t seed);

 private:
  const TextTokenizer& tokenizer_;
  std::vector<TokenId> corpus_ids_;  // the corpus encoded once
};

}  // namespace podserve::bench
