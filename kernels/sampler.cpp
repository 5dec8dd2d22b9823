#include "kernels/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/sampling_math.h"

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

// The smallest order key of the nucleus: walk the distinct keys from the largest down, adding
// each key's whole mass, until the mass reaches the target.
std::uint32_t nucleus_floor_key(const std::vector<float>& z, float top_p) {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> keyed;  // (key, mass), NaN left out
  keyed.reserve(z.size());
  std::uint64_t total = 0;
  for (const float value : z) {
    if (std::isnan(value)) continue;
    keyed.emplace_back(sampling::order_key(value), sampling::mass_of(value));
    total += keyed.back().second;
  }
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  const std::uint64_t target = sampling::nucleus_target(top_p, total);
  std::uint64_t mass = 0;
  for (std::size_t i = 0; i < keyed.size();) {
    const std::uint32_t key = keyed[i].first;
    for (; i < keyed.size() && keyed[i].first == key; ++i) mass += keyed[i].second;
    if (mass >= target) return key;
  }
  return 0;
}

}  // namespace

TokenId sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::int32_t generated_index) {
  const TokenId best = argmax(logits);
  if (best < 0 || !(params.temperature > 0.0f) || std::isinf(logits[best])) return best;

  const float max_logit = logits[best];
  std::vector<float> z(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i)
    z[i] = (logits[i] - max_logit) / params.temperature;
  const std::uint32_t floor_key =
      params.top_p >= 1.0f ? 0 : nucleus_floor_key(z, std::max(params.top_p, 0.0f));

  const std::uint64_t row = sampling::row_stream(params.seed, generated_index);
  TokenId chosen = -1;
  float chosen_score = -std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < z.size(); ++i) {
    if (std::isnan(z[i]) || sampling::order_key(z[i]) < floor_key) continue;
    const float score = z[i] + sampling::gumbel_noise(row, static_cast<std::int32_t>(i));
    if (chosen < 0 || score > chosen_score) {
      chosen = static_cast<TokenId>(i);
      chosen_score = score;
    }
  }
  return chosen;
}

}  // namespace podserve
