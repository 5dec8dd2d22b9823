#include "kernels/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/hash.h"

namespace podserve {
namespace {

TokenId argmax(std::span<const float> logits) {
  TokenId best = -1;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = static_cast<TokenId>(i);
  }
  return best;
}

// First index whose running sum of weights[order[i]] exceeds target; the last positive-weight
// index when rounding leaves target unreached.
TokenId draw(const std::vector<double>& weights, std::span<const TokenId> order, double target) {
  double cumulative = 0.0;
  TokenId last_positive = order.front();
  for (const TokenId id : order) {
    if (weights[id] <= 0.0) continue;
    cumulative += weights[id];
    last_positive = id;
    if (cumulative > target) return id;
  }
  return last_positive;
}

}  // namespace

double sampling_uniform(std::uint64_t seed, std::int32_t generated_index) {
  const std::uint64_t counter = static_cast<std::uint32_t>(generated_index);
  const std::uint64_t bits = splitmix64(splitmix64(seed) ^ counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

TokenId sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::int32_t generated_index) {
  const TokenId best = argmax(logits);
  if (best < 0 || !(params.temperature > 0.0f)) return best;

  // Unnormalized probabilities exp((logit - max) / temperature); NaN logits get weight 0.
  const double max_logit = logits[best];
  const double temperature = params.temperature;
  std::vector<double> weights(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    weights[i] = std::isnan(logits[i]) ? 0.0 : std::exp((logits[i] - max_logit) / temperature);
  }
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  const double u = sampling_uniform(params.seed, generated_index);

  std::vector<TokenId> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  if (params.top_p >= 1.0f) return draw(weights, order, u * total);

  // Sort only as far as the nucleus reaches: grow a sorted prefix until its mass covers top_p.
  const auto by_probability = [&weights](TokenId a, TokenId b) {
    return weights[a] > weights[b] || (weights[a] == weights[b] && a < b);
  };
  const double nucleus_mass = static_cast<double>(std::max(params.top_p, 0.0f)) * total;
  std::size_t sorted = std::min<std::size_t>(order.size(), 64);
  std::size_t kept = 0;
  double kept_mass = 0.0;
  for (;;) {
    std::partial_sort(order.begin(), order.begin() + sorted, order.end(), by_probability);
    kept = 0;
    kept_mass = 0.0;
    while (kept < sorted && (kept == 0 || kept_mass < nucleus_mass))
      kept_mass += weights[order[kept++]];
    if (kept_mass >= nucleus_mass || sorted == order.size()) break;
    sorted = std::min(order.size(), sorted * 4);
  }
  return draw(weights, std::span<const TokenId>(order.data(), kept), u * kept_mass);
}

}  // namespace podserve
