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
#include <span>
#include <string>
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

// A profile from podserve-engine-bench CSVs (tools/engine_bench.cpp; any backend, measured
// elsewhere, e.g. on a GPU host): one sample per row of the chosen variants, its features from
// the row's shape, its seconds the row's median wall time.
//   decode  B sequences at context L: num_decodes B, decode_context_tokens B * L;
//   prefill a chunk of C after P cached: prefill_tokens C, prefill_attention_pairs C * (P + C);
//   hybrid  a chunk of C (after P) plus B decodes at context L: both.
// Rows of other variants are skipped; rows of more than one card, a missing column or a
// malformed number are kInvalidArgument. The profile's card comes from the rows; model, backend
// and source are the caller's to fill (backend "cuda", model the bench's --model).
struct EngineBenchSelection {
  std::string decode_variant = "graph";  // decode rows: graph | eager | cublas
  std::string step_variant = "pod";      // prefill and hybrid rows: pod | serial
};
Result<Calibration> calibrate_from_engine_bench(std::span<const std::string> csv_texts,
                                                const EngineBenchSelection& selection);

}  // namespace podserve::sim
