// podserve-bench and podserve-capacity pieces: trace parsing, scaling and arrival processes,
// percentiles against a naive reference, the HTTP client against an in-test OpenAI-style server
// (usage-counted and token_ids-counted), the SLO and the capacity search against an oracle
// service, and Prometheus histograms read back from exposition text.
#include <httplib.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/hf_tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/bench/capacity_search.h"
#include "tools/bench/client.h"
#include "tools/bench/prometheus_text.h"
#include "tools/bench/stats.h"
#include "tools/bench/text_prompts.h"
#include "tools/bench/trace.h"

namespace podserve::bench {
namespace {

TEST(TraceTest, ParsesAzureFormatWithOffsetAndCount) {
  std::istringstream csv(
      "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
      "2023-11-16 18:17:03.9799600,4808,10\r\n"
      "2023-11-16 18:17:04.0319600,3180,8\r\n"
      "2023-11-16 18:17:05.5000000,12,1\r\n"
      "2023-11-17 00:00:00.0000000,7,2\r\n");
  auto all = parse_azure_trace(csv, 0, 0);
  ASSERT_TRUE(all.ok()) << all.status().to_string();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].prompt_tokens, 4808);
  EXPECT_EQ((*all)[0].output_tokens, 10);
  EXPECT_DOUBLE_EQ((*all)[0].arrival_s, 0.0);
  EXPECT_NEAR((*all)[1].arrival_s, 0.052, 1e-6);
  // Crossing midnight: 18:17:03.97996 -> 24:00:00.
  EXPECT_NEAR((*all)[3].arrival_s, 5 * 3600 + 42 * 60 + 56.02004, 1e-6);

  std::istringstream again(csv.str());
  auto slice = parse_azure_trace(again, 1, 2);
  ASSERT_TRUE(slice.ok());
  ASSERT_EQ(slice->size(), 2u);
  EXPECT_EQ((*slice)[0].prompt_tokens, 3180);
  EXPECT_DOUBLE_EQ((*slice)[0].arrival_s, 0.0);
  EXPECT_NEAR((*slice)[1].arrival_s, 1.4680400, 1e-6);
}

TEST(TraceTest, RejectsBadHeaderAndBadRows) {
  std::istringstream bad_header("time,a,b\n");
  EXPECT_FALSE(parse_azure_trace(bad_header, 0, 0).ok());
  std::istringstream bad_row(
      "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,12x,3\n");
  const auto result = parse_azure_trace(bad_row, 0, 0);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("line 2"), std::string::npos);
}

TEST(TraceTest, ReadsTheShippedTrace) {
  std::ifstream csv(std::string(PODSERVE_SOURCE_DIR) + "/tools/data/azure-llm-2023-code.csv");
  ASSERT_TRUE(csv) << "tools/data/azure-llm-2023-code.csv missing";
  auto trace = parse_azure_trace(csv, 0, 0);
  ASSERT_TRUE(trace.ok()) << trace.status().to_string();
  EXPECT_EQ(trace->size(), 8819u);
  for (std::size_t i = 1; i < trace->size(); ++i) {
    ASSERT_GE((*trace)[i].arrival_s, (*trace)[i - 1].arrival_s) << "row " << i;
  }
  EXPECT_LT(trace->back().arrival_s, 3700.0);  // one hour of traffic
}

TEST(TraceTest, ScalesAndClampsLengths) {
  std::vector<TraceRequest> requests = {{.prompt_tokens = 100, .output_tokens = 10},
                                        {.prompt_tokens = 3, .output_tokens = 1},
                                        {.prompt_tokens = 9000, .output_tokens = 900}};
  scale_lengths(requests, {.prompt_scale = 0.5,
                           .output_scale = 0.25,
                           .min_prompt = 4,
                           .max_prompt = 1000,
                           .max_output = 100});
  EXPECT_EQ(requests[0].prompt_tokens, 50);
  EXPECT_EQ(requests[0].output_tokens, 3);  // 2.5 rounds away from zero
  EXPECT_EQ(requests[1].prompt_tokens, 4);  // 1.5 -> 2, clamped up to min_prompt
  EXPECT_EQ(requests[1].output_tokens, 1);  // 0.25 -> 0, clamped up to 1
  EXPECT_EQ(requests[2].prompt_tokens, 1000);
  EXPECT_EQ(requests[2].output_tokens, 100);
}

