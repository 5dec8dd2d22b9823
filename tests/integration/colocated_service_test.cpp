// End-to-end: the service under mpirun on the CPU backend (router + a TP=2 instance + a TP=1
// instance), real HTTP, real MPI, real Prometheus. One deployment for the whole suite.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "tests/integration/service_process.h"

namespace podserve::testing {
namespace {

using nlohmann::json;

constexpr char kDeployment[] = R"(model: {preset: tiny, weights: random, seed: 7}
backend: cpu
instances:
  - {role: colocated, tp: 2, count: 1}
  - {role: colocated, tp: 1, count: 1}
scheduler: {mode: colocated, token_budget: 128, max_running: 32}
kv_cache: {page_size: 16, cpu_memory_mb: 32}
)";
constexpr int kWorldSize = 4;

class ColocatedService : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    service_ = std::make_unique<ServiceUnderTest>("colocated", kDeployment);
    ASSERT_TRUE(service_->start()) << service_->log();
  }
  static void TearDownTestSuite() {
    if (!service_) return;
    const int code = service_->stop();
    EXPECT_EQ(code, 0) << "service did not shut down cleanly:\n" << service_->log();
    service_.reset();
  }

  static httplib::Client client() {
    httplib::Client c(service_->host(), service_->http_port());
    c.set_read_timeout(120);
    return c;
  }
  static httplib::Result post(const json& body) {
    return client().Post("/v1/completions", body.dump(), "application/json");
  }

  static std::unique_ptr<ServiceUnderTest> service_;
  static std::atomic<int> completed_requests_;
  static std::atomic<int> generated_tokens_;
};

std::unique_ptr<ServiceUnderTest> ColocatedService::service_;
std::atomic<int> ColocatedService::completed_requests_{0};
std::atomic<int> ColocatedService::generated_tokens_{0};

// Token ids of a streamed completion, and whether it ended with [DONE].
struct StreamResult {
  std::vector<int> token_ids;
  std::string finish_reason;
  bool done = false;
  int status = 0;
};

StreamResult parse_sse(const std::string& body) {
  StreamResult result;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    const auto payload = line.substr(6);
    if (payload == "[DONE]") {
      result.done = true;
      continue;
    }
    const auto chunk = json::parse(payload);
    const auto& choice = chunk.at("choices").at(0);
    if (choice.contains("token_ids")) {
      for (const auto& id : choice["token_ids"]) result.token_ids.push_back(id.get<int>());
    }
    if (choice.contains("finish_reason") && !choice["finish_reason"].is_null()) {
      result.finish_reason = choice["finish_reason"].get<std::string>();
    }
  }
  return result;
}

TEST_F(ColocatedService, ServesSixtyFourConcurrentRequestsStreamingAndNot) {
  constexpr int kRequests = 64;
  std::vector<std::thread> clients;
  std::atomic<int> failures{0};
  std::vector<std::string> errors(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      std::mt19937 rng(1000 + i);
      std::vector<int> prompt(8 + rng() % 120);
      for (auto& t : prompt) t = static_cast<int>(rng() % 256);
      const int max_tokens = 1 + i % 24;
      const bool stream = i % 2 == 0;
      json body = {{"prompt", prompt},
                   {"max_tokens", max_tokens},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"stream", stream}};
      auto res = post(body);
      if (!res || res->status != 200) {
        errors[i] = fmt::format("request {}: HTTP {} ({})", i, res ? res->status : -1,
                                res ? std::string("ok") : httplib::to_string(res.error()));
        ++failures;
        return;
      }
      int produced = 0;
      if (stream) {
        const auto parsed = parse_sse(res->body);
        produced = static_cast<int>(parsed.token_ids.size());
        if (!parsed.done || parsed.finish_reason != "length") {
          errors[i] = fmt::format("request {}: stream not terminated properly", i);
          ++failures;
        }
      } else {
        const auto reply = json::parse(res->body);
        produced = reply.at("usage").at("completion_tokens").get<int>();
        if (reply.at("usage").at("prompt_tokens").get<int>() != static_cast<int>(prompt.size())) {
          errors[i] = fmt::format("request {}: prompt_tokens mismatch", i);
          ++failures;
        }
      }
      if (produced != max_tokens) {
        errors[i] = fmt::format("request {}: {} tokens, asked for {}", i, produced, max_tokens);
        ++failures;
      }
      ++completed_requests_;
      generated_tokens_ += produced;
    });
  }
  for (auto& t : clients) t.join();
  for (const auto& e : errors) EXPECT_TRUE(e.empty()) << e;
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(ColocatedService, GreedyOutputIsIdenticalOnEveryInstanceAndTpDegree) {
  // least_outstanding_tokens spreads concurrent requests over both idle instances (TP=2 on
  // ranks 1-2, TP=1 on rank 3); both must run iterations during this test.
  const int tp2_leader = service_->metrics_port_base() + 1,
            tp1_leader = service_->metrics_port_base() + 3;
  const double tp2_before = scrape_sum(tp2_leader, "podserve_iteration_seconds_count");
  const double tp1_before = scrape_sum(tp1_leader, "podserve_iteration_seconds_count");
  const std::string prompt = "The quick brown fox jumps over the lazy dog";
  std::vector<std::vector<int>> outputs(6);
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      auto res =
          post({{"prompt", prompt}, {"max_tokens", 20}, {"temperature", 0}, {"ignore_eos", true}});
      ASSERT_TRUE(res && res->status == 200);
      const auto reply = json::parse(res->body);
      outputs[i] = reply.at("choices").at(0).at("token_ids").get<std::vector<int>>();
      ++completed_requests_;
      generated_tokens_ += 20;
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 1; i < 6; ++i) EXPECT_EQ(outputs[i], outputs[0]) << "request " << i;
  EXPECT_EQ(outputs[0].size(), 20u);
  EXPECT_GT(scrape_sum(tp2_leader, "podserve_iteration_seconds_count"), tp2_before)
      << "TP=2 instance idle";
  EXPECT_GT(scrape_sum(tp1_leader, "podserve_iteration_seconds_count"), tp1_before)
      << "TP=1 instance idle";
}

