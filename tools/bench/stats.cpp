#include "tools/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace podserve::bench {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const auto lower = static_cast<std::size_t>(std::floor(rank));
  const std::size_t upper = std::min(lower + 1, values.size() - 1);
  const double fraction = rank - static_cast<double>(lower);
  return values[lower] + (values[upper] - values[lower]) * fraction;
}

LatencySummary summarize(const std::vector<double>& values) {
  LatencySummary summary;
  summary.count = values.size();
  if (values.empty()) return summary;
  summary.mean =
      std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  summary.p50 = percentile(values, 50);
  summary.p90 = percentile(values, 90);
  summary.p99 = percentile(values, 99);
  summary.max = *std::max_element(values.begin(), values.end());
  return summary;
}

}  // namespace podserve::bench
