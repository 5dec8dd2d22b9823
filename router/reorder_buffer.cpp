#include "router/reorder_buffer.h"

namespace podserve {

bool ReorderBuffer::offer(const TokenOutput& output) {
  if (output.token == TokenOutput::kNoToken) return true;
  if (output.index > next_index_) {
    early_.emplace(output.index, output);
    return false;
  }
  next_index_ = output.index + 1;
  return true;
}

std::optional<TokenOutput> ReorderBuffer::pop_next() {
  const auto next = early_.find(next_index_);
  if (next == early_.end()) return std::nullopt;
  const TokenOutput held = next->second;
  early_.erase(next);
  next_index_ = held.index + 1;
  return held;
}

}  // namespace podserve
