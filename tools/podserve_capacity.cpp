// podserve-capacity: for each deployment (variant), the highest offered rate at which the
// latency SLO holds for the target fraction of requests, found by a rate search
// (tools/bench/capacity_search.h) against the running service, then re-run at that rate; the
// goodput per GPU of every variant side by side, with the verdict, in a JSON report, a Markdown
// report and PNG plots (tools/capacity_plots.py, Debian's python3-matplotlib).
//
// Each variant's service starts once (deploy/mpirun.sh; weights load once), serves every probe
// (the same workload slice, the same prompts and arrival seed, at the probe's rate), drains
// between probes (no request left on the router or any instance), and stops with SIGTERM. The
// ranks' /metrics are scraped around each probe for the server's own view of it (TTFT, queue,
// prefill, KV-transfer wait and decode time per request). Variants come from configs, or from
// one disaggregated config and a list of P:D ratios (--pd-ratios).
// Exit code: 0 when every variant started, ran every probe, drained and stopped cleanly, and the
// report and plots were written; 2 for bad arguments or configs.
#include <fmt/format.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "tools/bench/capacity_search.h"
#include "tools/bench/prometheus_text.h"
#include "tools/bench/replay.h"
#include "tools/bench/stats.h"
#include "tools/bench/trace.h"
#include "tools/capacity_report.h"
#include "tools/deployment.h"
#include "tools/pd_sweep.h"

namespace {

using nlohmann::json;
using namespace podserve::bench;
namespace fs = std::filesystem;

enum class Arrivals { kPoisson, kGamma, kRecorded };

struct Options {
  std::vector<std::string> configs;
  std::string pd_ratios;
  WorkloadSource workload{.num_requests = 200};
  ScaleOptions scale;
  Arrivals arrivals = Arrivals::kPoisson;
  double burstiness = 1.0;
  std::uint64_t seed = 1;
  double slo_ttft_ms = 2000;  // 0: no bound
  double slo_tpot_ms = 100;
  double slo_e2e_ms = 0;
  Slo slo;  // from the three above
  bool token_ids = false;
  double target = 0.9;
  SearchOptions search;
  int repeats = 3;
  ReplayOptions client;
  std::string out_dir = "capacity-results";
  podserve::DeploymentTools tools;
  double ready_timeout_s = 600;
  double drain_timeout_s = 120;
  std::string python = "/usr/bin/python3";
  std::string plot_script = "tools/capacity_plots.py";
  bool plots = true;
};

struct Variant {
  std::string name;
  std::string config_path;
  podserve::ServiceConfig config;
};

json summary_json(const std::vector<double>& values) {
  const LatencySummary s = summarize(values);
  return {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}, {"max", s.max}};
}

// The server-side histograms a probe is compared with, read as differences of two scrapes.
constexpr const char* kServerHistograms[][2] = {
    {"ttft_s", "podserve_time_to_first_token_seconds"},
    {"queue_s", "podserve_request_queue_time_seconds"},
    {"prefill_s", "podserve_request_prefill_time_seconds"},
    {"kv_wait_s", "podserve_request_kv_wait_seconds"},
    {"decode_s", "podserve_request_decode_time_seconds"},
    {"prompt_tokens", "podserve_request_prompt_tokens"},
    {"generation_tokens", "podserve_request_generation_tokens"},
};

json histogram_json(const HistogramSnapshot& h) {
  return {{"upper_bounds", json::array()},  // filled below: JSON has no infinity
          {"cumulative_counts", h.cumulative_counts},
          {"sum", h.sum},
          {"count", h.count}};
}

json server_json(const std::vector<std::string>& before, const std::vector<std::string>& after) {
  json server;
  for (const auto& [key, metric] : kServerHistograms) {
    const HistogramSnapshot h =
        histogram_difference(read_histogram(after, metric), read_histogram(before, metric));
    json entry = histogram_json(h);
    for (const double bound : h.upper_bounds) {
      entry["upper_bounds"].push_back(std::isinf(bound) ? json(nullptr) : json(bound));
    }
    server[key] = entry;
  }
  return server;
}

