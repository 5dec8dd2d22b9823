// Reading the service's own measurements back from Prometheus text expositions (the bodies of
// the ranks' /metrics): counters and gauges summed over label sets, histograms merged over
// label sets, the difference of two scrapes (one probe's share of cumulative histograms), and
// quantiles by Prometheus' histogram_quantile rule. Pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace podserve::bench {

// Sum of every sample of `metric` (all label sets, all expositions); 0 when none.
double sum_samples(const std::vector<std::string>& expositions, std::string_view metric);

struct HistogramSnapshot {
  std::vector<double> upper_bounds;       // the `le` bounds, ascending, +Inf last
  std::vector<double> cumulative_counts;  // [upper_bounds.size()]
  double sum = 0.0;
  double count = 0.0;
  double mean() const { return count > 0.0 ? sum / count : 0.0; }
};

// Histogram `name` (its _bucket, _sum and _count samples) merged over every label set and
// exposition. Series with other bucket bounds than the first one found are merged bound by
// bound where the bounds agree; none found: an empty snapshot.
HistogramSnapshot read_histogram(const std::vector<std::string>& expositions,
                                 std::string_view name);
// after - before, bucket by bucket (before empty: after). Bounds must agree.
HistogramSnapshot histogram_difference(const HistogramSnapshot& after,
                                       const HistogramSnapshot& before);

struct QuantileEstimate {
  double value = 0.0;         // linear interpolation inside the bucket (0 when count is 0)
  double bucket_lower = 0.0;  // the bucket holding the quantile
  double bucket_upper = 0.0;  // +Inf bucket: value is its lower bound
};
// q in [0, 1], as Prometheus' histogram_quantile: the bucket where the rank q * count falls,
// and linear interpolation between its bounds (the first bucket's lower bound is 0).
QuantileEstimate histogram_quantile(const HistogramSnapshot& histogram, double q);

}  // namespace podserve::bench
