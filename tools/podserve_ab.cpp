// podserve-ab: an A/B experiment between two or more deployments of the same model (typically
// colocated vs disaggregated: the configs differ in `scheduler.mode` and `instances`; or a sweep:
// prefill:decode ratios, KV transports). For each variant in turn it starts the service under
// mpirun (deploy/mpirun.sh), replays the same workload with podserve-bench, scrapes every rank's
// /metrics (the endpoints the router lists in its file_sd file, --sd-file in --out-dir), stops the
// service with SIGTERM (drain + clean shutdown), and finally prints the
// variants side by side, each against the first (B/A, C/A, ...), and writes a JSON report.
// Exit code: 0 when every variant served every request and shut down cleanly.
#include <fmt/format.h>
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.h"
#include "tools/bench/prometheus_text.h"
#include "tools/deployment.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct Variant {
  std::string name;
  std::string config_path;
  podserve::ServiceConfig config;
};

struct Tools {
  podserve::DeploymentTools deployment;
  std::string bench;
  double ready_timeout_s = 600;  // a GPU deployment loads its weights before it is ready
};

// Sums every sample of `metric` (all label sets) over the exposition texts.
double sum_metric(const std::vector<std::string>& expositions, const std::string& metric) {
  return podserve::bench::sum_samples(expositions, metric);
}

