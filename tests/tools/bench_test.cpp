// podserve-bench pieces: trace parsing and scaling, percentiles against a naive reference, and
// the HTTP client against an in-test server that speaks the router's SSE format.
#include <httplib.h>

#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "core/hf_tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/bench/client.h"
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

// A stand-in router: streams `max_tokens` one-token chunks 5 ms apart, or answers JSON.
class FakeServer {
 public:
  FakeServer() {
    server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
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
      res.set_chunked_content_provider(
          "text/event-stream",
          [max_tokens, sent = 0](std::size_t, httplib::DataSink& sink) mutable {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            std::string event = ": keep-alive\n\n";
            event += "data: " +
                     nlohmann::json{{"choices", {{{"token_ids", {sent}}, {"text", "x"}}}}}.dump() +
                     "\n\n";
            if (++sent == max_tokens) event += "data: [DONE]\n\n";
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
