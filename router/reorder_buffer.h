// ReorderBuffer: puts one request's token outputs back in index order. In disaggregated mode
// index 0 comes from the prefill instance and the rest from the decode instance, so they may
// arrive in either order; an output that arrives before a lower index is held until the gap
// fills. Outputs without a token (a finish by abort or error) are not ordered: they pass at
// once. Not thread-safe (the router calls it under its requests mutex).
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "core/request.h"

namespace podserve {

class ReorderBuffer {
 public:
  // Takes one output. True when it is to be delivered now (no token, or an index not above the
  // next one; the next index then follows it); false when it arrived early and is held (a second
  // output at an index already held is dropped).
  bool offer(const TokenOutput& output);

  // The held output at the next index, removed and delivered (the next index follows it);
  // nullopt when none is held there.
  std::optional<TokenOutput> pop_next();

  // Drops every held output (the request is retired).
  void clear() { early_.clear(); }

  // Index of the next token output to deliver.
  std::int32_t next_index() const { return next_index_; }
  std::size_t num_held() const { return early_.size(); }

 private:
  std::int32_t next_index_ = 0;
  std::map<std::int32_t, TokenOutput> early_;  // arrived before a lower index
};

}  // namespace podserve
