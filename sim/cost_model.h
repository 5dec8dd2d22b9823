// The simulator's iteration cost model: how long one instance iteration takes, as a function of
// what its batch plan holds. A linear model over four batch features plus a constant, fitted by
// least squares on measured forward passes (podserve-sim calibrate) and stored as a profile file
// (JSON) that names the model, backend, card, TP degree and date it was measured on, and states
// the fit's residuals.
//
//   seconds = intercept
//           + per_prefill_token          * prefill_tokens
//           + per_prefill_attention_pair * prefill_attention_pairs
//           + per_decode                 * num_decodes
//           + per_decode_context_token   * decode_context_tokens
//
// prefill_attention_pairs is sum over prefill chunks of C * (P + C) (new tokens times the context
// they attend to: the quadratic part of prefill attention, prefix reuse included); the decode
// context is sum over decodes of P + 1 (the KV a decode reads).
//
// Contract: pure functions and plain values; load/save do file I/O and return Status.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "core/batch_plan.h"
#include "core/status.h"

namespace podserve::sim {

inline constexpr std::size_t kNumCostFeatures = 5;  // the constant, then the four batch features

struct BatchFeatures {
  double prefill_tokens = 0.0;
  double prefill_attention_pairs = 0.0;
  double num_decodes = 0.0;
  double decode_context_tokens = 0.0;

  // [1, prefill_tokens, prefill_attention_pairs, num_decodes, decode_context_tokens]
  std::array<double, kNumCostFeatures> row() const;
};

BatchFeatures features_of(const BatchPlan& plan);

// One measured iteration.
struct CostSample {
  BatchFeatures features;
  double seconds = 0.0;
};

struct CostProfile {
  // Where it was measured.
  std::string model;    // e.g. "tiny"
  std::string backend;  // "cpu" | "cuda"
  std::string card;     // CPU model name or GPU name
  std::int32_t tp = 1;
  std::string date;    // UTC, ISO 8601
  std::string source;  // how the samples were taken
  // Coefficients in BatchFeatures::row() order (seconds per unit).
  std::array<double, kNumCostFeatures> coefficients{};
  // The fit on its own samples.
  std::int32_t num_samples = 0;
  double rms_residual_s = 0.0;
  double max_abs_residual_s = 0.0;
  double mean_abs_relative_residual = 0.0;  // mean of |predicted - measured| / measured

  // Predicted iteration seconds, never below zero.
  double predict(const BatchFeatures& features) const;
  double predict(const BatchPlan& plan) const { return predict(features_of(plan)); }
};

// Least-squares fit (normal equations on column-scaled features, partial-pivot elimination).
// kInvalidArgument with fewer samples than coefficients or a singular design (a feature that
// never varies, other than the constant). Fills coefficients and residual fields only.
Result<CostProfile> fit_cost_profile(std::span<const CostSample> samples);

Result<CostProfile> load_cost_profile(const std::string& path);
// Writes the profile; `samples`, when given, are stored with it (features and measured seconds)
// so the fit can be checked or redone.
Status save_cost_profile(const CostProfile& profile, const std::string& path,
                         std::span<const CostSample> samples = {});

}  // namespace podserve::sim
