// Splitting a loop over the host's cores, for start-up work that touches every element of a
// model (random weights, dtype conversion before an upload). Not for the serving hot path: each
// call starts and joins its own threads.
// Contract: blocking; `body` runs on disjoint [begin, end) ranges that cover [0, count) exactly
// once, concurrently from several threads (it must be safe to call that way); exceptions are not
// caught. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>

namespace podserve {

// Calls body(begin, end) over [0, count) in contiguous ranges of at least `min_chunk` items,
// on up to std::thread::hardware_concurrency() threads (the caller's thread takes one range).
void parallel_for(std::int64_t count, std::int64_t min_chunk,
                  const std::function<void(std::int64_t begin, std::int64_t end)>& body);

}  // namespace podserve