TEST(TraceTest, ArrivalsFollowRateOrTimeScale) {
  std::vector<TraceRequest> requests(20000);
  schedule_arrivals(requests, 50.0, 1.0, 7);
  EXPECT_DOUBLE_EQ(requests[0].arrival_s, 0.0);
  for (std::size_t i = 1; i < requests.size(); ++i) {
    ASSERT_GE(requests[i].arrival_s, requests[i - 1].arrival_s);
  }
  const double measured_rate = (requests.size() - 1) / requests.back().arrival_s;
  EXPECT_NEAR(measured_rate, 50.0, 2.0);

  std::vector<TraceRequest> recorded = {{.arrival_s = 0.0}, {.arrival_s = 2.0}};
  schedule_arrivals(recorded, 0.0, 0.5, 7);
  EXPECT_DOUBLE_EQ(recorded[1].arrival_s, 1.0);
}

double gap_coefficient_of_variation(const std::vector<TraceRequest>& requests) {
  std::vector<double> gaps;
  for (std::size_t i = 1; i < requests.size(); ++i) {
    gaps.push_back(requests[i].arrival_s - requests[i - 1].arrival_s);
  }
  const double mean = summarize(gaps).mean;
  double variance = 0.0;
  for (double gap : gaps) variance += (gap - mean) * (gap - mean);
  return std::sqrt(variance / static_cast<double>(gaps.size())) / mean;
}

TEST(TraceTest, GammaArrivalsKeepTheRateAndSpreadWithBurstiness) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE(seed);
  for (const double burstiness : {0.25, 1.0, 4.0}) {
    std::vector<TraceRequest> requests(40000);
    schedule_arrivals(requests,
                      ArrivalOptions{.rate = 50.0, .burstiness = burstiness, .seed = seed});
    EXPECT_DOUBLE_EQ(requests[0].arrival_s, 0.0);
    const double measured_rate = (requests.size() - 1) / requests.back().arrival_s;
    EXPECT_NEAR(measured_rate, 50.0, 50.0 * 0.05) << "burstiness " << burstiness;
    // Gamma gaps of shape k: coefficient of variation 1 / sqrt(k).
    // (the estimate's spread grows with the shape's kurtosis: 6% allows > 4 sigma at k = 0.25).
    const double expected_cv = 1.0 / std::sqrt(burstiness);
    EXPECT_NEAR(gap_coefficient_of_variation(requests), expected_cv, 0.06 * expected_cv)
        << "burstiness " << burstiness;
  }
}

TEST(TraceTest, RecordedArrivalsScaleToARateKeepingTheirPattern) {
  std::vector<TraceRequest> recorded = {
      {.arrival_s = 10.0}, {.arrival_s = 11.0}, {.arrival_s = 13.0}, {.arrival_s = 14.0}};
  schedule_arrivals(recorded, ArrivalOptions{.rate = 2.0, .recorded = true});
  // Span 4 s for 3 gaps: 0.75 req/s recorded; 2 req/s scales every gap by 0.375.
  EXPECT_DOUBLE_EQ(recorded[0].arrival_s, 0.0);
  EXPECT_DOUBLE_EQ(recorded[1].arrival_s, 0.375);
  EXPECT_DOUBLE_EQ(recorded[2].arrival_s, 1.125);
  EXPECT_DOUBLE_EQ(recorded[3].arrival_s, 1.5);
  std::vector<TraceRequest> same_instant = {{.arrival_s = 3.0}, {.arrival_s = 3.0}};
  schedule_arrivals(same_instant, ArrivalOptions{.rate = 2.0, .recorded = true});
  EXPECT_DOUBLE_EQ(same_instant[1].arrival_s, 0.0);
}

// Naive reference: numpy 'linear' percentile written out directly.
double reference_percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double h = (v.size() - 1) * p / 100.0;
  const double lo = std::floor(h);
  const double hi = std::ceil(h);
  return v[static_cast<std::size_t>(lo)] +
         (h - lo) * (v[static_cast<std::size_t>(hi)] - v[static_cast<std::size_t>(lo)]);
}

TEST(StatsTest, PercentilesMatchReferenceOnRandomData) {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> values(std::uniform_int_distribution<int>(1, 300)(rng));
    for (double& v : values) v = std::exponential_distribution<double>(3.0)(rng);
    for (double p : {0.0, 1.0, 50.0, 90.0, 99.0, 100.0}) {
      EXPECT_NEAR(percentile(values, p), reference_percentile(values, p), 1e-12);
    }
    const LatencySummary s = summarize(values);
    EXPECT_EQ(s.count, values.size());
    EXPECT_DOUBLE_EQ(s.max, *std::max_element(values.begin(), values.end()));
    EXPECT_LE(s.p50, s.p90);
    EXPECT_LE(s.p90, s.p99);
  }
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0.0);
  EXPECT_DOUBLE_EQ(summarize({1, 2, 3, 10}).mean, 4.0);
}

