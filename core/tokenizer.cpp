#include "core/tokenizer.h"

namespace podserve {

std::vector<TokenId> ByteTokenizer::encode(std::string_view text) {
  std::vector<TokenId> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(static_cast<TokenId>(c));
  return ids;
}

std::string ByteTokenizer::decode_one(TokenId token) {
  if (token < 0 || token >= kNumByteTokens) return {};
  return std::string(1, static_cast<char>(token));
}

std::string ByteTokenizer::decode(std::span<const TokenId> tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (TokenId t : tokens)
    if (t >= 0 && t < kNumByteTokens) text.push_back(static_cast<char>(t));
  return text;
}

}  // namespace podserve
