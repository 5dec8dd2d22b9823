#include "sim/calibrate.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <map>
#include <sstream>
#include <string_view>
#include <utility>

#include "core/backend.h"
#include "kernels/cpu_backend.h"
#include "worker/model.h"
#include "worker/single_rank_communicator.h"
#include "worker/weights.h"

namespace podserve::sim {
namespace {

// A synthetic batch: prefill chunks (cached prefix, new tokens) and decodes (context each).
struct BatchShape {
  std::vector<std::pair<std::int32_t, std::int32_t>> prefills;
  std::int32_t num_decodes = 0;
  std::int32_t decode_context = 0;
};

// The shapes the profile is fitted on: prefill alone, decode alone, and hybrids, over the
// ranges `options` allows.
std::vector<BatchShape> calibration_shapes(const CalibrationOptions& options) {
  std::vector<BatchShape> shapes;
  const std::int32_t budget = options.max_batch_tokens;
  const std::int32_t context = options.max_context;
  for (std::int32_t chunk : {8, 32, 64, 128, 192, 256}) {
    for (std::int32_t cached : {0, 128, 256}) {
      if (chunk > budget || cached + chunk > context) continue;
      shapes.push_back(BatchShape{.prefills = {{cached, chunk}}});
    }
  }
  for (std::int32_t decodes : {1, 2, 4, 8, 16, 32, 48, 64}) {
    for (std::int32_t decode_context : {16, 64, 160, 320, 480}) {
      if (decodes > options.max_decodes || decode_context > context) continue;
      shapes.push_back(BatchShape{.num_decodes = decodes, .decode_context = decode_context});
    }
  }
  for (std::int32_t decodes : {4, 16, 32, 64}) {
    for (std::int32_t chunk : {16, 64, 128}) {
      for (std::int32_t decode_context : {64, 256}) {
        if (decodes > options.max_decodes || decodes + chunk > budget) continue;
        shapes.push_back(BatchShape{
            .prefills = {{0, chunk}}, .num_decodes = decodes, .decode_context = decode_context});
        if (decodes + 2 * chunk <= budget) {
          shapes.push_back(BatchShape{.prefills = {{0, chunk}, {128, chunk}},
                                      .num_decodes = decodes,
                                      .decode_context = decode_context});
        }
      }
    }
  }
  return shapes;
}

// The plan of `shape`, its sequences on consecutive pages from page 0 (decodes first).
BatchPlan plan_for(const BatchShape& shape, std::int32_t page_size) {
  BatchPlan plan;
  std::int32_t next_page = 0;
  RequestId next_id = 0;
  const auto add = [&](std::int32_t cached, std::int32_t new_tokens, bool is_prefill) {
    SequenceWork work;
    work.seq_id = next_id++;
    work.num_cached_tokens = cached;
    work.new_tokens.assign(static_cast<std::size_t>(new_tokens), 1);
    const std::int32_t pages = (cached + new_tokens + page_size - 1) / page_size;
    for (std::int32_t p = 0; p < pages; ++p) work.page_table.push_back(next_page++);
    work.is_prefill = is_prefill;
    work.sample = true;
    plan.sequences.push_back(std::move(work));
  };
  for (std::int32_t d = 0; d < shape.num_decodes; ++d) add(shape.decode_context - 1, 1, false);
  for (const auto& [cached, chunk] : shape.prefills) add(cached, chunk, true);
  return plan;
}

}  // namespace

Result<Calibration> calibrate_cpu(const ModelConfig& model, const CalibrationOptions& options) {
  const auto shapes = calibration_shapes(options);
  std::int32_t pages_needed = 0;
  for (const BatchShape& shape : shapes) {
    const BatchPlan plan = plan_for(shape, options.page_size);
    for (const SequenceWork& work : plan.sequences) {
      pages_needed =
          std::max(pages_needed, work.page_table.empty() ? 0 : work.page_table.back() + 1);
    }
  }
  auto backend = make_cpu_backend();
  SingleRankCommunicator comm;
  RandomWeightSource weights(options.weight_seed);
  ModelOptions model_options;
  model_options.num_pages = pages_needed;
  model_options.page_size = options.page_size;
  model_options.attention = AttentionKind::kCpu;
  model_options.max_context = model.max_position_embeddings;
  PODSERVE_ASSIGN_OR_RETURN(auto llama,
                            LlamaModel::create(model, weights, *backend, comm, model_options));

  using Clock = std::chrono::steady_clock;
  Calibration calibration;
  for (const BatchShape& shape : shapes) {
    const BatchPlan plan = plan_for(shape, options.page_size);
    const std::vector<SamplingRow> rows(plan.sequences.size(), SamplingRow{});
    std::vector<double> seconds;
    for (std::int32_t rep = 0; rep <= options.repetitions; ++rep) {
      const auto start = Clock::now();
      PODSERVE_ASSIGN_OR_RETURN(const auto tokens, llama->forward(plan, rows));
      const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      if (tokens.size() != rows.size()) return internal_error("calibration: sampled count differs");
      if (rep > 0) seconds.push_back(elapsed);  // rep 0 warms caches and grows the workspace
    }
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    calibration.samples.push_back(
        CostSample{.features = features_of(plan), .seconds = seconds[seconds.size() / 2]});
  }
  PODSERVE_ASSIGN_OR_RETURN(calibration.profile, fit_cost_profile(calibration.samples));
  calibration.profile.model = model.name;
  calibration.profile.backend = "cpu";
  calibration.profile.tp = 1;
  calibration.profile.source = fmt::format(
      "podserve-sim calibrate: LlamaModel::forward on {} synthetic plans, median of {} passes, "
      "random weights",
      shapes.size(), options.repetitions);
  return calibration;
}

namespace {

// One CSV line split at commas outside double quotes, the quotes removed.
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (const char c : line) {
    if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  return fields;
}

Result<double> csv_number(const std::string& text, std::string_view column, std::size_t line) {
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !std::isfinite(value)) {
    return invalid_argument(
        fmt::format("engine bench CSV line {}: {} is not a number: '{}'", line, column, text));
  }
  return value;
}

}  // namespace

