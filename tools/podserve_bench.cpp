// podserve-bench: replays a request trace (or a synthetic workload) against an OpenAI-compatible
// server (a podserve router, or any other: plain OpenAI requests, token counts from the streamed
// usage) over real HTTP and reports client-side latency (TTFT, ITL, TPOT, e2e), throughput,
// errors and SLO goodput. One thread per in-flight request (bounded by --concurrency-limit);
// arrivals follow the trace (time-scaled, or scaled to a rate), a Poisson process or a Gamma
// process (--burstiness). Summary on stdout, progress on stderr, JSON with --json-out.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "tools/bench/capacity_search.h"
#include "tools/bench/client.h"
#include "tools/bench/replay.h"
#include "tools/bench/stats.h"
#include "tools/bench/text_prompts.h"
#include "tools/bench/trace.h"

namespace {

using namespace podserve::bench;
using podserve::TextTokenizer;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Options {
  std::string url = "http://127.0.0.1:8000";
  WorkloadSource workload{.num_requests = 100};
  ArrivalOptions arrivals;
  ScaleOptions scale;
  bool stream = true;
  int concurrency_limit = 256;
  std::int32_t vocab_limit = 256;
  std::string tokenizer;  // a checkpoint directory: text prompts of the trace's token lengths
  std::uint64_t seed = 1;
  std::string json_out;
  std::string model;
  bool token_ids = false;
  bool ignore_eos = true;
  double slo_ttft_ms = 0.0;
  double slo_tpot_ms = 0.0;
  double slo_e2e_ms = 0.0;
  double wait_ready_s = 0.0;
  int timeout_s = 600;
};

class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(STDERR_FILENO) != 0) {}
  void finished_one() {
    std::lock_guard lock(mutex_);
    ++done_;
    if (tty_) {
      const std::size_t width = 40;
      const std::size_t filled = done_ * width / total_;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu", std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), done_, total_);
      if (done_ == total_) std::fprintf(stderr, "\n");
    } else if (done_ * 10 / total_ != (done_ - 1) * 10 / total_) {
      std::fprintf(stderr, "podserve-bench: %zu/%zu requests done\n", done_, total_);
    }
  }

 private:
  std::mutex mutex_;
  const std::size_t total_;
  const bool tty_;
  std::size_t done_ = 0;
};

