// The report of podserve-capacity, made from its JSON (capacity-report.json, written first) so
// that the Markdown and the plots can only show what the JSON holds. Pure functions.
//
// The JSON (every latency in seconds, every rate in requests/s):
//   slo {ttft_s, tpot_s, e2e_s (0: no bound), target}, search {...}, workload {...},
//   variants [{name, config, mode, gpus, gpu_unit ("GPU" | "rank"), capacity, lower, upper,
//              outcome, probes [PROBE], reruns [PROBE], goodput {mean, min, max},
//              goodput_per_gpu {mean, min, max}, ttft_check {...}, phases {...}}],
//   verdict
// where PROBE is {rate, arrival_seed, attainment, attained, completed, errors, duration_s,
// ttft_s / tpot_s / e2e_s {mean, p50, p90, p99, max}, server {...}, requests [[ok, ttft_s,
// tpot_s, e2e_s], ...]}.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace podserve {

// One line: the variant with the highest mean goodput per GPU against the runner-up ("B
// sustains 1.31x A's goodput per GPU (...) at TTFT <= 2000 ms, TPOT <= 100 ms for 90% of
// requests; min-max ranges do not overlap"), or what the search could not decide.
std::string capacity_verdict(const nlohmann::json& report);

// The Markdown report: the verdict at the top, the SLO and method, the capacity and goodput
// table, client- against server-measured TTFT, the server's phase breakdown, every probe, and
// the plots (PNG files beside it, named as capacity_plot_files lists).
std::string capacity_markdown(const nlohmann::json& report);

// The plot files the Markdown links (tools/capacity_plots.py writes them).
const std::vector<std::string>& capacity_plot_files();

// The number formats of the Markdown tables, shared with the tests that check the Markdown
// against the JSON: rates and goodputs, latencies in ms, fractions.
std::string format_rate(double requests_per_s);  // "%.3f"
std::string format_ms(double seconds);           // "%.1f" of seconds * 1e3
std::string format_fraction(double fraction);    // "%.3f"

}  // namespace podserve
