// Sampler: greedy ties, reproducibility from (seed, generated_index) alone, seed sensitivity,
// nucleus truncation and the sampled distribution (a loose chi-square bound: the critical
// value used is far beyond the 1e-6 quantile, so the test fails only on a real bias).
#include "kernels/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "kernels/sampling_math.h"

namespace podserve {
namespace {

SamplingParams params_with(float temperature, float top_p, std::uint64_t seed) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// Pearson's chi-square of `counts` against `expected` probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& expected, int draws) {
  double stat = 0.0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const double e = expected[i] * draws;
    stat += (counts[i] - e) * (counts[i] - e) / e;
  }
  return stat;
}

TEST(SamplerTest, GreedyPicksArgmaxWithLowestIndexOnTies) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f,
                                     std::numeric_limits<float>::quiet_NaN()};
  for (std::uint64_t seed : {0ull, 7ull, 123456789ull}) {
    EXPECT_EQ(sample_token(logits, params_with(0.0f, 1.0f, seed), 3), 1);
  }
  const std::vector<float> nan_first = {std::numeric_limits<float>::quiet_NaN(), -5.0f, -2.0f};
  EXPECT_EQ(sample_token(nan_first, params_with(0.0f, 1.0f, 0), 0), 2);
  EXPECT_EQ(sample_token(std::vector<float>{}, params_with(0.0f, 1.0f, 0), 0), -1);
}

TEST(SamplerTest, SameSeedAndIndexGiveTheSameToken) {
  std::vector<float> logits(512, 0.0f);  // uniform: every draw depends on the random number
  for (std::int32_t index = 0; index < 50; ++index) {
    const TokenId first = sample_token(logits, params_with(1.0f, 1.0f, 42), index);
    EXPECT_EQ(sample_token(logits, params_with(1.0f, 1.0f, 42), index), first);
    EXPECT_EQ(sample_token(logits, params_with(1.0f, 0.9f, 42), index),
              sample_token(logits, params_with(1.0f, 0.9f, 42), index));
  }
}

TEST(SamplerTest, DifferentSeedsAndIndicesDrawDifferentTokens) {
  std::vector<float> logits(512, 0.0f);
  std::set<TokenId> by_seed, by_index;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    by_seed.insert(sample_token(logits, params_with(1.0f, 1.0f, seed), 0));
  }
  for (std::int32_t index = 0; index < 200; ++index) {
    by_index.insert(sample_token(logits, params_with(1.0f, 1.0f, 5), index));
  }
  // 200 uniform draws from 512 tokens give about 166 distinct values.
  EXPECT_GT(by_seed.size(), 120u);
  EXPECT_GT(by_index.size(), 120u);

  // The noise is standard Gumbel: mean = Euler-Mascheroni constant, variance pi^2 / 6.
  double sum = 0.0, sum_sq = 0.0;
  const int n = 200000;
  const std::uint64_t row = sampling::row_stream(99, 3);
  for (int i = 0; i < n; ++i) {
    const double g = sampling::gumbel_noise(row, i);
    ASSERT_TRUE(std::isfinite(g));
    sum += g;
    sum_sq += g * g;
  }
  EXPECT_NEAR(sum / n, 0.5772, 0.01);
  EXPECT_NEAR(sum_sq / n - (sum / n) * (sum / n), 3.14159265 * 3.14159265 / 6.0, 0.03);
}

TEST(SamplerTest, TinyTopPKeepsOnlyTheArgmaxAndItsTies) {
  const std::vector<float> logits = {1.0f, 2.5f, 2.4f, 0.0f, 2.5f, -3.0f};
  std::set<TokenId> seen;
  for (std::uint64_t seed = 0; seed < 300; ++seed) {
    const TokenId token = sample_token(logits, params_with(1.0f, 1e-6f, seed), 0);
    ASSERT_TRUE(token == 1 || token == 4) << "seed " << seed << " drew " << token;
    seen.insert(token);
  }
  EXPECT_EQ(seen.size(), 2u);  // ties at the nucleus boundary are all kept
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleusAndRenormalizes) {
  // Sorted mass: 0.4, 0.7, 0.9, 1.0. top_p 0.6 keeps {0, 1} with probabilities 4/7, 3/7.
  const std::vector<float> logits = log_probs({0.4, 0.3, 0.2, 0.1});
  const int draws = 20000;
  std::vector<int> counts(2, 0);
  for (int i = 0; i < draws; ++i) {
    const TokenId token = sample_token(logits, params_with(1.0f, 0.6f, 11), i);
    ASSERT_TRUE(token == 0 || token == 1) << "token " << token << " is outside the nucleus";
    ++counts[token];
  }
  EXPECT_LT(chi_square(counts, {4.0 / 7.0, 3.0 / 7.0}, draws), 30.0);
}

TEST(SamplerTest, LargeNucleusCutsAtTheMassTarget) {
  // 1000 distinct logits falling with the id: the nucleus is the lowest ids up to the first
  // whose cumulative probability reaches top_p.
  std::vector<float> logits(1000);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = -0.002f * static_cast<float>(i);
  const float temperature = 0.7f, top_p = 0.5f;
  std::vector<double> probs;
  double total = 0.0;
  for (const float x : logits) total += std::exp(static_cast<double>(x) / temperature);
  double cumulative = 0.0;
  std::size_t last_kept = 0;
  for (; last_kept < logits.size(); ++last_kept) {
    cumulative += std::exp(static_cast<double>(logits[last_kept]) / temperature) / total;
    if (cumulative >= top_p) break;
  }
  std::set<TokenId> seen;
  for (std::int32_t i = 0; i < 4000; ++i) {
    const TokenId token = sample_token(logits, params_with(temperature, top_p, 3), i);
    ASSERT_LE(token, static_cast<TokenId>(last_kept) + 1);  // +1: fixed-point rounding
    seen.insert(token);
  }
  EXPECT_GT(seen.size(), last_kept * 3 / 4);
}

TEST(SamplerTest, NucleusKeepsEveryTokenTiedAtItsBoundary) {
  const std::vector<float> logits(1000, 1.0f);
  std::set<TokenId> seen;
  for (std::int32_t i = 0; i < 3000; ++i)
    seen.insert(sample_token(logits, params_with(0.7f, 0.5f, 3), i));
  EXPECT_GT(*seen.rbegin(), 900);  // all 1000 tie, so all are in the nucleus
  EXPECT_GT(seen.size(), 900u);
}

TEST(SamplerTest, TemperatureOneMatchesSoftmaxDistribution) {
  const std::vector<double> probs = {0.05, 0.1, 0.15, 0.2, 0.5};
  const std::vector<float> logits = log_probs(probs);
  const int draws = 40000;
  std::vector<int> counts(probs.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sample_token(logits, params_with(1.0f, 1.0f, 2024), i)];
  // 4 degrees of freedom: the 1e-6 tail starts near 33.
  EXPECT_LT(chi_square(counts, probs, draws), 40.0);
}

TEST(SamplerTest, TemperatureSharpensTheDistribution) {
  // temperature 0.5 squares the probabilities: {0.2, 0.8} -> {0.04, 0.64} / 0.68.
  const std::vector<float> logits = log_probs({0.2, 0.8});
  const int draws = 20000;
  std::vector<int> counts(2, 0);
  for (int i = 0; i < draws; ++i) ++counts[sample_token(logits, params_with(0.5f, 1.0f, 8), i)];
  EXPECT_LT(chi_square(counts, {0.04 / 0.68, 0.64 / 0.68}, draws), 30.0);
}

}  // namespace
}  // namespace podserve