bool wait_ready(const std::string& url, double wait_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(wait_s);
  httplib::Client client(url);
  client.set_connection_timeout(1);
  do {
    const auto response = client.Get("/health");
    if (response && response->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  } while (Clock::now() < deadline);
  return false;
}

json summary_json(const LatencySummary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

void print_row(const char* name, const LatencySummary& s) {
  std::printf("%-22s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, s.mean * 1e3, s.p50 * 1e3,
              s.p90 * 1e3, s.p99 * 1e3, s.max * 1e3);
}

int run(const Options& options) {
  auto loaded = load_workload(options.workload);
  if (!loaded.ok()) {
    std::cerr << "podserve-bench: " << loaded.status().message() << "\n";
    return 2;
  }
  std::vector<TraceRequest> workload = std::move(loaded).value();
  if (workload.empty()) {
    std::cerr << "podserve-bench: no requests to send\n";
    return 2;
  }
  scale_lengths(workload, options.scale);
  ArrivalOptions arrivals = options.arrivals;
  arrivals.seed = options.seed;
  schedule_arrivals(workload, arrivals);
  std::unique_ptr<TextTokenizer> tokenizer;
  std::unique_ptr<TextPrompts> text_prompts;
  if (!options.tokenizer.empty()) {
    auto loaded = podserve::load_checkpoint_tokenizer(options.tokenizer);
    if (!loaded.ok()) {
      std::cerr << "podserve-bench: --tokenizer: " << loaded.status().message() << "\n";
      return 2;
    }
    tokenizer = std::move(loaded).value();
    text_prompts = std::make_unique<TextPrompts>(*tokenizer);
  }

  if (options.wait_ready_s > 0 && !wait_ready(options.url, options.wait_ready_s)) {
    std::cerr << "podserve-bench: " << options.url << "/health not ready after "
              << options.wait_ready_s << " s\n";
    return 3;
  }

  Progress progress(workload.size());
  const ReplayResult replayed =
      replay(workload, ReplayOptions{.url = options.url,
                                     .stream = options.stream,
                                     .concurrency_limit = options.concurrency_limit,
                                     .vocab_limit = options.vocab_limit,
                                     .prompt_seed = options.seed,
                                     .timeout_s = options.timeout_s,
                                     .model = options.model,
                                     .ignore_eos = options.ignore_eos,
                                     .counting = options.token_ids ? TokenCounting::kTokenIds
                                                                   : TokenCounting::kUsage,
                                     .on_finished = [&progress] { progress.finished_one(); },
                                     .text_prompts = text_prompts.get()});
  const std::vector<CompletionResult>& results = replayed.results;
  const double duration_s = replayed.duration_s;
  const Slo slo{.ttft_s = options.slo_ttft_ms / 1e3,
                .tpot_s = options.slo_tpot_ms / 1e3,
                .e2e_s = options.slo_e2e_ms / 1e3};

  std::vector<double> ttft, itl, e2e, tpot;
  std::size_t errors = 0, good = 0;
  std::int64_t output_tokens = 0, prompt_tokens = 0;
  std::map<std::string, std::size_t> error_kinds;
  json per_request = json::array();
  for (std::size_t i = 0; i < results.size(); ++i) {
    const CompletionResult& r = results[i];
    per_request.push_back({{"prompt_tokens", workload[i].prompt_tokens},
                           {"output_tokens", r.output_tokens},
                           {"ok", r.ok},
                           {"http_status", r.http_status},
                           {"ttft_s", r.ttft_s},
                           {"tpot_s", r.tpot_s()},
                           {"e2e_s", r.e2e_s},
                           {"error", r.error}});
    if (!r.ok) {
      ++errors;
      ++error_kinds[r.error.substr(0, r.error.find(':'))];
      continue;
    }
    e2e.push_back(r.e2e_s);
    output_tokens += r.output_tokens;
    prompt_tokens += workload[i].prompt_tokens;
    if (options.stream) {
      ttft.push_back(r.ttft_s);
      itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    }
    if (r.output_tokens > 1 && options.stream) tpot.push_back(r.tpot_s());
    if (meets_slo(r, slo)) ++good;
  }
  const auto total = static_cast<double>(results.size());
  const json report = {
      {"url", options.url},
      {"workload", options.workload.synthetic ? "synthetic" : options.workload.trace},
      {"num_requests", results.size()},
      {"stream", options.stream},
      {"rate", options.arrivals.rate},
      {"arrivals", options.arrivals.rate == 0.0 || options.arrivals.recorded ? "recorded"
                   : options.arrivals.burstiness == 1.0                      ? "poisson"
                                                                             : "gamma"},
      {"burstiness", options.arrivals.burstiness},
      {"time_scale", options.arrivals.time_scale},
      {"duration_s", duration_s},
      {"completed", results.size() - errors},
      {"errors", errors},
      {"error_kinds", error_kinds},
      {"request_throughput", static_cast<double>(results.size() - errors) / duration_s},
      {"output_token_throughput", static_cast<double>(output_tokens) / duration_s},
      {"prompt_tokens", prompt_tokens},
      {"output_tokens", output_tokens},
      {"ttft_s", summary_json(summarize(ttft))},
      {"itl_s", summary_json(summarize(itl))},
      {"tpot_s", summary_json(summarize(tpot))},
      {"e2e_s", summary_json(summarize(e2e))},
      {"slo_ttft_ms", options.slo_ttft_ms},
      {"slo_tpot_ms", options.slo_tpot_ms},
      {"slo_e2e_ms", options.slo_e2e_ms},
      {"goodput", static_cast<double>(good) / total},
      {"requests", per_request}};

  std::printf("podserve-bench: %zu requests to %s in %.2f s (%zu errors)\n", results.size(),
              options.url.c_str(), duration_s, errors);
  std::printf("request throughput      %10.2f req/s\n", report["request_throughput"].get<double>());
  std::printf("output token throughput %10.2f tok/s\n",
              report["output_token_throughput"].get<double>());
  std::printf("goodput (TTFT<=%.0f ms, TPOT<=%.0f ms, E2E<=%.0f ms; 0 = no bound) %6.2f %%\n",
              options.slo_ttft_ms, options.slo_tpot_ms, options.slo_e2e_ms, 100.0 * good / total);
  std::printf("%-22s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99",
              "max");
  if (options.stream) {
    print_row("TTFT", summarize(ttft));
    print_row("ITL", summarize(itl));
    print_row("TPOT", summarize(tpot));
  }
  print_row("E2E", summarize(e2e));
  for (const auto& [kind, n] : error_kinds) std::printf("error: %-40s %zu\n", kind.c_str(), n);

  if (!options.json_out.empty()) {
    std::ofstream out(options.json_out);
    out << report.dump(2) << "\n";
    if (!out) {
      std::cerr << "podserve-bench: cannot write " << options.json_out << "\n";
      return 2;
    }
  }
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"podserve-bench: trace replay / synthetic load generator for podserve"};
  app.add_option("--url", options.url, "router base URL")->capture_default_str();
  app.add_option("--trace", options.workload.trace, "Azure LLM trace CSV")->capture_default_str();
  app.add_option("--num-requests", options.workload.num_requests,
                 "requests to send (0: whole trace)")
      ->capture_default_str();
  app.add_option("--offset", options.workload.offset, "first trace row (0-based)")
      ->capture_default_str();
  app.add_option("--rate", options.arrivals.rate,
                 "offered requests/s (generated arrivals); 0: the recorded arrivals")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--burstiness", options.arrivals.burstiness,
                 "Gamma shape of generated arrivals: 1 Poisson, < 1 burstier")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--recorded-arrivals", options.arrivals.recorded,
               "with --rate: keep the trace's arrival pattern, time-scaled to that mean rate");
  app.add_option("--time-scale", options.arrivals.time_scale, "multiply recorded gaps (rate 0)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--prompt-scale", options.scale.prompt_scale)->capture_default_str();
  app.add_option("--output-scale", options.scale.output_scale)->capture_default_str();
  app.add_option("--min-prompt", options.scale.min_prompt)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-prompt", options.scale.max_prompt)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-output", options.scale.max_output)
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  // Two flags, not CLI11's "--stream,!--no-stream": its --help line "--no-stream{false}" reads as
  // if streaming were off by default.
  app.add_flag("--stream", options.stream, "SSE streaming, TTFT/ITL measured (the default)");
  app.add_flag_callback(
      "--no-stream", [&options] { options.stream = false; },
      "blocking requests: e2e latency only, no TTFT/ITL");
  app.add_option("--concurrency-limit", options.concurrency_limit, "max requests in flight")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--tokenizer", options.tokenizer,
                 "checkpoint directory: prompts become text of the trace's token lengths "
                 "(tokenizer.json or tokenizer.model; the server adds its special tokens)");
  app.add_option("--vocab-limit", options.vocab_limit, "prompt token ids in [0, limit)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--seed", options.seed, "prompt and arrival RNG seed")->capture_default_str();
  app.add_option("--json-out", options.json_out, "write the full report as JSON");
  app.add_option("--model", options.model, "the request's \"model\" (empty: not sent)");
  app.add_flag("--token-ids", options.token_ids,
               "count output tokens from podserve's token_ids (default: the streamed usage)");
  app.add_flag_callback(
      "--no-ignore-eos", [&options] { options.ignore_eos = false; },
      "do not send ignore_eos (servers that reject it; outputs may end early)");
  app.add_option("--slo-ttft-ms", options.slo_ttft_ms, "goodput TTFT bound (0: none)")
      ->capture_default_str();
  app.add_option("--slo-tpot-ms,--slo-itl-ms", options.slo_tpot_ms,
                 "goodput TPOT bound, (e2e - TTFT) / (tokens - 1) (0: none)")
      ->capture_default_str();
  app.add_option("--slo-e2e-ms", options.slo_e2e_ms, "goodput end-to-end bound (0: none)")
      ->capture_default_str();
  app.add_option("--wait-ready-s", options.wait_ready_s, "poll /health up to this long first")
      ->capture_default_str();
  app.add_option("--timeout-s", options.timeout_s, "per-request read timeout")
      ->capture_default_str();
  app.add_flag("--synthetic", options.workload.synthetic, "fixed lengths instead of the trace");
  app.add_option("--synthetic-prompt", options.workload.synthetic_prompt)->capture_default_str();
  app.add_option("--synthetic-output", options.workload.synthetic_output)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  return run(options);
}