// A stand-in OpenAI-style server: streams `max_tokens` tokens in chunks of `chunk_tokens`, 5 ms
// apart, and a usage-only chunk when stream_options.include_usage asks (unless it is told to
// ignore stream_options, as some servers do), or answers JSON.
class FakeServer {
 public:
  explicit FakeServer(int chunk_tokens = 1, bool honour_include_usage = true) {
    server_.Post("/v1/completions", [=, this](const httplib::Request& req, httplib::Response& res) {
      const auto body = nlohmann::json::parse(req.body);
      last_request_ = body;
      const int max_tokens = body["max_tokens"];
      if (max_tokens > 1000) {
        res.status = 400;
        res.set_content(R"({"error": {"message": "too many", "type": "invalid_request_error"}})",
                        "application/json");
        return;
      }
      if (!body["stream"].get<bool>()) {
        res.set_content(nlohmann::json{{"usage", {{"completion_tokens", max_tokens}}}}.dump(),
                        "application/json");
        return;
      }
      const bool usage = honour_include_usage && body.contains("stream_options") &&
                         body["stream_options"].value("include_usage", false);
      res.set_chunked_content_provider(
          "text/event-stream", [max_tokens, chunk_tokens, usage, sent = 0](
                                   std::size_t, httplib::DataSink& sink) mutable {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            std::string event = ": keep-alive\n\n";
            std::vector<int> ids;
            for (int i = 0; i < chunk_tokens && sent < max_tokens; ++i) ids.push_back(sent++);
            event += "data: " +
                     nlohmann::json{{"choices", {{{"token_ids", ids}, {"text", "x"}}}}}.dump() +
                     "\n\n";
            if (sent == max_tokens) {
              if (usage) {
                event += "data: " +
                         nlohmann::json{{"choices", nlohmann::json::array()},
                                        {"usage", {{"completion_tokens", max_tokens}}}}
                             .dump() +
                         "\n\n";
              }
              event += "data: [DONE]\n\n";
            }
            // Split the write to exercise event reassembly across reads.
            const std::size_t half = event.size() / 2;
            sink.write(event.data(), half);
            sink.write(event.data() + half, event.size() - half);
            if (sent == max_tokens) sink.done();
            return true;
          });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FakeServer() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  nlohmann::json last_request_;

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST(ClientTest, StreamMeasuresTtftAndItlPerToken) {
  FakeServer server;
  const CompletionSpec spec{.prompt = random_prompt(16, 256, 3), .max_tokens = 6, .stream = true};
  const CompletionResult result = send_completion(server.url(), spec, 10);
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.http_status, 200);
  EXPECT_EQ(result.output_tokens, 6);
  EXPECT_EQ(result.itl_s.size(), 5u);
  // The server sleeps 5 ms before each event, but the client may receive two events in one
  // read under load, so only what the sleeps guarantee is asserted: the first token after
  // 5 ms, the sixth after 30 ms, gaps never negative, all of it inside the end-to-end time.
  EXPECT_GE(result.ttft_s, 0.005);
  double last_token_s = result.ttft_s;
  for (double gap : result.itl_s) {
    EXPECT_GE(gap, 0.0);
    last_token_s += gap;
  }
  EXPECT_GE(last_token_s, 0.030);
  EXPECT_GE(result.e2e_s, last_token_s);
  EXPECT_EQ(server.last_request_["prompt"].get<std::vector<TokenId>>(), spec.prompt);
  EXPECT_EQ(server.last_request_["ignore_eos"], true);
  EXPECT_EQ(server.last_request_["temperature"], 0);
  EXPECT_EQ(server.last_request_["stream_options"]["include_usage"], true);
  EXPECT_FALSE(server.last_request_.contains("model"));
  // (e2e - TTFT) / (tokens - 1), as vLLM's benchmark computes TPOT.
  EXPECT_DOUBLE_EQ(result.tpot_s(), (result.e2e_s - result.ttft_s) / 5);
}

TEST(ClientTest, TokensCountFromUsageOrTokenIdsWhateverTheChunking) {
  FakeServer server(/*chunk_tokens=*/3);
  CompletionSpec spec{.prompt = {1, 2, 3}, .max_tokens = 7, .stream = true, .model = "m"};
  const CompletionResult usage = send_completion(server.url(), spec, 10);
  ASSERT_TRUE(usage.ok) << usage.error;
  EXPECT_EQ(usage.output_tokens, 7);  // the usage chunk, not the 3 chunks
  EXPECT_EQ(usage.itl_s.size(), 2u);  // gaps between the 3 chunks carrying choices
  EXPECT_EQ(server.last_request_["model"], "m");

  spec.counting = TokenCounting::kTokenIds;
  const CompletionResult ids = send_completion(server.url(), spec, 10);
  ASSERT_TRUE(ids.ok) << ids.error;
  EXPECT_EQ(ids.output_tokens, 7);

  spec.counting = TokenCounting::kUsage;
  spec.ignore_eos = false;
  FakeServer no_usage(/*chunk_tokens=*/3, /*honour_include_usage=*/false);
  const CompletionResult chunks = send_completion(no_usage.url(), spec, 10);
  ASSERT_TRUE(chunks.ok) << chunks.error;
  EXPECT_EQ(chunks.output_tokens, 3);  // no usage sent: the chunks are all there is to count
  EXPECT_FALSE(no_usage.last_request_.contains("ignore_eos"));
}

TEST(ClientTest, NonStreamUsesUsageAndErrorsAreReported) {
  FakeServer server;
  const CompletionResult plain =
      send_completion(server.url(), {.prompt = {1, 2}, .max_tokens = 9, .stream = false}, 10);
  ASSERT_TRUE(plain.ok) << plain.error;
  EXPECT_EQ(plain.output_tokens, 9);

  const CompletionResult rejected =
      send_completion(server.url(), {.prompt = {1}, .max_tokens = 5000, .stream = true}, 10);
  EXPECT_FALSE(rejected.ok);
  EXPECT_EQ(rejected.http_status, 400);
  EXPECT_NE(rejected.error.find("too many"), std::string::npos) << rejected.error;

  const CompletionResult unreachable =
      send_completion("http://127.0.0.1:1", {.prompt = {1}, .max_tokens = 1}, 2);
  EXPECT_FALSE(unreachable.ok);
  EXPECT_EQ(unreachable.http_status, 0);
}

TEST(ClientTest, RandomPromptIsReproducibleAndInRange) {
  const auto a = random_prompt(1000, 256, 11);
  EXPECT_EQ(a, random_prompt(1000, 256, 11));
  EXPECT_NE(a, random_prompt(1000, 256, 12));
  for (TokenId id : a) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 256);
  }
}

TEST(SloTest, EveryBoundThatIsSetMustHold) {
  CompletionResult r{.ok = true, .ttft_s = 0.5, .e2e_s = 1.5, .output_tokens = 11};  // TPOT 0.1
  EXPECT_TRUE(meets_slo(r, {}));
  EXPECT_TRUE(meets_slo(r, {.ttft_s = 0.5, .tpot_s = 0.1, .e2e_s = 1.5}));
  EXPECT_FALSE(meets_slo(r, {.ttft_s = 0.49}));
  EXPECT_FALSE(meets_slo(r, {.tpot_s = 0.099}));
  EXPECT_FALSE(meets_slo(r, {.e2e_s = 1.49}));
  CompletionResult failed = r;
  failed.ok = false;
  EXPECT_FALSE(meets_slo(failed, {}));
  EXPECT_DOUBLE_EQ(slo_attainment({r, failed, r, r}, {}), 0.75);
  EXPECT_DOUBLE_EQ(slo_attainment({}, {}), 0.0);
}

// Drives a search against a service whose SLO holds exactly up to `capacity`.
CapacitySearch search_against(double capacity, const SearchOptions& options) {
  CapacitySearch search(options);
  while (search.outcome() == SearchOutcome::kSearching) {
    search.record(search.next_rate() <= capacity);
  }
  return search;
}

TEST(CapacitySearchTest, BracketsThenBisectsToTheToleranceAroundTheTrueCapacity) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_rate(std::log(0.2), std::log(500.0));
  for (int trial = 0; trial < 200; ++trial) {
    const double capacity = std::exp(log_rate(rng));
    const SearchOptions options{.start_rate = std::exp(log_rate(rng)),
                                .growth = std::uniform_real_distribution<double>(1.5, 4.0)(rng),
                                .tolerance = trial % 2 ? 0.05 : 0.2,
                                .min_rate = 0.001,
                                .max_rate = 1e5,
                                .max_probes = 60};
    const CapacitySearch search = search_against(capacity, options);
    SCOPED_TRACE(testing::Message() << "capacity " << capacity << " start " << options.start_rate
                                    << " growth " << options.growth);
    ASSERT_EQ(search.outcome(), SearchOutcome::kConverged);
    EXPECT_LE(search.lower(), capacity);
    EXPECT_GT(search.upper(), capacity);
    EXPECT_LE(search.upper(), search.lower() * (1.0 + options.tolerance));
    EXPECT_DOUBLE_EQ(search.capacity(), search.lower());
    // Bracketing: the rates only move one way until the first verdict flips.
    const auto& probes = search.probes();
    EXPECT_DOUBLE_EQ(probes[0].rate, options.start_rate);
    std::size_t flip = 1;
    while (flip < probes.size() && probes[flip].attained == probes[0].attained) ++flip;
    ASSERT_LT(flip, probes.size());
    for (std::size_t i = 1; i <= flip; ++i) {
      EXPECT_NEAR(probes[i].rate / probes[i - 1].rate,
                  probes[0].attained ? options.growth : 1.0 / options.growth, 1e-9);
    }
    // Bisection: every later probe lies inside the bracket known before it.
    double lower = 0.0, upper = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < probes.size(); ++i) {
      if (i > flip) {
        EXPECT_GT(probes[i].rate, lower);
        EXPECT_LT(probes[i].rate, upper);
      }
      (probes[i].attained ? lower : upper) = probes[i].rate;
    }
    // Halving the bracket's log-width: a handful of probes after it.
    EXPECT_LE(probes.size() - flip - 1,
              std::ceil(std::log2(std::log(options.growth) / std::log1p(options.tolerance))) + 1);
  }
}

