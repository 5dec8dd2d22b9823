// Summary statistics for podserve-bench: percentiles by linear interpolation between closest
// ranks (numpy's default), and the mean. Pure functions.
#pragma once

#include <vector>

namespace podserve::bench {

// p in [0, 100]; `values` need not be sorted; 0 for an empty vector.
double percentile(std::vector<double> values, double p);

struct LatencySummary {
  std::size_t count = 0;
  double mean = 0.0;
  double p50 = 0.0;
  double p90 = 0.0;
  double p99 = 0.0;
  double max = 0.0;
};
LatencySummary summarize(const std::vector<double>& values);

}  // namespace podserve::bench
