// podserve-capacity's report and P:D sweep: the verdict line for each case the search can end
// in, the Markdown's numbers against the JSON they come from, and the variants made from one
// config and a list of ratios (loaded back with the service's own config loader).
#include "tools/capacity_report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "tools/pd_sweep.h"

namespace podserve {
namespace {

using nlohmann::json;

json variant(const std::string& name, double mean, double min, double max, int gpus = 2) {
  return {{"name", name},
          {"mode", "colocated"},
          {"gpus", gpus},
          {"gpu_unit", "GPU"},
          {"capacity", mean * gpus},
          {"lower", mean * gpus},
          {"upper", mean * gpus * 1.04},
          {"outcome", "converged"},
          {"probes", json::array({{{"rate", 1.0},
                                   {"attainment", 1.0},
                                   {"attained", true},
                                   {"errors", 0},
                                   {"ttft_s", {{"p50", 0.1}, {"p90", 0.2}}},
                                   {"tpot_s", {{"p50", 0.01}, {"p90", 0.02}}},
                                   {"e2e_s", {{"p50", 0.3}, {"p90", 0.4}}}}})},
          {"reruns", json::array({{{"attainment", 1.0}}, {{"attainment", 0.9}}})},
          {"goodput", {{"mean", mean * gpus}, {"min", min * gpus}, {"max", max * gpus}}},
          {"goodput_per_gpu", {{"mean", mean}, {"min", min}, {"max", max}}},
          {"ttft_check", {{"requests", 10}, {"client_median_s", 0.1234}, {"agree", true}}},
          {"phases", {{"queue_s", 0.001}, {"prefill_s", 0.05}}}};
}

json report(json variants) {
  return {{"slo", {{"ttft_s", 2.0}, {"tpot_s", 0.05}, {"e2e_s", 0.0}, {"target", 0.9}}},
          {"search", {{"start_rate", 1.0}, {"growth", 2.0}, {"tolerance", 0.05}, {"repeats", 3}}},
          {"workload", {{"source", "trace"}, {"num_requests", 10}, {"arrivals", "poisson"}}},
          {"variants", std::move(variants)}};
}

TEST(CapacityReportTest, VerdictNamesTheWinnerItsRatioAndWhetherRangesOverlap) {
  EXPECT_EQ(
      capacity_verdict(report({variant("A", 0.40, 0.38, 0.42), variant("B", 0.524, 0.5, 0.55)})),
      "B sustains 1.31x A's goodput per GPU (0.524 vs 0.400 req/s per GPU) at TTFT <= "
      "2000.0 ms, TPOT <= 50.0 ms for 90% of requests; min-max ranges do not overlap.");
  EXPECT_NE(
      capacity_verdict(report({variant("A", 0.40, 0.30, 0.50), variant("B", 0.45, 0.41, 0.52)}))
          .find("min-max ranges overlap: not a clear win"),
      std::string::npos);
  EXPECT_EQ(capacity_verdict(report({variant("A", 0.0, 0.0, 0.0), variant("B", 0.0, 0.0, 0.0)})),
            "No variant holds TTFT <= 2000.0 ms, TPOT <= 50.0 ms for 90% of requests at the lowest "
            "rate probed.");
  EXPECT_NE(capacity_verdict(report({variant("A", 0.0, 0.0, 0.0), variant("B", 1.0, 1.0, 1.0)}))
                .find("A holds it at no rate probed"),
            std::string::npos);
  json single = variant("A", 0.40, 0.40, 0.40);
  single["reruns"] = json::array({{{"attainment", 1.0}}});
  EXPECT_NE(capacity_verdict(report({single, variant("B", 0.6, 0.6, 0.6)}))
                .find("fewer than two repeats each: no spread to compare"),
            std::string::npos);
  json at_max = variant("A", 1.0, 1.0, 1.0);
  at_max["outcome"] = "at_max_rate";
  EXPECT_NE(capacity_verdict(report({at_max})).find("raise --max-rate"), std::string::npos);
}

TEST(CapacityReportTest, MarkdownShowsTheJsonNumbersAndLinksEveryPlot) {
  json r = report({variant("A", 0.40, 0.38, 0.42), variant("B", 0.524, 0.5, 0.55, 3)});
  r["verdict"] = capacity_verdict(r);
  const std::string md = capacity_markdown(r);
  EXPECT_EQ(md.find("# Capacity report\n\n**Verdict:** " + r["verdict"].get<std::string>()), 0u);
  for (const json& v : r["variants"]) {
    const std::string row =
        "| " + v["name"].get<std::string>() + " | colocated | " +
        std::to_string(v["gpus"].get<int>()) + " GPUs | " + format_rate(v["capacity"]) + " | " +
        format_rate(v["lower"]) + " – " + format_rate(v["upper"]) + " | converged | 1 | " +
        format_rate(v["goodput"]["mean"]) + " | " + format_rate(v["goodput_per_gpu"]["mean"]) +
        " | " + format_rate(v["goodput_per_gpu"]["min"]) + " | " +
        format_rate(v["goodput_per_gpu"]["max"]) + " | 0.950 |";
    EXPECT_NE(md.find(row), std::string::npos) << row << "\n" << md;
  }
  EXPECT_NE(md.find("| 123.4 |"), std::string::npos);  // client median TTFT in ms
  for (const std::string& file : capacity_plot_files()) {
    EXPECT_NE(md.find("(" + file + ")"), std::string::npos) << file;
  }
  EXPECT_EQ(format_rate(1.23456), "1.235");
  EXPECT_EQ(format_ms(0.01234), "12.3");
  EXPECT_EQ(format_fraction(0.9), "0.900");
}

TEST(PdSweepTest, ParsesRatiosAndRejectsBadOnes) {
  auto ratios = parse_pd_ratios("1:1,2:1,1:3");
  ASSERT_TRUE(ratios.ok()) << ratios.status().to_string();
  ASSERT_EQ(ratios->size(), 3u);
  EXPECT_EQ((*ratios)[1].prefill, 2);
  EXPECT_EQ((*ratios)[1].decode, 1);
  EXPECT_EQ((*ratios)[2].decode, 3);
  for (const char* bad : {"", "1", "1:0", "a:1", "1:1,", "1:1:1", "-1:2"}) {
    EXPECT_FALSE(parse_pd_ratios(bad).ok()) << bad;
  }
}

TEST(PdSweepTest, VariantsKeepEveryOtherKeyAndTheGroupsTp) {
  const std::string base =
      "model: {preset: tiny, weights: random, seed: 7}\nbackend: cpu\n"
      "instances:\n  - {role: prefill, tp: 2, count: 1}\n  - {role: decode, tp: 1, count: 1}\n"
      "scheduler: {mode: disaggregated, token_budget: 96}\n"
      "router: {listen: 127.0.0.1:8123}\n";
  for (const PdRatio ratio : {PdRatio{1, 1}, PdRatio{2, 1}, PdRatio{1, 3}}) {
    auto yaml = pd_variant_yaml(base, ratio);
    ASSERT_TRUE(yaml.ok()) << yaml.status().to_string();
    const ServiceConfig config = parse_config(*yaml);
    ASSERT_EQ(config.instances.size(), 2u) << *yaml;
    EXPECT_EQ(config.instances[0].role, InstanceRole::kPrefill);
    EXPECT_EQ(config.instances[0].tp, 2);
    EXPECT_EQ(config.instances[0].count, ratio.prefill);
    EXPECT_EQ(config.instances[1].role, InstanceRole::kDecode);
    EXPECT_EQ(config.instances[1].tp, 1);
    EXPECT_EQ(config.instances[1].count, ratio.decode);
    EXPECT_EQ(config.scheduler.mode, SchedulerMode::kDisaggregated);
    EXPECT_EQ(config.scheduler.token_budget, 96);
    EXPECT_EQ(config.model.seed, 7u);
    EXPECT_EQ(config.router.listen, "127.0.0.1:8123");
    EXPECT_EQ(config.world_size(), 1 + 2 * ratio.prefill + ratio.decode);
  }
  EXPECT_FALSE(pd_variant_yaml("[1, 2]", {1, 1}).ok());
  EXPECT_FALSE(pd_variant_yaml("a: [", {1, 1}).ok());
}

}  // namespace
}  // namespace podserve
