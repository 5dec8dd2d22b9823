// Byte-level tokenizer for text prompts: each UTF-8 byte b becomes token id b (0..255); the
// model's BOS id is prepended when asked. Decoding maps ids 0..255 back to bytes and drops
// every other id (special tokens, or ids a random-weight model samples above 255), so output
// text is exactly the bytes the model produced. Works with any vocabulary of >= 256 ids.
// Stateless and thread-safe.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"

namespace podserve {

class ByteTokenizer {
 public:
  static constexpr TokenId kNumByteTokens = 256;

  static std::vector<TokenId> encode(std::string_view text);
  static std::string decode(std::span<const TokenId> tokens);
  static std::string decode_one(TokenId token);
};

}  // namespace podserve