HistogramSnapshot histogram_from_json(const json& entry) {
  HistogramSnapshot h;
  for (const json& bound : entry.at("upper_bounds")) {
    h.upper_bounds.push_back(bound.is_null() ? std::numeric_limits<double>::infinity()
                                             : bound.get<double>());
  }
  h.cumulative_counts = entry.at("cumulative_counts").get<std::vector<double>>();
  h.sum = entry.at("sum").get<double>();
  h.count = entry.at("count").get<double>();
  return h;
}

// Requests still held anywhere: the router's admitted ones and every instance's queues.
double requests_held(const std::vector<std::string>& expositions) {
  return sum_samples(expositions, "podserve_requests_running") +
         sum_samples(expositions, "podserve_requests_waiting") +
         sum_samples(expositions, "podserve_num_requests_running") +
         sum_samples(expositions, "podserve_num_requests_waiting") +
         sum_samples(expositions, "podserve_requests_waiting_for_kv");
}

class VariantRun {
 public:
  VariantRun(const Options& options, const Variant& variant,
             const std::vector<TraceRequest>& workload)
      : options_(options),
        variant_(variant),
        workload_(workload),
        deployment_(variant.name, variant.config_path, variant.config.router.listen,
                    options.out_dir, options.tools) {}

  // Starts the service; false (with a message) when it did not become ready.
  bool start() {
    std::printf("== %s: starting %s\n", variant_.name.c_str(), variant_.config_path.c_str());
    std::fflush(stdout);
    if (!deployment_.start() || !deployment_.wait_ready(options_.ready_timeout_s)) {
      std::fprintf(stderr, "podserve-capacity: %s did not become ready (log: %s)\n",
                   variant_.name.c_str(), deployment_.log_path().c_str());
      return false;
    }
    return true;
  }

  // One probe at `rate` with the arrival seed; false when the service did not drain after it.
  bool probe(double rate, std::uint64_t arrival_seed, json& record) {
    std::vector<TraceRequest> requests = workload_;
    schedule_arrivals(requests, ArrivalOptions{.rate = rate,
                                               .recorded = options_.arrivals == Arrivals::kRecorded,
                                               .burstiness = options_.arrivals == Arrivals::kGamma
                                                                 ? options_.burstiness
                                                                 : 1.0,
                                               .seed = arrival_seed});
    const std::vector<std::string> before = deployment_.scrape();
    ReplayOptions client = options_.client;
    client.url = deployment_.url();
    const ReplayResult replayed = replay(requests, client);
    const bool drained = wait_drained();
    const std::vector<std::string> after = deployment_.scrape();

    std::vector<double> ttft, tpot, e2e;
    json per_request = json::array();
    std::size_t errors = 0;
    for (const CompletionResult& r : replayed.results) {
      per_request.push_back({r.ok, r.ttft_s, r.tpot_s(), r.e2e_s});
      if (!r.ok) {
        ++errors;
        continue;
      }
      ttft.push_back(r.ttft_s);
      if (r.output_tokens > 1) tpot.push_back(r.tpot_s());
      e2e.push_back(r.e2e_s);
    }
    const double attainment = slo_attainment(replayed.results, options_.slo);
    record = {{"rate", rate},
              {"arrival_seed", arrival_seed},
              {"attainment", attainment},
              {"attained", attainment >= options_.target},
              {"completed", replayed.results.size() - errors},
              {"errors", errors},
              {"duration_s", replayed.duration_s},
              {"ttft_s", summary_json(ttft)},
              {"tpot_s", summary_json(tpot)},
              {"e2e_s", summary_json(e2e)},
              {"server", server_json(before, after)},
              {"requests", per_request}};
    std::printf("== %s: %7.3f req/s  attainment %.3f  TTFT p90 %8.1f ms  TPOT p90 %7.1f ms%s\n",
                variant_.name.c_str(), rate, attainment,
                record["ttft_s"]["p90"].get<double>() * 1e3,
                record["tpot_s"]["p90"].get<double>() * 1e3, errors ? "  (errors)" : "");
    std::fflush(stdout);
    if (!drained) {
      std::fprintf(stderr, "podserve-capacity: %s did not drain within %.0f s after a probe\n",
                   variant_.name.c_str(), options_.drain_timeout_s);
    }
    return drained;
  }

  int stop() { return deployment_.stop(); }
  const std::string& log_path() const { return deployment_.log_path(); }

