// Measures a cost profile (sim/cost_model.h) on the CPU backend: builds a model of TP 1 with
// random weights, times LlamaModel::forward on synthetic batch plans that span the cost
// features (prefill chunks with and without a cached prefix, decode batches of several sizes
// and contexts, and hybrid batches mixing both), and fits the profile. Real forward passes:
// attention reads and writes the KV pages each plan names (their contents are whatever the
// previous samples left, which does not change the work).
//
// Contract: blocking (seconds to minutes, by model size and repetitions); single-threaded
// caller; the model lives for the call.
#pragma once

#include <cstdint>
#include <vector>

#include "core/model_config.h"
#include "core/status.h"
#include "sim/cost_model.h"

namespace podserve::sim {

struct CalibrationOptions {
  std::int32_t page_size = 16;
  std::int32_t max_context = 512;       // longest context a sample plan holds
  std::int32_t max_batch_tokens = 256;  // new tokens per sample plan (the token budget)
  std::int32_t max_decodes = 64;        // decode sequences per sample plan (max_running)
  std::int32_t repetitions = 5;  // timed passes per plan (the median is kept), after a warm-up
  std::uint64_t weight_seed = 1;
};

struct Calibration {
  std::vector<CostSample> samples;
  CostProfile profile;  // fitted; the caller fills card and date
};

Result<Calibration> calibrate_cpu(const ModelConfig& model, const CalibrationOptions& options);

}  // namespace podserve::sim