// /v1/chat/completions renders the messages through the documented template and otherwise runs
// the same generation: greedy, it produces exactly the tokens /v1/completions produces for the
// rendered prompt, blocking and streamed, in chat.completion(.chunk) objects.
TEST_F(ColocatedService, ChatCompletionsGenerateWhatTheRenderedPromptDoes) {
  const json messages = json::array({{{"role", "system"}, {"content", "Answer briefly."}},
                                     {{"role", "user"}, {"content", "What is a fox?"}}});
  const std::string rendered =
      "<|start_header_id|>system<|end_header_id|>\n\nAnswer briefly.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nWhat is a fox?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  constexpr int kTokens = 12;
  const auto completion = post(
      {{"prompt", rendered}, {"max_tokens", kTokens}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_TRUE(completion && completion->status == 200);
  const auto expected = json::parse(completion->body).at("choices").at(0);

  auto chat = client().Post("/v1/chat/completions",
                            json{{"messages", messages},
                                 {"max_completion_tokens", kTokens},
                                 {"temperature", 0},
                                 {"ignore_eos", true}}
                                .dump(),
                            "application/json");
  ASSERT_TRUE(chat && chat->status == 200) << (chat ? chat->body : "no response");
  const auto reply = json::parse(chat->body);
  EXPECT_EQ(reply.at("object"), "chat.completion");
  EXPECT_EQ(reply.at("id").get<std::string>().rfind("chatcmpl-", 0), 0u);
  const auto& choice = reply.at("choices").at(0);
  EXPECT_EQ(choice.at("message").at("role"), "assistant");
  EXPECT_EQ(choice.at("message").at("content"), expected.at("text"));
  EXPECT_EQ(choice.at("token_ids"), expected.at("token_ids"));
  EXPECT_EQ(choice.at("finish_reason"), "length");
  EXPECT_EQ(reply.at("usage").at("prompt_tokens").get<std::size_t>(), rendered.size() + 1);

  auto streamed = client().Post("/v1/chat/completions",
                                json{{"messages", messages},
                                     {"max_tokens", kTokens},
                                     {"temperature", 0},
                                     {"ignore_eos", true},
                                     {"stream", true}}
                                    .dump(),
                                "application/json");
  ASSERT_TRUE(streamed && streamed->status == 200);
  const StreamResult parsed = parse_sse(streamed->body);
  EXPECT_TRUE(parsed.done);
  EXPECT_EQ(parsed.finish_reason, "length");
  EXPECT_EQ(json(parsed.token_ids), expected.at("token_ids"));
  std::istringstream lines(streamed->body);
  std::string line, content;
  bool first = true;
  while (std::getline(lines, line)) {
    if (line.rfind("data: {", 0) != 0) continue;
    const auto chunk = json::parse(line.substr(6));
    EXPECT_EQ(chunk.at("object"), "chat.completion.chunk");
    const auto& delta = chunk.at("choices").at(0).at("delta");
    EXPECT_EQ(delta.contains("role"), first) << "the role comes with the first chunk only";
    first = false;
    content += delta.at("content").get<std::string>();
  }
  EXPECT_EQ(content, expected.at("text"));
  completed_requests_ += 3;
  generated_tokens_ += 3 * kTokens;
}

TEST_F(ColocatedService, MalformedRequestsGet400AndServiceKeepsServing) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"not json", "{"},
      {"not an object", "[1, 2, 3]"},
      {"missing prompt", R"({"max_tokens": 4})"},
      {"prompt wrong type", R"({"prompt": 42})"},
      {"empty prompt", R"({"prompt": ""})"},
      {"token id out of vocabulary", R"({"prompt": [1, 2, 999999]})"},
      {"negative token id", R"({"prompt": [-5]})"},
      {"max_tokens zero", R"({"prompt": "hi", "max_tokens": 0})"},
      {"max_tokens too large", R"({"prompt": "hi", "max_tokens": 100000000})"},
      {"max_tokens wrong type", R"({"prompt": "hi", "max_tokens": "ten"})"},
      {"temperature negative", R"({"prompt": "hi", "temperature": -1})"},
      {"top_p zero", R"({"prompt": "hi", "top_p": 0})"},
      {"top_p above one", R"({"prompt": "hi", "top_p": 1.5})"},
      {"stream wrong type", R"({"prompt": "hi", "stream": "yes"})"},
      {"prompt longer than the context",
       fmt::format(R"({{"prompt": "{}"}})", std::string(5000, 'a'))},
      {"unknown field", R"({"prompt": "hi", "best_of_luck": 3})"},
  };
  for (const auto& [what, body] : bad) {
    auto res = client().Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(res) << what;
    EXPECT_EQ(res->status, 400) << what << ": " << res->body;
    const auto reply = json::parse(res->body, nullptr, false);
    ASSERT_FALSE(reply.is_discarded()) << what;
    EXPECT_TRUE(reply.contains("error") && reply["error"].contains("message")) << what;
  }
  // An unknown model is 404 model_not_found, as OpenAI answers it.
  auto wrong_model = post({{"prompt", "hi"}, {"model", "no-such-model"}});
  ASSERT_TRUE(wrong_model);
  EXPECT_EQ(wrong_model->status, 404);
  auto res = post({{"prompt", "still serving"}, {"max_tokens", 3}, {"ignore_eos", true}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ++completed_requests_;
  generated_tokens_ += 3;
}

// A streaming client hangs up after its first token: the router must abort the request on its
// instance and free its pages.
TEST_F(ColocatedService, ClientDisconnectMidStreamAbortsTheRequestAndFreesItsPages) {
  ASSERT_TRUE(stream_then_hang_up(
      service_->http_port(),
      json{
          {"prompt", "hang up on me"}, {"max_tokens", 3000}, {"ignore_eos", true}, {"stream", true}}
          .dump()));
  ++completed_requests_;  // counted by the router as finished with reason "abort"

  // Every instance rank's KV cache drains back to empty once the abort has landed.
  EXPECT_TRUE(wait_all_pages_free(*service_, kWorldSize, 60))
      << "KV pages still in use after the client hung up";
  auto res = post({{"prompt", "still serving"}, {"max_tokens", 2}, {"ignore_eos", true}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ++completed_requests_;
}

TEST_F(ColocatedService, EveryRankExportsMetricsAndCountersMatchRequestsServed) {
  int router_requests = -1;
  for (int rank = 0; rank < kWorldSize; ++rank) {
    httplib::Client c(service_->host(), service_->metrics_port_base() + rank);
    auto res = c.Get("/metrics");
    ASSERT_TRUE(res && res->status == 200) << "rank " << rank;
    if (rank == 0) {
      // Sum podserve_requests_total over finish reasons.
      std::regex line(R"(podserve_requests_total\{[^}]*\} ([0-9.e+]+))");
      double total = 0;
      for (std::sregex_iterator it(res->body.begin(), res->body.end(), line), end; it != end; ++it)
        total += std::stod((*it)[1]);
      router_requests = static_cast<int>(total);
      EXPECT_NE(res->body.find("podserve_time_to_first_token_seconds_bucket"), std::string::npos);
    } else {
      EXPECT_NE(res->body.find("podserve_iteration_seconds"), std::string::npos) << "rank " << rank;
      EXPECT_GT(
          scrape_sum(service_->metrics_port_base() + rank, "podserve_attention_seconds_count"), 0.0)
          << "rank " << rank;
    }
  }
  EXPECT_EQ(router_requests, completed_requests_.load());
  // Every token the tests received was counted; the aborted stream adds some of its own.
  EXPECT_GE(scrape_sum(service_->metrics_port_base(), "podserve_generation_tokens_total"),
            generated_tokens_.load());
}

// A real Prometheus server discovers every rank through the router's file_sd output, scrapes
// them all, and answers a TTFT quantile query with data.
TEST_F(ColocatedService, PrometheusScrapesEveryRankAndAnswersTtftQuantile) {
  const char* prometheus_bin = "/usr/bin/prometheus";
  if (!std::filesystem::exists(prometheus_bin))
    GTEST_SKIP() << "prometheus not installed (deploy/setup.sh installs it)";
  const auto serve_some = [&] {
    for (const bool stream : {false, true, false}) {
      auto res = post(
          {{"prompt", "scrape me"}, {"max_tokens", 4}, {"ignore_eos", true}, {"stream", stream}});
      ASSERT_TRUE(res && res->status == 200);
      ++completed_requests_;
    }
  };
  serve_some();
  const int port = find_free_port_range(1);
  const std::string dir = service_->dir() + "/prometheus";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/prometheus.yml")
      << fmt::format(R"(global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: podserve
    honor_labels: true
    file_sd_configs: [{{files: ['{}'], refresh_interval: 1s}}]
)",
                     service_->sd_file());
  ChildProcess prometheus;
  ASSERT_TRUE(
      prometheus.start(fmt::format("{} --config.file={}/prometheus.yml --storage.tsdb.path={}/data "
                                   "--web.listen-address=127.0.0.1:{}",
                                   prometheus_bin, dir, dir, port),
                       dir + "/prometheus.log"));
  httplib::Client api("127.0.0.1", port);
  auto query = [&](const std::string& promql) -> json {
    auto res = api.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
    if (!res || res->status != 200) return json::array();
    return json::parse(res->body).at("data").at("result");
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  json up, ttft;
  while (std::chrono::steady_clock::now() < deadline) {
    up = query("sum(up{job=\"podserve\"})");
    ttft =
        query("histogram_quantile(0.9, sum by (le) (podserve_time_to_first_token_seconds_bucket))");
    if (!up.empty() && up[0]["value"][1] == std::to_string(kWorldSize) && !ttft.empty() &&
        ttft[0]["value"][1] != "NaN") {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_FALSE(up.empty()) << "Prometheus never answered";
  EXPECT_EQ(up[0]["value"][1], std::to_string(kWorldSize)) << "targets up";
  ASSERT_FALSE(ttft.empty()) << "no TTFT quantile from Prometheus";
  const double p90 = std::stod(ttft[0]["value"][1].get<std::string>());
  EXPECT_GT(p90, 0.0);
  EXPECT_LT(p90, 120.0);

  // Every query of the Grafana dashboard is valid PromQL on this server, and the router and
  // instance panels show data once a few scrapes have seen traffic.
  for (int round = 0; round < 4; ++round) {
    serve_some();
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  const auto dashboard =
      json::parse(std::ifstream(PODSERVE_SOURCE_DIR "/deploy/grafana/podserve-ab.json"));
  int queries = 0, with_data = 0;
  for (const auto& panel : dashboard.at("panels")) {
    if (!panel.contains("targets")) continue;
    for (const auto& target : panel["targets"]) {
      std::string expr = target.at("expr").get<std::string>();
      expr = std::regex_replace(expr, std::regex(R"(\$__rate_interval)"), "1m");
      expr = std::regex_replace(expr, std::regex(R"(\$mode)"), ".*");
      auto res = api.Get("/api/v1/query", httplib::Params{{"query", expr}}, httplib::Headers{});
      ASSERT_TRUE(res);
      EXPECT_EQ(res->status, 200) << panel["title"] << ": " << expr << "\n" << res->body;
      ++queries;
      if (res->status == 200 && !json::parse(res->body)["data"]["result"].empty()) ++with_data;
    }
  }
  EXPECT_GE(queries, 20);
  EXPECT_GE(with_data, 10) << "dashboard queries with data";
  prometheus.kill_group(SIGTERM);
  prometheus.wait(20);
}

}  // namespace
}  // namespace podserve::testing
