// podserve-capacity end to end: a capacity search over two real deployments of the tiny model
// on the CPU backend (colocated, and disaggregated with UCX), with loose SLOs. The tool must exit
// 0 and its report must hold: for each variant, probes that bracket the capacity (the search's
// rates grow or shrink by the growth factor until the verdict flips, the capacity held and the
// bracket's upper end did not) and converge (upper <= lower * (1 + tolerance)), the repeats at
// the capacity, the server's per-request phases from /metrics; the Markdown's numbers equal to
// the JSON's; and every PNG a valid image of the expected size whose title and axis labels
// (text chunks the plot script writes) name what it plots.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tests/integration/service_process.h"

namespace podserve::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr double kGrowth = 2.0;
constexpr double kTolerance = 0.25;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Png {
  bool valid = false;
  std::uint32_t width = 0;
  std::uint32_t height = 0;
  std::map<std::string, std::string> text;  // tEXt chunks
};

// Reads a PNG's chunk structure: the signature, IHDR's size, tEXt chunks, IEND last.
Png read_png(const std::string& bytes) {
  Png png;
  static const std::string kSignature = "\x89PNG\r\n\x1a\n";
  if (bytes.compare(0, kSignature.size(), kSignature) != 0) return png;
  std::size_t at = kSignature.size();
  const auto u32 = [&](std::size_t offset) {
    std::uint32_t value = 0;
    std::memcpy(&value, bytes.data() + offset, 4);
    return ntohl(value);
  };
  bool saw_end = false;
  while (at + 12 <= bytes.size()) {
    const std::uint32_t length = u32(at);
    const std::string type = bytes.substr(at + 4, 4);
    if (at + 12 + length > bytes.size()) return png;
    const std::string data = bytes.substr(at + 8, length);
    if (type == "IHDR" && length >= 8) {
      png.width = u32(at + 8);
      png.height = u32(at + 12);
    } else if (type == "tEXt") {
      const std::size_t nul = data.find('\0');
      if (nul != std::string::npos) png.text[data.substr(0, nul)] = data.substr(nul + 1);
    } else if (type == "IEND") {
      saw_end = true;
      break;
    }
    at += 12 + length;
  }
  png.valid = saw_end && png.width > 0 && png.height > 0;
  return png;
}

std::string rate(double value) { return fmt::format("{:.3f}", value); }

