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
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "tools/scrape_targets.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct Variant {
  std::string name;
  std::string config_path;
  podserve::ServiceConfig config;
};

struct Tools {
  std::string podserve;
  std::string bench;
  std::string mpirun_script;
  double ready_timeout_s = 600;  // a GPU deployment loads its weights before it is ready
};

pid_t spawn(const std::string& command, const std::string& log_path) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    std::freopen(log_path.c_str(), "w", stdout);
    std::freopen(log_path.c_str(), "a", stderr);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Exit code of `pid`, or -1 after `timeout_s`.
int wait_for(pid_t pid, int timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Calls on_match(match) for every line of the exposition texts that `line` matches whole.
template <typename OnMatch>
void for_each_matching_line(const std::vector<std::string>& expositions, const std::regex& line,
                            OnMatch&& on_match) {
  for (const auto& text : expositions) {
    std::istringstream lines(text);
    std::string l;
    while (std::getline(lines, l)) {
      std::smatch m;
      if (std::regex_match(l, m, line)) on_match(m);
    }
  }
}

// Sums every sample of `metric` (all label sets) over the exposition texts.
double sum_metric(const std::vector<std::string>& expositions, const std::string& metric) {
  double total = 0.0;
  for_each_matching_line(expositions,
                         std::regex("^" + metric + R"((\{[^}]*\})? ([-+0-9.eEinfNa]+)$)"),
                         [&](const std::smatch& m) { total += std::stod(m[2]); });
  return total;
}

// The distinct values of `label` on the samples of `metric`, joined with "," in first-seen order;
// "-" when no rank exports it (podserve_kv_transport_info in colocated mode).
std::string label_values(const std::vector<std::string>& expositions, const std::string& metric,
                         const std::string& label) {
  std::vector<std::string> values;
  for_each_matching_line(
      expositions, std::regex("^" + metric + R"re(\{.*\b)re" + label + R"re(="([^"]*)".*\} .*$)re"),
      [&](const std::smatch& m) {
        if (std::find(values.begin(), values.end(), m[1].str()) == values.end()) {
          values.push_back(m[1].str());
        }
      });
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
  const auto pid_file = (out_dir / (v.name + ".pid")).string();
  const auto sd_file = (out_dir / (v.name + "-sd.json")).string();
  fs::remove(pid_file);
  fs::remove(sd_file);
  std::printf("== %s: starting %s\n", v.name.c_str(), v.config_path.c_str());
  std::fflush(stdout);
  const pid_t service =
      spawn(fmt::format("PODSERVE_BIN={} {} {} --pid-file {} --sd-file {}", tools.podserve,
                        tools.mpirun_script, v.config_path, pid_file, sd_file),
            (out_dir / (v.name + "-service.log")).string());
  const auto bench_json = (out_dir / (v.name + "-bench.json")).string();
  const std::string command =
      fmt::format("{} --url http://{} --wait-ready-s {} --json-out {} {}", tools.bench,
                  v.config.router.listen, tools.ready_timeout_s, bench_json, bench_args);
  outcome.bench_exit = std::system(command.c_str());
  outcome.bench = json::parse(read_file(bench_json), nullptr, false);

  std::vector<std::string> expositions;
  auto targets = podserve::parse_scrape_targets(read_file(sd_file));
  if (!targets.ok()) {
    std::fprintf(stderr, "podserve-ab: %s: %s\n", sd_file.c_str(),
                 targets.status().message().c_str());
  }
  std::vector<std::string> scraped;  // "host:port"
  for (const auto& target : targets.ok() ? *targets : std::vector<podserve::ScrapeTarget>{}) {
    const std::string endpoint = fmt::format("{}:{}", target.host, target.port);
    if (std::find(scraped.begin(), scraped.end(), endpoint) != scraped.end()) {
      // Ranks of several hosts with metrics.bind on loopback: only this host's can be reached.
      std::fprintf(stderr,
                   "podserve-ab: rank %d lists %s again; scraping it once (multi-node "
                   "deployments need metrics.bind: 0.0.0.0)\n",
                   target.rank, endpoint.c_str());
      continue;
    }
    scraped.push_back(endpoint);
    httplib::Client client(target.host, target.port);
    if (auto res = client.Get("/metrics"); res && res->status == 200)
      expositions.push_back(res->body);
  }
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

  const auto pid_text = read_file(pid_file);
  if (!pid_text.empty())
    kill(std::stoi(pid_text), SIGTERM);
  else
    kill(-service, SIGTERM);
  outcome.service_exit = wait_for(service, 90);
  if (outcome.service_exit == -1) {
    kill(-service, SIGKILL);
    wait_for(service, 10);
  }
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
  tools.podserve = (self_dir / "podserve").string();
  tools.bench = (self_dir / "podserve-bench").string();
  tools.mpirun_script = "deploy/mpirun.sh";
  app.add_option("configs", configs, "the deployment configs A, B, ... (2 to 26)")
      ->required()
      ->expected(2, 26)
      ->option_text("CONFIG x 2..26 REQUIRED");
  app.add_option("--bench-args", bench_args, "arguments for podserve-bench (workload)")
      ->capture_default_str();
  app.add_option("--out-dir", out_dir, "logs, bench JSON and the report")->capture_default_str();
  app.add_option("--podserve", tools.podserve)->capture_default_str();
  app.add_option("--bench", tools.bench)->capture_default_str();
  app.add_option("--mpirun-script", tools.mpirun_script)->capture_default_str();
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