// The distinct values of `label` on the samples of `metric`, joined with "," in first-seen order;
// "-" when no rank exports it (podserve_kv_transport_info in colocated mode).
std::string label_values(const std::vector<std::string>& expositions, const std::string& metric,
                         const std::string& label) {
  std::vector<std::string> values;
  const std::regex line("^" + metric + R"re(\{.*\b)re" + label + R"re(="([^"]*)".*\} .*$)re");
  for (const auto& text : expositions) {
    std::istringstream lines(text);
    std::string l;
    while (std::getline(lines, l)) {
      std::smatch m;
      if (std::regex_match(l, m, line) &&
          std::find(values.begin(), values.end(), m[1].str()) == values.end()) {
        values.push_back(m[1].str());
      }
    }
  }
  if (values.empty()) return "-";
  std::string joined;
  for (const auto& value : values) joined += (joined.empty() ? "" : ",") + value;
  return joined;
}

struct Outcome {
  json bench;
  json metrics;
  int bench_exit = -1;
  int service_exit = -1;
};

Outcome run_variant(const Variant& v, const Tools& tools, const std::string& bench_args,
                    const fs::path& out_dir) {
  Outcome outcome;
  std::printf("== %s: starting %s\n", v.name.c_str(), v.config_path.c_str());
  std::fflush(stdout);
  podserve::Deployment deployment(v.name, v.config_path, v.config.router.listen, out_dir.string(),
                                  tools.deployment);
  deployment.start();
  const auto bench_json = (out_dir / (v.name + "-bench.json")).string();
  const std::string command =
      fmt::format("{} --url {} --wait-ready-s {} --json-out {} {}", tools.bench, deployment.url(),
                  tools.ready_timeout_s, bench_json, bench_args);
  outcome.bench_exit = std::system(command.c_str());
  outcome.bench = json::parse(podserve::read_text_file(bench_json), nullptr, false);

  const std::vector<std::string> expositions = deployment.scrape();
  for (const char* metric :
       {"podserve_requests_total", "podserve_generation_tokens_total",
        "podserve_prompt_tokens_total", "podserve_preemptions_total",
        "podserve_kv_transfer_bytes_total", "podserve_kv_transfer_runs_total",
        "podserve_kv_transfer_failures_total", "podserve_kv_transfer_fallbacks_total",
        "podserve_iteration_seconds_count", "podserve_iteration_seconds_sum"}) {
    outcome.metrics[metric] = sum_metric(expositions, metric);
  }
  outcome.metrics["ranks_scraped"] = expositions.size();
  outcome.metrics["kv_transport"] =
      label_values(expositions, "podserve_kv_transport_info", "transport");

  outcome.service_exit = deployment.stop();
  std::printf("== %s: bench exit %d, service exit %d\n", v.name.c_str(), outcome.bench_exit,
              outcome.service_exit);
  return outcome;
}

double field(const json& j, std::initializer_list<const char*> path) {
  const json* node = &j;
  for (const char* key : path) {
    if (!node->is_object() || !node->contains(key)) return std::nan("");
    node = &(*node)[key];
  }
  return node->is_number() ? node->get<double>() : std::nan("");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"podserve-ab: run the same workload against two or more deployments and compare"};
  std::vector<std::string> configs;
  std::string out_dir = "ab-results", bench_args;
  Tools tools;
  const fs::path self_dir = fs::canonical("/proc/self/exe").parent_path();
  tools.deployment.podserve = (self_dir / "podserve").string();
  tools.bench = (self_dir / "podserve-bench").string();
  tools.deployment.mpirun_script = "deploy/mpirun.sh";
  app.add_option("configs", configs, "the deployment configs A, B, ... (2 to 26)")
      ->required()
      ->expected(2, 26)
      ->option_text("CONFIG x 2..26 REQUIRED");
  app.add_option("--bench-args", bench_args, "arguments for podserve-bench (workload)")
      ->capture_default_str();
  app.add_option("--out-dir", out_dir, "logs, bench JSON and the report")->capture_default_str();
  app.add_option("--podserve", tools.deployment.podserve)->capture_default_str();
  app.add_option("--bench", tools.bench)->capture_default_str();
  app.add_option("--mpirun-script", tools.deployment.mpirun_script)->capture_default_str();
  app.add_option("--ready-timeout-s", tools.ready_timeout_s,
                 "how long each deployment may take to become ready (weights load first)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::vector<Variant> variants;
  for (const auto& path : configs) {
    Variant v;
    v.config_path = path;
    v.name = fs::path(path).stem().string();
    try {
      v.config = podserve::load_config(path);
    } catch (const podserve::ConfigError& e) {
      std::fprintf(stderr, "podserve-ab: %s: %s\n", path.c_str(), e.what());
      return 2;
    }
    variants.push_back(std::move(v));
  }
  // Variants named alike (configs of one name in different folders) get their letter appended.
  std::map<std::string, int> name_count;
  for (const auto& v : variants) ++name_count[v.name];
  for (std::size_t k = 0; k < variants.size(); ++k) {
    if (name_count[variants[k].name] > 1) {
      variants[k].name += std::string("-") + static_cast<char>('a' + k);
    }
  }
  fs::create_directories(out_dir);

  json report = {{"bench_args", bench_args}, {"variants", json::array()}};
  std::vector<Outcome> outcomes;
  for (const auto& v : variants) {
    outcomes.push_back(run_variant(v, tools, bench_args, out_dir));
    report["variants"].push_back(
        {{"name", v.name},
         {"config", v.config_path},
         {"mode", std::string(podserve::to_string(v.config.scheduler.mode))},
         {"bench", outcomes.back().bench},
         {"metrics", outcomes.back().metrics},
         {"bench_exit", outcomes.back().bench_exit},
         {"service_exit", outcomes.back().service_exit}});
  }

  // The table: one column per variant, then each later variant's ratio to the first.
  const std::size_t n = variants.size();
  std::printf("\n%-34s", "A/B comparison");
  for (const auto& v : variants) std::printf(" %18s", v.name.c_str());
  for (std::size_t k = 1; k < n; ++k)
    std::printf(" %9s", fmt::format("{}/A", char('A' + k)).c_str());
  std::printf("\n");
  const auto row = [&](const std::string& label, const std::vector<double>& values, double scale) {
    std::printf("%-34s", label.c_str());
    for (const double value : values) std::printf(" %18.2f", value * scale);
    for (std::size_t k = 1; k < n; ++k) {
      if (values[0] == 0.0) {
        std::printf(" %9s", "-");
      } else {
        std::printf(" %9.3f", values[k] / values[0]);
      }
    }
    std::printf("\n");
  };
  const auto bench_row = [&](const std::string& label, std::initializer_list<const char*> path,
                             double scale) {
    std::vector<double> values;
    for (const auto& o : outcomes) values.push_back(field(o.bench, path));
    row(label, values, scale);
  };
  bench_row("request throughput (req/s)", {"request_throughput"}, 1);
  bench_row("output throughput (tok/s)", {"output_token_throughput"}, 1);
  bench_row("goodput (%)", {"goodput"}, 100);
  for (const char* metric : {"ttft_s", "itl_s", "e2e_s"}) {
    for (const char* q : {"p50", "p90", "p99"}) {
      const auto label = fmt::format(
          "{} {} (ms)", std::string(metric).substr(0, std::string(metric).size() - 2), q);
      bench_row(label, {metric, q}, 1e3);
    }
  }
  for (const char* metric :
       {"podserve_kv_transfer_bytes_total", "podserve_kv_transfer_runs_total",
        "podserve_preemptions_total", "podserve_kv_transfer_fallbacks_total"}) {
    std::vector<double> values;
    for (const auto& o : outcomes) values.push_back(o.metrics[metric].get<double>());
    row(metric, values, 1);
  }
  std::printf("%-34s", "kv transport");
  for (const auto& o : outcomes) {
    std::printf(" %18s", o.metrics["kv_transport"].get<std::string>().c_str());
  }
  std::printf("\n");
  const auto report_path = (fs::path(out_dir) / "ab-report.json").string();
  std::ofstream(report_path) << report.dump(2) << "\n";
  std::printf("report: %s\n", report_path.c_str());
  bool ok = true;
  for (const auto& o : outcomes) ok = ok && o.bench_exit == 0 && o.service_exit == 0;
  return ok ? 0 : 1;
}
