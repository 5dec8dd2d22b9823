#include "core/parallel.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace podserve {

void parallel_for(std::int64_t count, std::int64_t min_chunk,
                  const std::function<void(std::int64_t begin, std::int64_t end)>& body) {
  if (count <= 0) return;
  const std::int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::int64_t by_size =
      (count + std::max<std::int64_t>(min_chunk, 1) - 1) / std::max<std::int64_t>(min_chunk, 1);
  const std::int64_t ranges = std::clamp<std::int64_t>(by_size, 1, cores);
  const auto range_begin = [&](std::int64_t i) { return count * i / ranges; };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(ranges - 1));
  for (std::int64_t i = 1; i < ranges; ++i)
    threads.emplace_back([&, i] { body(range_begin(i), range_begin(i + 1)); });
  body(0, range_begin(1));
  for (auto& thread : threads) thread.join();
}

}  // namespace podserve
