// podserve-sim: replays a trace through podserve's own colocated scheduler, block manager and
// router policy on a virtual clock (sim/simulator.h), with iteration times from a calibrated
// cost profile (sim/cost_model.h), and prints podserve-bench's latency summary. One process; no
// MPI, no HTTP, no model.
//
//   podserve-sim run --config C.yaml --profile P.json --trace T.csv [workload options]
//   podserve-sim calibrate --out P.json [--preset tiny]   (CPU backend, TP 1)
//   podserve-sim calibrate --out P.json --preset llama3-8b --engine-bench E.csv [...]
//
// Exit codes: 0 done, 1 simulation or calibration error, 2 bad arguments or inputs.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/model_config.h"
#include "nlohmann/json.hpp"
#include "sim/calibrate.h"
#include "sim/cost_model.h"
#include "sim/simulator.h"
#include "tools/bench/stats.h"
#include "tools/bench/trace.h"

namespace {

using namespace podserve;
using nlohmann::json;

struct RunOptions {
  std::string config;
  std::vector<std::string> profiles;
  std::string trace = "tools/data/azure-llm-2023-code.csv";
  std::size_t num_requests = 300;
  std::size_t offset = 0;
  double rate = 0.0;
  double time_scale = 1.0;
  bench::ScaleOptions scale;
  std::uint64_t seed = 1;
  std::string json_out;
  // podserve-bench's synthetic load: num_requests of these lengths instead of the trace's.
  bool synthetic = false;
  std::int32_t synthetic_prompt = 512;
  std::int32_t synthetic_output = 128;
  std::int32_t concurrency_limit = 0;  // podserve-bench --concurrency-limit (0: none)
};

struct CalibrateOptions {
  std::string preset = "tiny";
  std::string out;
  sim::CalibrationOptions calibration;
  // From podserve-engine-bench CSVs instead of measuring here (e.g. a GPU profile).
  std::vector<std::string> engine_bench_csvs;
  std::int32_t tp = 1;
  sim::EngineBenchSelection selection;
};

// The model the config names, with its max_model_len override (as cluster/main.cpp resolves it).
Result<ModelConfig> resolve_model(const ServiceConfig& config) {
  auto model = config.model.config.empty() ? model_preset(config.model.preset)
                                           : model_config_from_hf_json(config.model.config);
  if (model.ok() && config.model.max_model_len > 0) {
    model->max_position_embeddings = config.model.max_model_len;
  }
  return model;
}

json summary_json(const bench::LatencySummary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

void print_row(const char* name, const bench::LatencySummary& s) {
  std::printf("%-22s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, s.mean * 1e3, s.p50 * 1e3,
              s.p90 * 1e3, s.p99 * 1e3, s.max * 1e3);
}

constexpr const char* kBatchKindNames[] = {"prefill", "decode", "hybrid"};

json iterations_json(const sim::SimResult& result) {
  json kinds;
  for (std::size_t k = 0; k < result.iterations_by_kind.size(); ++k) {
    const sim::IterationTotals& totals = result.iterations_by_kind[k];
    kinds[kBatchKindNames[k]] = {{"count", totals.count}, {"seconds", totals.seconds}};
  }
  return kinds;
}

int run(const RunOptions& options) {
  ServiceConfig config;
  try {
    config = load_config(options.config);
  } catch (const ConfigError& e) {
    std::cerr << "podserve-sim: " << e.what() << "\n";
    return 2;
  }
  auto model = resolve_model(config);
  if (!model.ok()) {
    std::cerr << "podserve-sim: " << model.status().to_string() << "\n";
    return 2;
  }
  auto sim_options = sim::sim_options_from_config(config, *model);
  if (!sim_options.ok()) {
    std::cerr << "podserve-sim: " << sim_options.status().to_string() << "\n";
    return 2;
  }
  for (const std::string& path : options.profiles) {
    auto profile = sim::load_cost_profile(path);
    if (!profile.ok()) {
      std::cerr << "podserve-sim: " << profile.status().to_string() << "\n";
      return 2;
    }
    sim_options->profiles[profile->tp] = std::move(profile).value();
  }

  sim_options->concurrency_limit = options.concurrency_limit;
  Result<std::vector<bench::TraceRequest>> workload = std::vector<bench::TraceRequest>{};
  if (options.synthetic) {
    // As podserve-bench --synthetic: every request of the same lengths, all due at once unless
    // --rate spaces them.
    workload->assign(options.num_requests,
                     bench::TraceRequest{.prompt_tokens = options.synthetic_prompt,
                                         .output_tokens = options.synthetic_output});
  } else {
    std::ifstream csv(options.trace);
    if (!csv) {
      std::cerr << "podserve-sim: cannot open trace " << options.trace << "\n";
      return 2;
    }
    workload = bench::parse_azure_trace(csv, options.offset, options.num_requests);
    if (!workload.ok()) {
      std::cerr << "podserve-sim: " << workload.status().to_string() << "\n";
      return 2;
    }
    bench::scale_lengths(*workload, options.scale);
  }
  bench::schedule_arrivals(*workload, options.rate, options.time_scale, options.seed);
  std::vector<sim::SimRequest> requests;
  for (const bench::TraceRequest& r : *workload) {
    requests.push_back(sim::SimRequest{.arrival_s = r.arrival_s,
                                       .prompt_tokens = r.prompt_tokens,
                                       .output_tokens = r.output_tokens});
  }

  const auto wall_start = std::chrono::steady_clock::now();
  auto result = sim::simulate(*sim_options, requests);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (!result.ok()) {
    std::cerr << "podserve-sim: " << result.status().to_string() << "\n";
    return result.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }

  std::vector<double> ttft, itl, tpot, e2e;
  std::int64_t output_tokens = 0, prompt_tokens = 0;
  std::size_t completed = 0;
  for (std::size_t i = 0; i < result->requests.size(); ++i) {
    const sim::SimRequestResult& r = result->requests[i];
    if (!r.finished) continue;
    ++completed;
    ttft.push_back(r.first_token_s - r.arrival_s);
    e2e.push_back(r.finish_s - r.arrival_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    if (!r.itl_s.empty()) tpot.push_back(bench::summarize(r.itl_s).mean);
    output_tokens += r.output_tokens;
    prompt_tokens += requests[i].prompt_tokens;
  }
  const double duration_s = result->end_s;
  const json report = {{"simulated", true},
                       {"config", options.config},
                       {"profiles", options.profiles},
                       {"workload", options.synthetic ? fmt::format("synthetic prompt {} output {}",
                                                                    options.synthetic_prompt,
                                                                    options.synthetic_output)
                                                      : options.trace},
                       {"concurrency_limit", options.concurrency_limit},
                       {"num_requests", requests.size()},
                       {"rate", options.rate},
                       {"time_scale", options.time_scale},
                       {"duration_s", duration_s},
                       {"completed", completed},
                       {"errors", requests.size() - completed},
                       {"request_throughput", static_cast<double>(completed) / duration_s},
                       {"output_token_throughput", static_cast<double>(output_tokens) / duration_s},
                       {"prompt_tokens", prompt_tokens},
                       {"output_tokens", output_tokens},
                       {"ttft_s", summary_json(bench::summarize(ttft))},
                       {"itl_s", summary_json(bench::summarize(itl))},
                       {"tpot_s", summary_json(bench::summarize(tpot))},
                       {"e2e_s", summary_json(bench::summarize(e2e))},
                       {"iterations", result->iterations},
                       {"iterations_by_kind", iterations_json(*result)},
                       {"preemptions", result->preemptions},
                       {"simulation_wall_s", wall_s}};

  std::printf(
      "podserve-sim: %zu requests on %zu instances, %.2f virtual s (%lld iterations, "
      "%lld preemptions) in %.3f s\n",
      requests.size(), sim_options->instances.size(), duration_s,
      static_cast<long long>(result->iterations), static_cast<long long>(result->preemptions),
      wall_s);
  std::printf("request throughput      %10.2f req/s\n", report["request_throughput"].get<double>());
  std::printf("output token throughput %10.2f tok/s\n",
              report["output_token_throughput"].get<double>());
  std::printf("%-22s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99",
              "max");
  print_row("TTFT", bench::summarize(ttft));
  print_row("ITL", bench::summarize(itl));
  print_row("TPOT (mean ITL/req)", bench::summarize(tpot));
  print_row("E2E", bench::summarize(e2e));
  for (std::size_t k = 0; k < result->iterations_by_kind.size(); ++k) {
    const sim::IterationTotals& totals = result->iterations_by_kind[k];
    std::printf("%s iterations %lld, mean %.3f ms\n", kBatchKindNames[k],
                static_cast<long long>(totals.count),
                totals.count > 0 ? totals.seconds / static_cast<double>(totals.count) * 1e3 : 0.0);
  }
  if (!options.json_out.empty()) {
    std::ofstream out(options.json_out);
    out << report.dump(2) << "\n";
    if (!out) {
      std::cerr << "podserve-sim: cannot write " << options.json_out << "\n";
      return 1;
    }
  }
  return completed == requests.size() ? 0 : 1;
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        return fmt::format("{} ({} logical CPUs)",
                           line.substr(line.find_first_not_of(' ', colon + 1)),
                           std::thread::hardware_concurrency());
      }
    }
  }
  return "unknown CPU";
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// The profile of podserve-engine-bench CSVs (measured on another host).
Result<sim::Calibration> calibrate_from_csvs(const CalibrateOptions& options) {
  std::vector<std::string> texts;
  for (const std::string& path : options.engine_bench_csvs) {
    std::ifstream in(path);
    if (!in) return invalid_argument("cannot read " + path);
    texts.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  PODSERVE_ASSIGN_OR_RETURN(auto calibration,
                            sim::calibrate_from_engine_bench(texts, options.selection));
  calibration.profile.model = options.preset;
  calibration.profile.backend = "cuda";
  calibration.profile.tp = options.tp;
  std::string files;
  for (const std::string& path : options.engine_bench_csvs)
    files += (files.empty() ? "" : ", ") + path.substr(path.find_last_of('/') + 1);
  calibration.profile.source = fmt::format(
      "podserve-sim calibrate --engine-bench: {} rows of podserve-engine-bench ({}; decode rows "
      "'{}', prefill and hybrid rows '{}'), median wall time of each",
      calibration.samples.size(), files, options.selection.decode_variant,
      options.selection.step_variant);
  return calibration;
}

int calibrate(const CalibrateOptions& options) {
  auto model = model_preset(options.preset);
  if (!model.ok()) {
    std::cerr << "podserve-sim: " << model.status().to_string() << "\n";
    return 2;
  }
  const bool from_csvs = !options.engine_bench_csvs.empty();
  auto calibration =
      from_csvs ? calibrate_from_csvs(options) : sim::calibrate_cpu(*model, options.calibration);
  if (!calibration.ok()) {
    std::cerr << "podserve-sim: " << calibration.status().to_string() << "\n";
    return from_csvs ? 2 : 1;
  }
  sim::CostProfile& profile = calibration->profile;
  if (!from_csvs) profile.card = cpu_model_name();
  profile.date = utc_now();
  std::printf("%-10s %-14s %-10s %-16s %-12s %-12s\n", "prefill", "prefill_pairs", "decodes",
              "decode_context", "measured_ms", "fitted_ms");
  for (const sim::CostSample& s : calibration->samples) {
    std::printf("%-10.0f %-14.0f %-10.0f %-16.0f %-12.3f %-12.3f\n", s.features.prefill_tokens,
                s.features.prefill_attention_pairs, s.features.num_decodes,
                s.features.decode_context_tokens, s.seconds * 1e3,
                profile.predict(s.features) * 1e3);
  }
  std::printf("fit: %d samples, rms residual %.3f ms, max %.3f ms, mean relative %.1f %%\n",
              profile.num_samples, profile.rms_residual_s * 1e3, profile.max_abs_residual_s * 1e3,
              profile.mean_abs_relative_residual * 100.0);
  const Status saved = sim::save_cost_profile(profile, options.out, calibration->samples);
  if (!saved.ok()) {
    std::cerr << "podserve-sim: " << saved.to_string() << "\n";
    return 1;
  }
  std::printf("profile written to %s\n", options.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"podserve-sim: the colocated service on a virtual clock, from a cost profile"};
  app.require_subcommand(1);

  RunOptions run_options;
  CLI::App* run_command = app.add_subcommand("run", "replay a trace through the simulator");
  run_command->add_option("--config", run_options.config, "the service's config YAML")->required();
  run_command->add_option("--profile", run_options.profiles, "cost profile JSON, one per TP")
      ->required();
  run_command->add_option("--trace", run_options.trace, "Azure LLM trace CSV")
      ->capture_default_str();
  run_command->add_option("--num-requests", run_options.num_requests, "requests (0: whole trace)")
      ->capture_default_str();
  run_command->add_option("--offset", run_options.offset, "first trace row (0-based)")
      ->capture_default_str();
  run_command
      ->add_option("--rate", run_options.rate, "requests/s, Poisson arrivals; 0: as recorded")
      ->capture_default_str();
  run_command->add_option("--time-scale", run_options.time_scale, "multiply recorded gaps (rate 0)")
      ->capture_default_str();
  run_command->add_option("--prompt-scale", run_options.scale.prompt_scale)->capture_default_str();
  run_command->add_option("--output-scale", run_options.scale.output_scale)->capture_default_str();
  run_command->add_option("--min-prompt", run_options.scale.min_prompt)->capture_default_str();
  run_command->add_option("--max-prompt", run_options.scale.max_prompt)->capture_default_str();
  run_command->add_option("--max-output", run_options.scale.max_output)->capture_default_str();
  run_command->add_option("--seed", run_options.seed, "arrival RNG seed (podserve-bench's)")
      ->capture_default_str();
  run_command->add_option("--json-out", run_options.json_out, "write the report as JSON");
  run_command->add_flag("--synthetic", run_options.synthetic,
                        "podserve-bench's synthetic load instead of the trace");
  run_command->add_option("--synthetic-prompt", run_options.synthetic_prompt)
      ->capture_default_str();
  run_command->add_option("--synthetic-output", run_options.synthetic_output)
      ->capture_default_str();
  run_command
      ->add_option("--concurrency-limit", run_options.concurrency_limit,
                   "at most this many requests in flight (podserve-bench's; 0: none)")
      ->capture_default_str();

  CalibrateOptions calibrate_options;
  CLI::App* calibrate_command = app.add_subcommand(
      "calibrate", "measure a cost profile on the CPU backend (TP 1), or fit engine bench CSVs");
  calibrate_command->add_option("--preset", calibrate_options.preset, "model preset")
      ->capture_default_str();
  calibrate_command->add_option("--out", calibrate_options.out, "profile JSON to write")
      ->required();
  calibrate_command->add_option("--page-size", calibrate_options.calibration.page_size)
      ->capture_default_str();
  calibrate_command->add_option("--max-context", calibrate_options.calibration.max_context)
      ->capture_default_str();
  calibrate_command
      ->add_option("--max-batch-tokens", calibrate_options.calibration.max_batch_tokens,
                   "new tokens per plan (scheduler.token_budget)")
      ->capture_default_str();
  calibrate_command
      ->add_option("--max-decodes", calibrate_options.calibration.max_decodes,
                   "decodes per plan (scheduler.max_running)")
      ->capture_default_str();
  calibrate_command->add_option("--repetitions", calibrate_options.calibration.repetitions)
      ->capture_default_str();
  calibrate_command
      ->add_option("--engine-bench", calibrate_options.engine_bench_csvs,
                   "fit podserve-engine-bench CSVs (measured elsewhere, e.g. on a GPU) instead of "
                   "measuring the CPU backend here; --preset names their model")
      ->check(CLI::ExistingFile);
  calibrate_command->add_option("--tp", calibrate_options.tp, "TP degree of the CSVs' runs")
      ->capture_default_str();
  calibrate_command
      ->add_option("--decode-variant", calibrate_options.selection.decode_variant,
                   "engine bench decode rows to fit (graph | eager | cublas)")
      ->capture_default_str();
  calibrate_command
      ->add_option("--step-variant", calibrate_options.selection.step_variant,
                   "engine bench prefill and hybrid rows to fit (pod | serial)")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  if (run_command->parsed()) return run(run_options);
  return calibrate(calibrate_options);
}
