#include "tools/capacity_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace podserve {
namespace {

using nlohmann::json;

// node[key], or an empty object when node has no such key (const json's operator[] must not be
// asked for a missing key).
const json& child(const json& node, const char* key) {
  static const json kEmpty = json::object();
  return node.is_object() && node.contains(key) ? node[key] : kEmpty;
}

double number(const json& node, const char* key) {
  return node.contains(key) && node[key].is_number() ? node[key].get<double>() : 0.0;
}

std::string slo_phrase(const json& slo) {
  std::vector<std::string> bounds;
  if (number(slo, "ttft_s") > 0)
    bounds.push_back("TTFT <= " + format_ms(number(slo, "ttft_s")) + " ms");
  if (number(slo, "tpot_s") > 0)
    bounds.push_back("TPOT <= " + format_ms(number(slo, "tpot_s")) + " ms");
  if (number(slo, "e2e_s") > 0)
    bounds.push_back("E2E <= " + format_ms(number(slo, "e2e_s")) + " ms");
  std::string phrase = bounds.empty() ? "no latency bound" : bounds[0];
  for (std::size_t i = 1; i < bounds.size(); ++i) phrase += ", " + bounds[i];
  return fmt::format("{} for {:g}% of requests", phrase, number(slo, "target") * 100.0);
}

std::string unit_of(const json& variant) { return variant.value("gpu_unit", std::string("GPU")); }

}  // namespace

std::string format_rate(double requests_per_s) { return fmt::format("{:.3f}", requests_per_s); }
std::string format_ms(double seconds) { return fmt::format("{:.1f}", seconds * 1e3); }
std::string format_fraction(double fraction) { return fmt::format("{:.3f}", fraction); }

const std::vector<std::string>& capacity_plot_files() {
  static const std::vector<std::string> kFiles = {
      "goodput_per_gpu.png", "ttft_p90.png", "tpot_p90.png", "attainment.png", "latency_cdf.png"};
  return kFiles;
}

std::string capacity_verdict(const json& report) {
  const json& variants = report.at("variants");
  const std::string slo = slo_phrase(report.at("slo"));
  if (variants.empty()) return "No variant was measured.";
  std::vector<const json*> ranked;
  for (const json& v : variants) ranked.push_back(&v);
  std::stable_sort(ranked.begin(), ranked.end(), [](const json* a, const json* b) {
    return number(child(*a, "goodput_per_gpu"), "mean") >
           number(child(*b, "goodput_per_gpu"), "mean");
  });
  const json& best = *ranked[0];
  const double best_mean = number(child(best, "goodput_per_gpu"), "mean");
  const std::string unit = unit_of(best);
  if (best_mean <= 0.0) {
    return fmt::format("No variant holds {} at the lowest rate probed.", slo);
  }
  const std::string at_max =
      best.value("outcome", "") == "at_max_rate"
          ? fmt::format(" ({}'s capacity is at least the highest rate probed: raise --max-rate)",
                        best.value("name", ""))
          : "";
  if (ranked.size() == 1) {
    return fmt::format("{} sustains {} req/s per {} at {}{}.", best.value("name", ""),
                       format_rate(best_mean), unit, slo, at_max);
  }
  const json& second = *ranked[1];
  const double second_mean = number(child(second, "goodput_per_gpu"), "mean");
  if (second_mean <= 0.0) {
    return fmt::format("{} sustains {} req/s per {} at {}; {} holds it at no rate probed{}.",
                       best.value("name", ""), format_rate(best_mean), unit, slo,
                       second.value("name", ""), at_max);
  }
  const bool overlap = number(child(best, "goodput_per_gpu"), "min") <=
                       number(child(second, "goodput_per_gpu"), "max");
  const bool spread = child(best, "reruns").size() >= 2 && child(second, "reruns").size() >= 2;
  return fmt::format("{} sustains {:.2f}x {}'s goodput per {} ({} vs {} req/s per {}) at {}; {}{}.",
                     best.value("name", ""), best_mean / second_mean, second.value("name", ""),
                     unit, format_rate(best_mean), format_rate(second_mean), unit, slo,
                     !spread   ? "fewer than two repeats each: no spread to compare"
                     : overlap ? "min-max ranges overlap: not a clear win"
                               : "min-max ranges do not overlap",
                     at_max);
}