Result<Calibration> calibrate_from_engine_bench(std::span<const std::string> csv_texts,
                                                const EngineBenchSelection& selection) {
  static constexpr std::array<std::string_view, 8> kColumns = {
      "card", "kind", "variant", "batch", "context", "chunk", "prefix", "wall_ms"};
  Calibration calibration;
  std::string card;
  for (const std::string& text : csv_texts) {
    std::istringstream lines(text);
    std::string line;
    if (!std::getline(lines, line)) return invalid_argument("engine bench CSV: empty");
    const std::vector<std::string> header = csv_fields(line);
    std::map<std::string, std::size_t, std::less<>> column;
    for (std::size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
    for (const std::string_view name : kColumns) {
      if (!column.contains(name))
        return invalid_argument(fmt::format("engine bench CSV: no '{}' column", name));
    }
    std::size_t line_number = 1;
    while (std::getline(lines, line)) {
      ++line_number;
      if (line.empty() || line == "\r") continue;
      const std::vector<std::string> fields = csv_fields(line);
      if (fields.size() != header.size()) {
        return invalid_argument(
            fmt::format("engine bench CSV line {}: {} fields, the header has {}", line_number,
                        fields.size(), header.size()));
      }
      const auto field = [&](std::string_view name) { return fields[column.find(name)->second]; };
      const std::string kind = field("kind"), variant = field("variant");
      const bool decode = kind == "decode";
      if (!decode && kind != "prefill" && kind != "hybrid") {
        return invalid_argument(
            fmt::format("engine bench CSV line {}: unknown kind '{}'", line_number, kind));
      }
      if (variant != (decode ? selection.decode_variant : selection.step_variant)) continue;
      if (card.empty()) card = field("card");
      if (field("card") != card) {
        return invalid_argument(
            fmt::format("engine bench CSV line {}: card '{}' after '{}': one profile per card",
                        line_number, field("card"), card));
      }
      double values[5] = {};
      const std::string_view numeric[5] = {"batch", "context", "chunk", "prefix", "wall_ms"};
      for (int i = 0; i < 5; ++i) {
        PODSERVE_ASSIGN_OR_RETURN(values[i],
                                  csv_number(field(numeric[i]), numeric[i], line_number));
      }
      const auto [batch, context, chunk, prefix, wall_ms] = values;
      CostSample sample;
      sample.seconds = wall_ms * 1e-3;
      if (kind != "prefill") {  // decode and hybrid rows: B decodes at context L
        sample.features.num_decodes = batch;
        sample.features.decode_context_tokens = batch * context;
      }
      if (!decode) {  // prefill and hybrid rows: a chunk of C after P
        sample.features.prefill_tokens = chunk;
        sample.features.prefill_attention_pairs = chunk * (prefix + chunk);
      }
      calibration.samples.push_back(sample);
    }
  }
  PODSERVE_ASSIGN_OR_RETURN(calibration.profile, fit_cost_profile(calibration.samples));
  calibration.profile.card = card;
  return calibration;
}

}  // namespace podserve::sim