TEST(CapacitySearchTest, StopsAtTheRateLimitsAndTheProbeLimit) {
  const SearchOptions options{.start_rate = 4.0, .min_rate = 0.5, .max_rate = 20.0};
  const CapacitySearch unbounded = search_against(1e9, options);
  EXPECT_EQ(unbounded.outcome(), SearchOutcome::kAtMaxRate);
  EXPECT_DOUBLE_EQ(unbounded.capacity(), 20.0);
  ASSERT_EQ(unbounded.probes().size(), 4u);  // 4, 8, 16, 20
  EXPECT_DOUBLE_EQ(unbounded.probes().back().rate, 20.0);

  const CapacitySearch hopeless = search_against(0.1, options);
  EXPECT_EQ(hopeless.outcome(), SearchOutcome::kBelowMinRate);
  EXPECT_DOUBLE_EQ(hopeless.capacity(), 0.0);
  EXPECT_DOUBLE_EQ(hopeless.probes().back().rate, 0.5);

  SearchOptions few = options;
  few.max_probes = 3;
  const CapacitySearch cut = search_against(6.0, few);
  EXPECT_EQ(cut.outcome(), SearchOutcome::kProbeLimit);
  EXPECT_EQ(cut.probes().size(), 3u);
  EXPECT_DOUBLE_EQ(cut.lower(), 4.0 * std::sqrt(2.0));  // 4 held, 8 failed, 5.66 held
  EXPECT_DOUBLE_EQ(cut.upper(), 8.0);
}