std::string capacity_markdown(const json& report) {
  std::string md = "# Capacity report\n\n";
  md += "**Verdict:** " + report.value("verdict", capacity_verdict(report)) + "\n\n";
  const json& search = report.at("search");
  const json& workload = report.at("workload");
  md += fmt::format(
      "SLO: {}. Attainment is the fraction of a probe's requests that succeed within every "
      "bound. Search: first probe at {} req/s, bracketing by {:g}x, then bisection until the "
      "bracket is within {:g}%; the capacity (the bracket's lower end) re-run {} times with other "
      "arrival seeds. Goodput = offered rate x attainment; per {} = / the variant's {}s.\n\n",
      slo_phrase(report.at("slo")), format_rate(number(search, "start_rate")),
      number(search, "growth"), number(search, "tolerance") * 100.0, search.value("repeats", 0),
      child(report, "variants").empty() ? "GPU" : unit_of(child(report, "variants")[0]),
      child(report, "variants").empty() ? "GPU" : unit_of(child(report, "variants")[0]));
  md += fmt::format("Workload: {}, {} requests per probe, {} arrivals{}.\n\n",
                    workload.value("source", ""), workload.value("num_requests", 0),
                    workload.value("arrivals", ""),
                    workload.value("arrivals", "") == "gamma"
                        ? fmt::format(" (burstiness {:g})", number(workload, "burstiness"))
                        : "");

  md += "## Capacity and goodput per GPU\n\n";
  md +=
      "| variant | mode | GPUs | capacity (req/s) | bracket (req/s) | search | probes | "
      "goodput mean (req/s) | goodput per GPU mean | min | max | attainment mean |\n";
  md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const json& v : child(report, "variants")) {
    const json& per_gpu = child(v, "goodput_per_gpu");
    double attainment = 0.0;
    for (const json& rerun : child(v, "reruns")) attainment += number(rerun, "attainment");
    if (!child(v, "reruns").empty()) attainment /= static_cast<double>(child(v, "reruns").size());
    md += fmt::format("| {} | {} | {} {}s | {} | {} – {} | {} | {} | {} | {} | {} | {} | {} |\n",
                      v.value("name", ""), v.value("mode", ""), v.value("gpus", 0), unit_of(v),
                      format_rate(number(v, "capacity")), format_rate(number(v, "lower")),
                      std::isfinite(number(v, "upper")) && number(v, "upper") > 0
                          ? format_rate(number(v, "upper"))
                          : std::string("-"),
                      v.value("outcome", ""), child(v, "probes").size(),
                      format_rate(number(child(v, "goodput"), "mean")),
                      format_rate(number(per_gpu, "mean")), format_rate(number(per_gpu, "min")),
                      format_rate(number(per_gpu, "max")), format_fraction(attainment));
  }
  md += "\n![goodput per GPU](goodput_per_gpu.png)\n\n";

  md += "## Client- and server-measured TTFT at capacity\n\n";
  md +=
      "Client: podserve-bench's clock, send to the first streamed chunk. Server: the router's "
      "`podserve_time_to_first_token_seconds`, HTTP handler start to the first token handed "
      "to the connection; its median is interpolated inside a histogram bucket, its mean is "
      "exact (sum / count).\n\n";
  md +=
      "| variant | requests | client median (ms) | server median (ms) | server bucket (ms) | "
      "client mean (ms) | server mean (ms) | agree within 5% | why |\n";
  md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const json& v : child(report, "variants")) {
    const json& check = child(v, "ttft_check");
    md += fmt::format("| {} | {} | {} | {} | {} – {} | {} | {} | {} | {} |\n", v.value("name", ""),
                      check.value("requests", 0), format_ms(number(check, "client_median_s")),
                      format_ms(number(check, "server_median_s")),
                      format_ms(number(check, "server_bucket_lower_s")),
                      std::isfinite(number(check, "server_bucket_upper_s"))
                          ? format_ms(number(check, "server_bucket_upper_s"))
                          : std::string("inf"),
                      format_ms(number(check, "client_mean_s")),
                      format_ms(number(check, "server_mean_s")),
                      check.value("agree", false) ? "yes" : "no", check.value("note", ""));
  }

  md += "\n## Where the time goes at capacity (server, per request, means)\n\n";
  md +=
      "Queue: arrival to first scheduled; prefill: first scheduled to first token (all "
      "chunks); KV-transfer wait (disaggregated): the decode instance waiting for the KV "
      "after the prefill finished; decode: first token to last.\n\n";
  md +=
      "| variant | queue (ms) | prefill (ms) | KV-transfer wait (ms) | decode (ms) | "
      "prompt tokens | generated tokens |\n";
  md += "| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const json& v : child(report, "variants")) {
    const json& phases = child(v, "phases");
    md +=
        fmt::format("| {} | {} | {} | {} | {} | {:.1f} | {:.1f} |\n", v.value("name", ""),
                    format_ms(number(phases, "queue_s")), format_ms(number(phases, "prefill_s")),
                    v.value("mode", "") == "disaggregated" ? format_ms(number(phases, "kv_wait_s"))
                                                           : std::string("-"),
                    format_ms(number(phases, "decode_s")), number(phases, "prompt_tokens"),
                    number(phases, "generation_tokens"));
  }

  md += "\n## Latency against offered rate\n\n";
  md +=
      "![TTFT p90](ttft_p90.png) ![TPOT p90](tpot_p90.png)\n\n"
      "![attainment](attainment.png) ![latency CDFs at capacity](latency_cdf.png)\n\n";
  md += "## Probes\n";
  for (const json& v : child(report, "variants")) {
    md += fmt::format("\n### {}\n\n", v.value("name", ""));
    md +=
        "| kind | rate (req/s) | attainment | held | TTFT p50 (ms) | TTFT p90 (ms) | "
        "TPOT p90 (ms) | E2E p90 (ms) | errors |\n";
    md += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for (const char* kind : {"probes", "reruns"}) {
      for (const json& p : v[kind]) {
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                          std::string(kind) == "probes" ? "search" : "repeat",
                          format_rate(number(p, "rate")), format_fraction(number(p, "attainment")),
                          p.value("attained", false) ? "yes" : "no",
                          format_ms(number(child(p, "ttft_s"), "p50")),
                          format_ms(number(child(p, "ttft_s"), "p90")),
                          format_ms(number(child(p, "tpot_s"), "p90")),
                          format_ms(number(child(p, "e2e_s"), "p90")), p.value("errors", 0));
      }
    }
  }
  return md;
}

}  // namespace podserve
