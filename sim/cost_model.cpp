#include "sim/cost_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "nlohmann/json.hpp"

namespace podserve::sim {
namespace {

constexpr std::array<const char*, kNumCostFeatures> kCoefficientNames = {
    "intercept_s", "per_prefill_token_s", "per_prefill_attention_pair_s", "per_decode_s",
    "per_decode_context_token_s"};

}  // namespace

std::array<double, kNumCostFeatures> BatchFeatures::row() const {
  return {1.0, prefill_tokens, prefill_attention_pairs, num_decodes, decode_context_tokens};
}

BatchFeatures features_of(const BatchPlan& plan) {
  BatchFeatures features;
  for (const SequenceWork& work : plan.sequences) {
    if (work.is_prefill) {
      const double chunk = work.num_new_tokens();
      features.prefill_tokens += chunk;
      features.prefill_attention_pairs += chunk * work.context_length();
    } else {
      features.num_decodes += 1.0;
      features.decode_context_tokens += work.context_length();
    }
  }
  return features;
}

double CostProfile::predict(const BatchFeatures& features) const {
  const auto row = features.row();
  double seconds = 0.0;
  for (std::size_t i = 0; i < kNumCostFeatures; ++i) seconds += coefficients[i] * row[i];
  return std::max(seconds, 0.0);
}

Result<CostProfile> fit_cost_profile(std::span<const CostSample> samples) {
  constexpr std::size_t n = kNumCostFeatures;
  if (samples.size() < n) {
    return invalid_argument(
        fmt::format("cost fit: {} samples for {} coefficients", samples.size(), n));
  }
  // Scale every column to max |value| 1 so the normal equations stay well conditioned.
  std::array<double, n> scale{};
  for (const CostSample& s : samples) {
    const auto row = s.features.row();
    for (std::size_t j = 0; j < n; ++j) scale[j] = std::max(scale[j], std::abs(row[j]));
  }
  for (std::size_t j = 0; j < n; ++j) {
    if (scale[j] == 0.0) {
      return invalid_argument(
          fmt::format("cost fit: feature {} is zero in every sample", kCoefficientNames[j]));
    }
  }
  // [n][n + 1]: A^T A | A^T y on the scaled columns.
  std::array<std::array<double, n + 1>, n> system{};
  for (const CostSample& s : samples) {
    auto row = s.features.row();
    for (std::size_t j = 0; j < n; ++j) row[j] /= scale[j];
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) system[i][j] += row[i] * row[j];
      system[i][n] += row[i] * s.seconds;
    }
  }
  for (std::size_t col = 0; col < n; ++col) {
    std::size_t pivot = col;
    for (std::size_t r = col + 1; r < n; ++r) {
      if (std::abs(system[r][col]) > std::abs(system[pivot][col])) pivot = r;
    }
    if (std::abs(system[pivot][col]) < 1e-12 * static_cast<double>(samples.size())) {
      return invalid_argument(fmt::format(
          "cost fit: singular design ({} does not vary independently)", kCoefficientNames[col]));
    }
    std::swap(system[col], system[pivot]);
    for (std::size_t r = 0; r < n; ++r) {
      if (r == col) continue;
      const double factor = system[r][col] / system[col][col];
      for (std::size_t c = col; c <= n; ++c) system[r][c] -= factor * system[col][c];
    }
  }
  CostProfile profile;
  for (std::size_t j = 0; j < n; ++j)
    profile.coefficients[j] = system[j][n] / system[j][j] / scale[j];

  double squared = 0.0, relative = 0.0;
  for (const CostSample& s : samples) {
    const auto row = s.features.row();
    double predicted = 0.0;
    for (std::size_t j = 0; j < n; ++j) predicted += profile.coefficients[j] * row[j];
    const double residual = predicted - s.seconds;
    squared += residual * residual;
    profile.max_abs_residual_s = std::max(profile.max_abs_residual_s, std::abs(residual));
    if (s.seconds > 0.0) relative += std::abs(residual) / s.seconds;
  }
  const auto count = static_cast<double>(samples.size());
  profile.num_samples = static_cast<std::int32_t>(samples.size());
  profile.rms_residual_s = std::sqrt(squared / count);
  profile.mean_abs_relative_residual = relative / count;
  return profile;
}

Result<CostProfile> load_cost_profile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(fmt::format("cannot open cost profile {}", path));
  try {
    const auto json = nlohmann::json::parse(in);
    CostProfile profile;
    profile.model = json.at("model").get<std::string>();
    profile.backend = json.at("backend").get<std::string>();
    profile.card = json.at("card").get<std::string>();
    profile.tp = json.at("tp").get<std::int32_t>();
    profile.date = json.at("date").get<std::string>();
    profile.source = json.value("source", "");
    const auto& coefficients = json.at("coefficients");
    for (std::size_t j = 0; j < kNumCostFeatures; ++j) {
      profile.coefficients[j] = coefficients.at(kCoefficientNames[j]).get<double>();
    }
    const auto& fit = json.at("fit");
    profile.num_samples = fit.at("num_samples").get<std::int32_t>();
    profile.rms_residual_s = fit.at("rms_residual_s").get<double>();
    profile.max_abs_residual_s = fit.at("max_abs_residual_s").get<double>();
    profile.mean_abs_relative_residual = fit.at("mean_abs_relative_residual").get<double>();
    return profile;
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("cost profile {}: {}", path, e.what()));
  }
}

Status save_cost_profile(const CostProfile& profile, const std::string& path,
                         std::span<const CostSample> samples) {
  nlohmann::ordered_json coefficients;
  for (std::size_t j = 0; j < kNumCostFeatures; ++j) {
    coefficients[kCoefficientNames[j]] = profile.coefficients[j];
  }
  nlohmann::ordered_json json = {
      {"model", profile.model},
      {"backend", profile.backend},
      {"card", profile.card},
      {"tp", profile.tp},
      {"date", profile.date},
      {"source", profile.source},
      {"features",
       "seconds = intercept + per_prefill_token * prefill_tokens + per_prefill_attention_pair * "
       "sum(C * (P + C)) over prefill chunks + per_decode * decodes + per_decode_context_token * "
       "sum(P + 1) over decodes"},
      {"coefficients", coefficients},
      {"fit",
       {{"num_samples", profile.num_samples},
        {"rms_residual_s", profile.rms_residual_s},
        {"max_abs_residual_s", profile.max_abs_residual_s},
        {"mean_abs_relative_residual", profile.mean_abs_relative_residual}}}};
  if (!samples.empty()) {
    auto& rows = json["samples"];
    rows = nlohmann::ordered_json::array();
    for (const CostSample& s : samples) {
      rows.push_back({{"prefill_tokens", s.features.prefill_tokens},
                      {"prefill_attention_pairs", s.features.prefill_attention_pairs},
                      {"num_decodes", s.features.num_decodes},
                      {"decode_context_tokens", s.features.decode_context_tokens},
                      {"seconds", s.seconds}});
    }
  }
  std::ofstream out(path);
  out << json.dump(2) << "\n";
  if (!out) return unavailable(fmt::format("cannot write cost profile {}", path));
  return Status::Ok();
}

}  // namespace podserve::sim