TEST(PrometheusTextTest, SumsCountersAndMergesHistogramsOverLabelSets) {
  const std::vector<std::string> expositions = {
      "# HELP podserve_requests_running x\n# TYPE podserve_requests_running gauge\n"
      "podserve_requests_running{mode=\"colocated\"} 2\n"
      "podserve_requests_running_total 100\n"
      "h_bucket{role=\"a\",le=\"0.1\"} 1\nh_bucket{role=\"a\",le=\"1\"} 3\n"
      "h_bucket{role=\"a\",le=\"+Inf\"} 4\nh_sum{role=\"a\"} 5.5\nh_count{role=\"a\"} 4\n",
      "podserve_requests_running 3\n"
      "h_bucket{le=\"0.1\",mode=\"b\"} 2\nh_bucket{le=\"1\",mode=\"b\"} 2\n"
      "h_bucket{le=\"+Inf\",mode=\"b\"} 2\nh_sum 0.1\nh_count 2\n"};
  EXPECT_DOUBLE_EQ(sum_samples(expositions, "podserve_requests_running"), 5.0);
  EXPECT_DOUBLE_EQ(sum_samples(expositions, "absent"), 0.0);
  const HistogramSnapshot h = read_histogram(expositions, "h");
  ASSERT_EQ(h.upper_bounds.size(), 3u);
  EXPECT_DOUBLE_EQ(h.upper_bounds[0], 0.1);
  EXPECT_TRUE(std::isinf(h.upper_bounds[2]));
  EXPECT_EQ(h.cumulative_counts, (std::vector<double>{3, 5, 6}));
  EXPECT_DOUBLE_EQ(h.count, 6.0);
  EXPECT_DOUBLE_EQ(h.mean(), 5.6 / 6.0);

  const HistogramSnapshot later =
      read_histogram({"h_bucket{le=\"0.1\"} 3\nh_bucket{le=\"1\"} 9\nh_bucket{le=\"+Inf\"} 10\n"
                      "h_sum 9\nh_count 10\n"},
                     "h");
  const HistogramSnapshot probe = histogram_difference(later, h);
  EXPECT_EQ(probe.cumulative_counts, (std::vector<double>{0, 4, 4}));
  EXPECT_DOUBLE_EQ(probe.count, 4.0);
  EXPECT_DOUBLE_EQ(probe.sum, 9.0 - 5.6);
}

