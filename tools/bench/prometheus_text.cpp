#include "tools/bench/prometheus_text.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace podserve::bench {
namespace {

// Calls on_sample(labels, value) for each sample line of exactly `metric` (labels: the text
// between the braces, empty when none).
template <typename OnSample>
void for_each_sample(const std::vector<std::string>& expositions, std::string_view metric,
                     OnSample&& on_sample) {
  for (const std::string& text : expositions) {
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty() || line[0] == '#' || !line.starts_with(metric)) continue;
      std::string_view rest = std::string_view(line).substr(metric.size());
      std::string_view labels;
      if (!rest.empty() && rest[0] == '{') {
        const std::size_t close = rest.rfind('}');
        if (close == std::string_view::npos) continue;
        labels = rest.substr(1, close - 1);
        rest = rest.substr(close + 1);
      }
      if (rest.empty() || rest[0] != ' ') continue;  // another metric sharing the prefix
      try {
        on_sample(labels, std::stod(std::string(rest.substr(1))));
      } catch (const std::exception&) {
      }
    }
  }
}

double le_bound(std::string_view labels) {
  // The label named exactly le (not the end of another name, such as role).
  std::size_t at = labels.starts_with("le=\"") ? 0 : labels.find(",le=\"");
  if (at == std::string_view::npos) return std::nan("");
  if (at > 0) ++at;
  const std::string_view value = labels.substr(at + 4, labels.find('"', at + 4) - (at + 4));
  if (value == "+Inf") return std::numeric_limits<double>::infinity();
  try {
    return std::stod(std::string(value));
  } catch (const std::exception&) {
    return std::nan("");
  }
}

}  // namespace

double sum_samples(const std::vector<std::string>& expositions, std::string_view metric) {
  double total = 0.0;
  for_each_sample(expositions, metric, [&](std::string_view, double value) { total += value; });
  return total;
}

HistogramSnapshot read_histogram(const std::vector<std::string>& expositions,
                                 std::string_view name) {
  HistogramSnapshot histogram;
  const std::string bucket = std::string(name) + "_bucket";
  for_each_sample(expositions, bucket, [&](std::string_view labels, double value) {
    const double bound = le_bound(labels);
    if (std::isnan(bound)) return;
    const auto at =
        std::lower_bound(histogram.upper_bounds.begin(), histogram.upper_bounds.end(), bound);
    const auto index = static_cast<std::size_t>(at - histogram.upper_bounds.begin());
    if (at == histogram.upper_bounds.end() || *at != bound) {
      histogram.upper_bounds.insert(at, bound);
      histogram.cumulative_counts.insert(histogram.cumulative_counts.begin() + index, 0.0);
    }
    histogram.cumulative_counts[index] += value;
  });
  histogram.sum = sum_samples(expositions, std::string(name) + "_sum");
  histogram.count = sum_samples(expositions, std::string(name) + "_count");
  return histogram;
}

HistogramSnapshot histogram_difference(const HistogramSnapshot& after,
                                       const HistogramSnapshot& before) {
  HistogramSnapshot difference = after;
  if (before.upper_bounds == after.upper_bounds) {
    for (std::size_t i = 0; i < difference.cumulative_counts.size(); ++i) {
      difference.cumulative_counts[i] -= before.cumulative_counts[i];
    }
  }
  difference.sum -= before.sum;
  difference.count -= before.count;
  return difference;
}

QuantileEstimate histogram_quantile(const HistogramSnapshot& histogram, double q) {
  QuantileEstimate estimate;
  if (histogram.upper_bounds.empty() || histogram.cumulative_counts.back() <= 0.0) return estimate;
  const double rank = std::clamp(q, 0.0, 1.0) * histogram.cumulative_counts.back();
  std::size_t i = 0;
  while (i + 1 < histogram.upper_bounds.size() && histogram.cumulative_counts[i] < rank) ++i;
  const double lower_bound = i == 0 ? 0.0 : histogram.upper_bounds[i - 1];
  const double lower_count = i == 0 ? 0.0 : histogram.cumulative_counts[i - 1];
  estimate.bucket_lower = lower_bound;
  estimate.bucket_upper = histogram.upper_bounds[i];
  if (std::isinf(estimate.bucket_upper)) {
    estimate.value = lower_bound;
    return estimate;
  }
  const double in_bucket = histogram.cumulative_counts[i] - lower_count;
  estimate.value = in_bucket > 0.0 ? lower_bound + (estimate.bucket_upper - lower_bound) *
                                                       (rank - lower_count) / in_bucket
                                   : estimate.bucket_upper;
  return estimate;
}

}  // namespace podserve::bench