 private:
  bool wait_drained() {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(options_.drain_timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (requests_held(deployment_.scrape()) == 0.0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  const Options& options_;
  const Variant& variant_;
  const std::vector<TraceRequest>& workload_;
  podserve::Deployment deployment_;
};

// GPUs (CUDA backend: instance ranks) or ranks (CPU backend: every rank) the variant uses.
// backend: auto is resolved from what the instance ranks logged.
std::pair<int, std::string> variant_gpus(const podserve::ServiceConfig& config,
                                         const std::string& service_log) {
  bool cuda = config.backend == podserve::BackendChoice::kCuda;
  if (config.backend == podserve::BackendChoice::kAuto) {
    cuda = service_log.find("backend auto: CUDA") != std::string::npos;
  }
  if (!cuda) return {config.world_size(), "rank"};
  int instance_ranks = 0;
  for (const auto& group : config.instances) instance_ranks += group.tp * group.count;
  return {instance_ranks, "GPU"};
}

// The client's and the server's TTFT over the repeats at capacity.
json ttft_check(const json& reruns) {
  std::vector<double> client;
  HistogramSnapshot server;
  for (std::size_t k = 0; k < reruns.size(); ++k) {
    const json& rerun = reruns[k];
    for (const json& r : rerun["requests"]) {
      if (r[0].get<bool>()) client.push_back(r[1].get<double>());
    }
    const HistogramSnapshot h = histogram_from_json(rerun["server"]["ttft_s"]);
    if (k == 0) {
      server = h;
    } else if (h.upper_bounds == server.upper_bounds) {
      for (std::size_t i = 0; i < h.cumulative_counts.size(); ++i) {
        server.cumulative_counts[i] += h.cumulative_counts[i];
      }
      server.sum += h.sum;
      server.count += h.count;
    }
  }
  const QuantileEstimate median = histogram_quantile(server, 0.5);
  const double client_median = percentile(client, 50);
  const double client_mean = summarize(client).mean;
  const double server_mean = server.mean();
  const bool medians_agree =
      client_median > 0 && std::abs(median.value - client_median) <= 0.05 * client_median;
  const bool in_bucket =
      client_median >= median.bucket_lower && client_median <= median.bucket_upper;
  const bool means_agree =
      client_mean > 0 && std::abs(server_mean - client_mean) <= 0.05 * client_mean;
  std::string note;
  if (client.empty()) {
    note = "no request succeeded at capacity";
  } else if (medians_agree) {
    note = "medians within 5%";
  } else if (in_bucket && means_agree) {
    note = fmt::format(
        "the server's median is interpolated in its bucket [{:.1f}, {:.1f}] ms, which holds the "
        "client's median; the exact means agree within 5% ({:+.2f} ms, client minus server)",
        median.bucket_lower * 1e3, median.bucket_upper * 1e3, (client_mean - server_mean) * 1e3);
  } else {
    note = fmt::format(
        "client minus server: {:+.2f} ms at the mean; the client's time includes the TCP "
        "connection, sending the request and reading the first chunk, the server's starts once "
        "the request is read",
        (client_mean - server_mean) * 1e3);
  }
  return {{"requests", client.size()},
          {"client_median_s", client_median},
          {"client_mean_s", client_mean},
          {"server_median_s", median.value},
          {"server_bucket_lower_s", median.bucket_lower},
          {"server_bucket_upper_s",
           std::isinf(median.bucket_upper) ? json(nullptr) : json(median.bucket_upper)},
          {"server_mean_s", server_mean},
          {"server_count", server.count},
          {"agree", medians_agree || (in_bucket && means_agree)},
          {"note", note}};
}

// Means of the server's per-request phases over the repeats at capacity.
json phases(const json& reruns) {
  json means;
  for (const auto& [key, metric] : kServerHistograms) {
    double sum = 0.0, count = 0.0;
    for (const json& rerun : reruns) {
      sum += rerun["server"][key]["sum"].get<double>();
      count += rerun["server"][key]["count"].get<double>();
    }
    means[key] = count > 0 ? sum / count : 0.0;
  }
  return means;
}

// Searches one variant's capacity and re-runs it; false when the deployment failed.
bool measure(const Options& options, const Variant& variant,
             const std::vector<TraceRequest>& workload, json& out) {
  VariantRun run(options, variant, workload);
  // Every key the report reads, so a variant that failed to start still reports.
  out = {{"name", variant.name},
         {"config", variant.config_path},
         {"mode", std::string(podserve::to_string(variant.config.scheduler.mode))},
         {"gpus", 0},
         {"gpu_unit", "GPU"},
         {"capacity", 0.0},
         {"lower", 0.0},
         {"upper", nullptr},
         {"outcome", "not_started"},
         {"probes", json::array()},
         {"reruns", json::array()},
         {"goodput", {{"mean", 0.0}, {"min", 0.0}, {"max", 0.0}}},
         {"goodput_per_gpu", {{"mean", 0.0}, {"min", 0.0}, {"max", 0.0}}},
         {"ttft_check", json::object()},
         {"phases", json::object()},
         {"service_exit", -1}};
  if (!run.start()) {
    out["service_exit"] = run.stop();
    return false;
  }
  const auto [gpus, unit] = variant_gpus(variant.config, podserve::read_text_file(run.log_path()));
  out["gpus"] = gpus;
  out["gpu_unit"] = unit;
  bool ok = true;
  CapacitySearch search(options.search);
  while (ok && search.outcome() == SearchOutcome::kSearching) {
    json record;
    ok = run.probe(search.next_rate(), options.seed, record);
    search.record(record["attained"].get<bool>());
    out["probes"].push_back(std::move(record));
  }
  const double capacity = search.capacity();
  std::vector<double> goodputs;
  for (int k = 1; ok && capacity > 0.0 && k <= options.repeats; ++k) {
    json record;
    ok = run.probe(capacity, options.seed + static_cast<std::uint64_t>(k), record);
    goodputs.push_back(capacity * record["attainment"].get<double>());
    out["reruns"].push_back(std::move(record));
  }
  const int exit_code = run.stop();
  std::printf("== %s: capacity %.3f req/s (%s), service exit %d\n", variant.name.c_str(), capacity,
              std::string(to_string(search.outcome())).c_str(), exit_code);
  const LatencySummary goodput = summarize(goodputs);
  const double min = goodputs.empty() ? 0.0 : *std::min_element(goodputs.begin(), goodputs.end());
  out["capacity"] = capacity;
  out["lower"] = search.lower();
  out["upper"] = std::isinf(search.upper()) ? json(nullptr) : json(search.upper());
  out["outcome"] = std::string(to_string(search.outcome()));
  out["goodput"] = {{"mean", goodput.mean}, {"min", min}, {"max", goodput.max}};
  out["goodput_per_gpu"] = {
      {"mean", goodput.mean / gpus}, {"min", min / gpus}, {"max", goodput.max / gpus}};
  out["ttft_check"] = ttft_check(out["reruns"]);
  out["phases"] = phases(out["reruns"]);
  out["service_exit"] = exit_code;
  return ok && exit_code == 0;
}

// The variants: the configs as given, or the P:D sweep of the one config.
bool make_variants(const Options& options, std::vector<Variant>& variants) {
  std::vector<std::pair<std::string, std::string>> named;  // name, path
  if (!options.pd_ratios.empty()) {
    if (options.configs.size() != 1) {
      std::fprintf(stderr, "podserve-capacity: --pd-ratios takes exactly one base config\n");
      return false;
    }
    auto ratios = podserve::parse_pd_ratios(options.pd_ratios);
    if (!ratios.ok()) {
      std::fprintf(stderr, "podserve-capacity: %s\n", ratios.status().message().c_str());
      return false;
    }
    const std::string base = podserve::read_text_file(options.configs[0]);
    for (const podserve::PdRatio& ratio : *ratios) {
      auto yaml = podserve::pd_variant_yaml(base, ratio);
      if (!yaml.ok()) {
        std::fprintf(stderr, "podserve-capacity: %s: %s\n", options.configs[0].c_str(),
                     yaml.status().message().c_str());
        return false;
      }
      const std::string name = fmt::format("pd-{}x{}", ratio.prefill, ratio.decode);
      const std::string path = (fs::path(options.out_dir) / (name + ".yaml")).string();
      std::ofstream(path) << "# podserve-capacity: " << options.configs[0] << " with P:D "
                          << ratio.prefill << ":" << ratio.decode << "\n"
                          << *yaml;
      named.emplace_back(name, path);
    }
  } else {
    for (const std::string& path : options.configs) {
      named.emplace_back(fs::path(path).stem().string(), path);
    }
  }
  for (std::size_t k = 0; k < named.size(); ++k) {
    Variant v{.name = named[k].first, .config_path = named[k].second, .config = {}};
    for (std::size_t j = 0; j < named.size(); ++j) {
      if (j != k && named[j].first == v.name) v.name += std::string("-") + char('a' + k);
    }
    try {
      v.config = podserve::load_config(v.config_path);
    } catch (const podserve::ConfigError& e) {
      std::fprintf(stderr, "podserve-capacity: %s: %s\n", v.config_path.c_str(), e.what());
      return false;
    }
    variants.push_back(std::move(v));
  }
  return true;
}

int run(Options& options) {
  fs::create_directories(options.out_dir);
  std::vector<Variant> variants;
  if (!make_variants(options, variants)) return 2;
  auto loaded = load_workload(options.workload);
  if (!loaded.ok() || loaded->empty()) {
    std::fprintf(stderr, "podserve-capacity: %s\n",
                 loaded.ok() ? "no requests in the workload" : loaded.status().message().c_str());
    return 2;
  }
  std::vector<TraceRequest> workload = std::move(loaded).value();
  scale_lengths(workload, options.scale);
  if (options.arrivals == Arrivals::kRecorded && workload.back().arrival_s <= 0.0) {
    std::fprintf(stderr,
                 "podserve-capacity: --arrivals recorded needs a slice whose arrivals "
                 "span some time (a trace, not --synthetic)\n");
    return 2;
  }

  const char* arrivals = options.arrivals == Arrivals::kPoisson ? "poisson"
                         : options.arrivals == Arrivals::kGamma ? "gamma"
                                                                : "recorded";
  json report = {
      {"slo",
       {{"ttft_s", options.slo.ttft_s},
        {"tpot_s", options.slo.tpot_s},
        {"e2e_s", options.slo.e2e_s},
        {"target", options.target}}},
      {"search",
       {{"start_rate", options.search.start_rate},
        {"growth", options.search.growth},
        {"tolerance", options.search.tolerance},
        {"min_rate", options.search.min_rate},
        {"max_rate", options.search.max_rate},
        {"max_probes", options.search.max_probes},
        {"repeats", options.repeats}}},
      {"workload",
       {{"source",
         options.workload.synthetic
             ? fmt::format("synthetic ({} prompt, {} output tokens)",
                           options.workload.synthetic_prompt, options.workload.synthetic_output)
             : fmt::format("{} from row {}", options.workload.trace, options.workload.offset)},
        {"num_requests", workload.size()},
        {"arrivals", arrivals},
        {"burstiness", options.burstiness},
        {"seed", options.seed},
        {"prompt_scale", options.scale.prompt_scale},
        {"output_scale", options.scale.output_scale},
        {"max_prompt", options.scale.max_prompt},
        {"max_output", options.scale.max_output}}},
      {"variants", json::array()}};
  bool ok = true;
  for (const Variant& variant : variants) {
    json measured;
    ok = measure(options, variant, workload, measured) && ok;
    report["variants"].push_back(std::move(measured));
  }
  report["verdict"] = podserve::capacity_verdict(report);

  const fs::path out_dir(options.out_dir);
  const std::string json_path = (out_dir / "capacity-report.json").string();
  std::ofstream(json_path) << report.dump(2) << "\n";
  if (options.plots) {
    const std::string command =
        fmt::format("{} {} {} {}", options.python, options.plot_script, json_path, options.out_dir);
    if (const int status = std::system(command.c_str()); status != 0) {
      std::fprintf(stderr, "podserve-capacity: the plots failed (%s exited %d)\n", command.c_str(),
                   status);
      ok = false;
    }
  }
  const std::string md_path = (out_dir / "capacity-report.md").string();
  std::ofstream(md_path) << podserve::capacity_markdown(report);
  std::printf("\n%s\nreport: %s, %s\n", report["verdict"].get<std::string>().c_str(),
              md_path.c_str(), json_path.c_str());
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  const fs::path self_dir = fs::canonical("/proc/self/exe").parent_path();
  options.tools.podserve = (self_dir / "podserve").string();
  options.tools.mpirun_script = "deploy/mpirun.sh";
  CLI::App app{
      "podserve-capacity: the highest rate each deployment sustains under a latency SLO, and its "
      "goodput per GPU"};
  app.add_option("configs", options.configs,
                 "deployment configs (with --pd-ratios: the one disaggregated base config)")
      ->required()
      ->expected(1, 26);
  app.add_option("--pd-ratios", options.pd_ratios,
                 "P:D sweep: variants PREFILL:DECODE,... made from the one config");
  app.add_option("--trace", options.workload.trace, "Azure LLM trace CSV")->capture_default_str();
  app.add_option("--offset", options.workload.offset, "first trace row")->capture_default_str();
  app.add_option("--num-requests", options.workload.num_requests, "requests per probe")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--synthetic", options.workload.synthetic, "fixed lengths instead of the trace");
  app.add_option("--synthetic-prompt", options.workload.synthetic_prompt)->capture_default_str();
  app.add_option("--synthetic-output", options.workload.synthetic_output)->capture_default_str();
  app.add_option("--prompt-scale", options.scale.prompt_scale)->capture_default_str();
  app.add_option("--output-scale", options.scale.output_scale)->capture_default_str();
  app.add_option("--min-prompt", options.scale.min_prompt)->capture_default_str();
  app.add_option("--max-prompt", options.scale.max_prompt)->capture_default_str();
  app.add_option("--max-output", options.scale.max_output)->capture_default_str();
  app.add_option("--arrivals", options.arrivals,
                 "poisson, gamma (--burstiness) or recorded (the trace's pattern, time-scaled to "
                 "each probe's rate)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Arrivals>{{"poisson", Arrivals::kPoisson},
                                          {"gamma", Arrivals::kGamma},
                                          {"recorded", Arrivals::kRecorded}}))
      ->capture_default_str();
  app.add_option("--burstiness", options.burstiness, "Gamma shape: 1 Poisson, < 1 burstier")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", options.seed, "prompts and the search's arrivals (repeats: seed + k)")
      ->capture_default_str();
  app.add_option("--slo-ttft-ms", options.slo_ttft_ms, "TTFT bound (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--slo-tpot-ms", options.slo_tpot_ms, "TPOT bound (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--slo-e2e-ms", options.slo_e2e_ms, "end-to-end bound (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--target", options.target, "SLO attainment that must hold")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--start-rate", options.search.start_rate, "first probe, req/s")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--growth", options.search.growth, "bracketing factor")
      ->check(CLI::Range(1.01, 100.0))
      ->capture_default_str();
  app.add_option("--tolerance", options.search.tolerance, "bisect until upper <= lower * (1 + t)")
      ->check(CLI::Range(0.001, 10.0))
      ->capture_default_str();
  app.add_option("--min-rate", options.search.min_rate)->capture_default_str();
  app.add_option("--max-rate", options.search.max_rate)->capture_default_str();
  app.add_option("--max-probes", options.search.max_probes)->capture_default_str();
  app.add_option("--repeats", options.repeats, "re-runs at the capacity found")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--concurrency-limit", options.client.concurrency_limit)->capture_default_str();
  app.add_option("--timeout-s", options.client.timeout_s, "per-request read timeout")
      ->capture_default_str();
  app.add_option("--model", options.client.model, "the request's \"model\" (empty: not sent)");
  app.add_flag("--token-ids", options.token_ids,
               "count output tokens from podserve's token_ids (default: the streamed usage)");
  app.add_option("--out-dir", options.out_dir, "logs, configs, the report and the plots")
      ->capture_default_str();
  app.add_option("--podserve", options.tools.podserve)->capture_default_str();
  app.add_option("--mpirun-script", options.tools.mpirun_script)->capture_default_str();
  app.add_option("--ready-timeout-s", options.ready_timeout_s)->capture_default_str();
  app.add_option("--drain-timeout-s", options.drain_timeout_s)->capture_default_str();
  app.add_option("--python", options.python, "a Python with matplotlib")->capture_default_str();
  app.add_option("--plot-script", options.plot_script)->capture_default_str();
  app.add_flag_callback(
      "--no-plots", [&options] { options.plots = false; }, "skip the PNGs");
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  options.client.prompt_seed = options.seed;
  options.client.counting = options.token_ids ? TokenCounting::kTokenIds : TokenCounting::kUsage;
  options.slo = Slo{.ttft_s = options.slo_ttft_ms / 1e3,
                    .tpot_s = options.slo_tpot_ms / 1e3,
                    .e2e_s = options.slo_e2e_ms / 1e3};
  return run(options);
}