TEST(PrometheusTextTest, QuantilesInterpolateInsideTheBucketHoldingTheRank) {
  // Random samples into the router's latency buckets; the estimate must sit in the bucket that
  // holds the true sample quantile, interpolated as Prometheus does (checked by hand below).
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const std::vector<double> bounds = {0.01, 0.05, 0.1,
                                      0.5,  1.0,  std::numeric_limits<double>::infinity()};
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> samples(std::uniform_int_distribution<int>(1, 500)(rng));
    for (double& v : samples) v = std::lognormal_distribution<double>(-2.5, 1.0)(rng);
    HistogramSnapshot h{.upper_bounds = bounds, .cumulative_counts = {}, .sum = 0, .count = 0};
    for (const double bound : bounds) {
      h.cumulative_counts.push_back(static_cast<double>(
          std::count_if(samples.begin(), samples.end(), [&](double v) { return v <= bound; })));
    }
    h.count = static_cast<double>(samples.size());
    for (const double q : {0.5, 0.9}) {
      const QuantileEstimate estimate = histogram_quantile(h, q);
      std::vector<double> sorted = samples;
      std::sort(sorted.begin(), sorted.end());
      const double rank = q * static_cast<double>(sorted.size());
      const double true_quantile = sorted[static_cast<std::size_t>(std::ceil(rank)) - 1];
      EXPECT_GE(true_quantile, estimate.bucket_lower);
      EXPECT_LE(true_quantile, estimate.bucket_upper);
      if (std::isfinite(estimate.bucket_upper)) {
        EXPECT_GE(estimate.value, estimate.bucket_lower);
        EXPECT_LE(estimate.value, estimate.bucket_upper);
      }
    }
  }
  const HistogramSnapshot fixed{.upper_bounds = {1.0, 2.0, std::numeric_limits<double>::infinity()},
                                .cumulative_counts = {2, 6, 6},
                                .sum = 0,
                                .count = 6};
  // Rank 3 of 6 is the first of the 4 samples in (1, 2]: 1 + (3 - 2) / 4.
  EXPECT_DOUBLE_EQ(histogram_quantile(fixed, 0.5).value, 1.25);
  EXPECT_DOUBLE_EQ(histogram_quantile(fixed, 0.5).bucket_lower, 1.0);
  EXPECT_DOUBLE_EQ(histogram_quantile(fixed, 0.5).bucket_upper, 2.0);
  EXPECT_DOUBLE_EQ(histogram_quantile(HistogramSnapshot{}, 0.5).value, 0.0);
}

}  // namespace
// --tokenizer: text prompts that the checkpoint's tokenizer encodes to the asked length, for
// many lengths and windows, and different windows for different seeds.
TEST(TextPrompts, TextOfTheAskedTokenLength) {
  auto tokenizer = podserve::HfTokenizer::load(PODSERVE_SOURCE_DIR "/tests/data/hf/llama");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const TextPrompts prompts(**tokenizer);
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const auto length = static_cast<std::int32_t>(1 + rng() % 600);
    const std::string text = prompts.make(length, rng());
    EXPECT_EQ((*tokenizer)->encode(text).size(), static_cast<std::size_t>(length))
        << "length " << length << ": '" << text.substr(0, 80) << "'";
  }
  EXPECT_NE(prompts.make(50, 1), prompts.make(50, 2));
  EXPECT_EQ(prompts.make(50, 1), prompts.make(50, 1));
}

}  // namespace podserve::bench
