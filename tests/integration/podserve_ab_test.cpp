// podserve-ab end to end: three real deployments of the tiny model on the CPU backend (colocated,
// disaggregated, disaggregated with layer-wise shipping) serve the same short trace replay one
// after the other; the tool must exit 0, print one column per variant with each later variant's
// ratio to the first, and write a report in which every variant served every request, the
// disaggregated ones shipped KV over UCX, and the colocated one shipped none.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/integration/service_process.h"

namespace podserve::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kRequests = 12;

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(PodserveAb, ThreeVariantsSideBySideWithRatiosToTheFirst) {
  std::string pattern = (fs::temp_directory_path() / "podserve-ab-XXXXXX").string();
  const std::string dir = mkdtemp(pattern.data());
  const int http_port = find_free_port_range(1);
  const int metrics_port_base = find_free_port_range(8);
  ASSERT_GT(http_port, 0);
  ASSERT_GT(metrics_port_base, 0);
  const std::string common = fmt::format(
      "model: {{preset: tiny, weights: random, seed: 3}}\nbackend: cpu\n"
      "kv_cache: {{page_size: 16, cpu_memory_mb: 16}}\n"
      "router: {{listen: 127.0.0.1:{}, max_queue: 256}}\n"
      "metrics: {{port_base: {}, sd_file: {}/sd.json}}\n",
      http_port, metrics_port_base, dir);
  const std::string disaggregated =
      "instances: [{role: prefill, tp: 1, count: 1}, {role: decode, tp: 1, count: 1}]\n"
      "scheduler: {mode: disaggregated, token_budget: 64, max_running: 32}\n";
  const std::vector<std::pair<std::string, std::string>> variants = {
      {"colocated",
       "instances: [{role: colocated, tp: 1, count: 1}]\n"
       "scheduler: {mode: colocated, token_budget: 64, max_running: 32}\n"},
      {"disaggregated", disaggregated},
      {"layerwise", disaggregated + "kv_transfer: {layerwise: true}\n"}};
  std::string configs;
  for (const auto& [name, body] : variants) {
    const std::string path = dir + "/" + name + ".yaml";
    std::ofstream(path) << common << body;
    configs += " " + path;
  }
  const std::string out_dir = dir + "/out";
  const std::string command = fmt::format(
      "UCX_TLS=sm,self {} {} --podserve {} --bench {} --mpirun-script {} --out-dir {} "
      "--bench-args \"--trace {}/tools/data/azure-llm-2023-code.csv --num-requests {} --rate 20 "
      "--prompt-scale 0.02 --max-prompt 64 --max-output 8\" > {}/ab.log 2>&1",
      PODSERVE_AB_PATH, configs, PODSERVE_BIN_PATH, PODSERVE_BENCH_PATH, PODSERVE_MPIRUN_SCRIPT,
      out_dir, PODSERVE_SOURCE_DIR, kRequests, dir);
  const int status = std::system(command.c_str());
  const std::string log = read_all(dir + "/ab.log");
  ASSERT_EQ(status, 0) << log;

  EXPECT_NE(log.find("A/B comparison"), std::string::npos) << log;
  EXPECT_NE(log.find("B/A"), std::string::npos) << log;
  EXPECT_NE(log.find("C/A"), std::string::npos) << log;
  const json report = json::parse(read_all(out_dir + "/ab-report.json"));
  ASSERT_EQ(report.at("variants").size(), 3u);
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const json& variant = report["variants"][i];
    SCOPED_TRACE(variants[i].first);
    EXPECT_EQ(variant.at("name"), variants[i].first);
    EXPECT_EQ(variant.at("bench_exit"), 0);
    EXPECT_EQ(variant.at("service_exit"), 0);
    EXPECT_EQ(variant.at("bench").at("completed"), kRequests);
    EXPECT_EQ(variant.at("bench").at("errors"), 0);
    const json& metrics = variant.at("metrics");
    EXPECT_EQ(metrics.at("podserve_requests_total").get<double>(), kRequests);
    if (i == 0) {
      EXPECT_EQ(metrics.at("kv_transport"), "-");
      EXPECT_EQ(metrics.at("podserve_kv_transfer_bytes_total").get<double>(), 0.0);
    } else {
      EXPECT_EQ(metrics.at("kv_transport"), "ucx");
      EXPECT_GT(metrics.at("podserve_kv_transfer_bytes_total").get<double>(), 0.0);
      EXPECT_EQ(metrics.at("podserve_kv_transfer_fallbacks_total").get<double>(), 0.0);
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace podserve::testing