TEST(PodserveCapacity, SearchesTwoDeploymentsAndReportsWhatItsJsonHolds) {
  std::string pattern = (fs::temp_directory_path() / "podserve-capacity-XXXXXX").string();
  const std::string dir = mkdtemp(pattern.data());
  const int http_port = find_free_port_range(1);
  const int metrics_port_base = find_free_port_range(8);
  ASSERT_GT(http_port, 0);
  ASSERT_GT(metrics_port_base, 0);
  const std::string common = fmt::format(
      "model: {{preset: tiny, weights: random, seed: 3}}\nbackend: cpu\n"
      "kv_cache: {{page_size: 16, cpu_memory_mb: 16}}\n"
      "router: {{listen: 127.0.0.1:{}, max_queue: 512}}\n"
      "metrics: {{port_base: {}}}\n",
      http_port, metrics_port_base);
  const std::vector<std::pair<std::string, std::string>> variants = {
      {"colocated",
       "instances: [{role: colocated, tp: 1, count: 1}]\n"
       "scheduler: {mode: colocated, token_budget: 256, max_running: 64}\n"},
      {"disaggregated",
       "instances: [{role: prefill, tp: 1, count: 1}, {role: decode, tp: 1, count: 1}]\n"
       "scheduler: {mode: disaggregated, token_budget: 256, max_running: 64}\n"}};
  std::string configs;
  for (const auto& [name, body] : variants) {
    const std::string path = dir + "/" + name + ".yaml";
    std::ofstream(path) << common << body;
    configs += " " + path;
  }
  const std::string out_dir = dir + "/out";
  const std::string command = fmt::format(
      "cd {} && UCX_TLS=sm,self {} {} --podserve {} --mpirun-script {} --out-dir {} "
      "--trace tools/data/azure-llm-2023-code.csv --num-requests 16 --prompt-scale 0.1 "
      "--max-prompt 256 --max-output 16 --slo-ttft-ms 300 --slo-tpot-ms 60 --target 0.9 "
      "--start-rate 8 --growth {} --tolerance {} --min-rate 0.5 --max-rate 1024 --repeats 2 > "
      "{}/capacity.log "
      "2>&1",
      PODSERVE_SOURCE_DIR, PODSERVE_CAPACITY_PATH, configs, PODSERVE_BIN_PATH,
      PODSERVE_MPIRUN_SCRIPT, out_dir, kGrowth, kTolerance, dir);
  const int status = std::system(command.c_str());
  const std::string log = read_all(dir + "/capacity.log");
  ASSERT_EQ(status, 0) << log;

  const json report = json::parse(read_all(out_dir + "/capacity-report.json"));
  const std::string md = read_all(out_dir + "/capacity-report.md");
  ASSERT_EQ(report.at("variants").size(), 2u);
  EXPECT_EQ(md.find("# Capacity report\n\n**Verdict:** " + report["verdict"].get<std::string>()),
            0u)
      << md;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const json& v = report["variants"][i];
    SCOPED_TRACE(variants[i].first);
    EXPECT_EQ(v.at("name"), variants[i].first);
    EXPECT_EQ(v.at("service_exit"), 0);
    EXPECT_EQ(v.at("gpu_unit"), "rank");
    EXPECT_EQ(v.at("gpus"), i == 0 ? 2 : 3);  // every rank on the CPU backend
    ASSERT_EQ(v.at("outcome"), "converged") << v.dump(1).substr(0, 4000);

    // Bracketing: rates move by the growth factor until the verdict flips.
    const json& probes = v.at("probes");
    ASSERT_GE(probes.size(), 2u);
    EXPECT_DOUBLE_EQ(probes[0]["rate"].get<double>(), 8.0);
    std::size_t flip = 1;
    while (flip < probes.size() && probes[flip]["attained"] == probes[0]["attained"]) ++flip;
    ASSERT_LT(flip, probes.size());
    const double step = probes[0]["attained"].get<bool>() ? kGrowth : 1.0 / kGrowth;
    for (std::size_t k = 1; k <= flip; ++k) {
      EXPECT_NEAR(probes[k]["rate"].get<double>() / probes[k - 1]["rate"].get<double>(), step,
                  1e-9);
    }
    // Convergence: the capacity held, the bracket's upper end did not, within the tolerance.
    const double lower = v["lower"], upper = v["upper"];
    EXPECT_DOUBLE_EQ(v["capacity"].get<double>(), lower);
    EXPECT_LE(upper, lower * (1 + kTolerance));
    bool lower_held = false, upper_failed = false;
    for (const json& p : probes) {
      EXPECT_EQ(p["attained"].get<bool>(), p["attainment"].get<double>() >= 0.9);
      EXPECT_EQ(p["completed"].get<int>() + p["errors"].get<int>(), 16);
      if (p["rate"] == lower) lower_held = p["attained"];
      if (p["rate"] == upper) upper_failed = !p["attained"].get<bool>();
    }
    EXPECT_TRUE(lower_held);
    EXPECT_TRUE(upper_failed);

    // The repeats at capacity, their goodput, the server's view of them.
    ASSERT_EQ(v["reruns"].size(), 2u);
    double min = 1e300, max = 0, sum = 0;
    for (const json& rerun : v["reruns"]) {
      EXPECT_DOUBLE_EQ(rerun["rate"].get<double>(), lower);
      const double goodput = lower * rerun["attainment"].get<double>();
      min = std::min(min, goodput);
      max = std::max(max, goodput);
      sum += goodput;
      EXPECT_EQ(rerun["requests"].size(), 16u);
      // The server saw this repeat's requests and no other probe's.
      const double completed = rerun["completed"].get<double>();
      const json& server = rerun["server"];
      EXPECT_EQ(server["prompt_tokens"]["count"].get<double>(), 16.0);
      for (const char* phase :
           {"ttft_s", "queue_s", "prefill_s", "decode_s", "generation_tokens"}) {
        EXPECT_EQ(server[phase]["count"].get<double>(), completed) << phase;
      }
      if (i == 0) {
        EXPECT_EQ(server["kv_wait_s"]["count"].get<double>(), 0.0);
      } else {
        EXPECT_GT(server["kv_wait_s"]["count"].get<double>(), 0.0);
      }
    }
    EXPECT_NEAR(v["goodput"]["mean"].get<double>(), sum / 2, 1e-9);
    EXPECT_NEAR(v["goodput_per_gpu"]["min"].get<double>(), min / v["gpus"].get<int>(), 1e-9);
    EXPECT_NEAR(v["goodput_per_gpu"]["max"].get<double>(), max / v["gpus"].get<int>(), 1e-9);
    EXPECT_GT(v["phases"]["prefill_s"].get<double>(), 0.0);
    EXPECT_GT(v["phases"]["decode_s"].get<double>(), 0.0);
    EXPECT_EQ(v["ttft_check"]["requests"].get<int>() > 0, true);

    // The Markdown's row of this variant: the JSON's numbers, formatted.
    const json& per_gpu = v["goodput_per_gpu"];
    const std::string row =
        fmt::format("| {} | {} | {} ranks | {} | {} – {} | converged | {} | {} | {} | {} | {} |",
                    variants[i].first, variants[i].first, v["gpus"].get<int>(), rate(v["capacity"]),
                    rate(lower), rate(upper), probes.size(), rate(v["goodput"]["mean"]),
                    rate(per_gpu["mean"]), rate(per_gpu["min"]), rate(per_gpu["max"]));
    EXPECT_NE(md.find(row), std::string::npos) << row << "\n" << md;
    for (const json& p : probes) {
      const std::string probe_row = fmt::format(
          "| search | {} | {:.3f} | {} | {:.1f} | {:.1f} |", rate(p["rate"]),
          p["attainment"].get<double>(), p["attained"].get<bool>() ? "yes" : "no",
          p["ttft_s"]["p50"].get<double>() * 1e3, p["ttft_s"]["p90"].get<double>() * 1e3);
      EXPECT_NE(md.find(probe_row), std::string::npos) << probe_row;
    }
  }

  const std::map<std::string, std::pair<std::string, std::string>> plots = {
      {"goodput_per_gpu.png", {"variant", "goodput per rank (req/s)"}},
      {"ttft_p90.png", {"offered rate (req/s)", "TTFT p90 (ms)"}},
      {"tpot_p90.png", {"offered rate (req/s)", "TPOT p90 (ms)"}},
      {"attainment.png", {"offered rate (req/s)", "SLO attainment"}},
      {"latency_cdf.png", {"TTFT (ms)", "fraction of requests"}}};
  for (const auto& [file, labels] : plots) {
    SCOPED_TRACE(file);
    const Png png = read_png(read_all(out_dir + "/" + file));
    ASSERT_TRUE(png.valid);
    EXPECT_EQ(png.width, file == "latency_cdf.png" ? 1000u : 640u);
    EXPECT_EQ(png.height, 420u);
    EXPECT_FALSE(png.text.at("Title").empty());
    EXPECT_EQ(png.text.at("XLabel"), labels.first);
    EXPECT_EQ(png.text.at("YLabel"), labels.second);
    EXPECT_NE(md.find("(" + file + ")"), std::string::npos);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace podserve::testing
