// Router over real HTTP (httplib client) with a fake control plane (fake_instances.h): response
// shapes, SSE streaming, rejections, admission limits, disconnect -> cancel, drain, metrics.
#include "router/router.h"

#include <httplib.h>

#include <atomic>
#include <set>
#include <thread>

#include "core/hf_tokenizer.h"
#include "fake_instances.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"

namespace podserve {
namespace {

using nlohmann::json;
using testing::FakeInstances;
using namespace std::chrono_literals;

// Polls `condition` (state owned by another thread, e.g. a metric the HTTP logger updates after
// the response was sent) for up to 5 s.
bool eventually(const std::function<bool()>& condition) {
  for (int i = 0; i < 500; ++i) {
    if (condition()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return condition();
}

struct SseEvents {
  std::vector<json> chunks;
  bool done = false;
};

SseEvents parse_sse(const std::string& body) {
  SseEvents events;
  std::size_t start = 0;
  while (start < body.size()) {
    const std::size_t end = body.find("\n\n", start);
    EXPECT_NE(end, std::string::npos) << "unterminated SSE event";
    if (end == std::string::npos) break;
    const std::string event = body.substr(start, end - start);
    start = end + 2;
    if (event.starts_with(":")) continue;
    EXPECT_TRUE(event.starts_with("data: ")) << event;
    const std::string data = event.substr(6);
    EXPECT_FALSE(events.done) << "event after [DONE]";
    if (data == "[DONE]") {
      events.done = true;
    } else {
      events.chunks.push_back(json::parse(data));
    }
  }
  return events;
}

class RouterTest : public ::testing::Test {
 protected:
  void start(int num_instances = 2, RouterPolicy policy = RouterPolicy::kRoundRobin,
             int max_queue = 64, std::chrono::milliseconds token_interval = 2ms) {
    std::vector<InstanceInfo> instances;
    for (int i = 0; i < num_instances; ++i) {
      instances.push_back(
          {.id = i, .role = InstanceRole::kColocated, .tp = 1, .leader_rank = 1 + i});
    }
    start_with(std::move(instances), SchedulerMode::kColocated, policy, max_queue, token_interval);
  }
  // Disaggregated: instances 0..num_prefill-1 prefill, the next num_decode decode.
  void start_disaggregated(int num_prefill, int num_decode, RouterPolicy policy) {
    std::vector<InstanceInfo> instances;
    for (int i = 0; i < num_prefill + num_decode; ++i) {
      instances.push_back({.id = i,
                           .role = i < num_prefill ? InstanceRole::kPrefill : InstanceRole::kDecode,
                           .tp = 1,
                           .leader_rank = 1 + i});
    }
    start_with(std::move(instances), SchedulerMode::kDisaggregated, policy, 64, 2ms);
  }
  void start_with(std::vector<InstanceInfo> instances, SchedulerMode mode, RouterPolicy policy,
                  int max_queue, std::chrono::milliseconds token_interval) {
    if (model_path_.empty()) {
      model_ = *model_preset("tiny");
    } else {
      model_ = *model_config_from_hf_json(model_path_ + "/config.json");
      config_.model.path = model_path_;
      config_.router.served_model_name = "tiny";
    }
    config_.scheduler.mode = mode;
    config_.router.listen = "127.0.0.1:0";
    config_.router.policy = policy;
    config_.router.max_queue = max_queue;
    config_.router.http_threads = 8;
    config_.router.max_tokens_limit = 128;
    config_.router.drain_timeout_s = 5;
    config_.model.max_model_len = 256;
    fake_ = std::make_unique<FakeInstances>(instances, model_.eos_token_id, token_interval);
    metrics_ = std::make_unique<RouterMetrics>(make_router_metrics(
        registry_, {.mode = "colocated", .instance = "router", .role = "router", .rank = 0}));
    router_ = std::make_unique<Router>(config_, model_, *fake_, *metrics_);
    fake_->run([this](int instance, std::span<const TokenOutput> outputs) {
      router_->on_outputs(instance, outputs);
    });
    ASSERT_TRUE(router_->start().ok());
    ASSERT_GT(router_->port(), 0);
  }
  void TearDown() override {
    if (router_) router_->stop();
    if (fake_) fake_->shutdown();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", router_->port());
    c.set_read_timeout(10);
    return c;
  }
  httplib::Result post(const json& body) const {
    return client().Post("/v1/completions", body.dump(), "application/json");
  }

  std::string model_path_;  // a Hugging Face checkpoint directory; empty: the tiny preset
  ModelConfig model_;
  ServiceConfig config_;
  prometheus::Registry registry_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<FakeInstances> fake_;
  std::unique_ptr<Router> router_;
};

TEST_F(RouterTest, NonStreamingCompletionIsWellFormed) {
  start();
  const auto response = post({{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 5}});
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const json body = json::parse(response->body);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny");
  EXPECT_TRUE(body["id"].get<std::string>().starts_with("cmpl-"));
  EXPECT_GT(body["created"].get<std::int64_t>(), 1'600'000'000);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length");
  std::vector<TokenId> expected;
  std::string expected_text;
  for (int i = 0; i < 5; ++i) {
    expected.push_back(FakeInstances::token_at(model_.bos_token_id, i));
    expected_text += static_cast<char>(expected.back());
  }
  EXPECT_EQ(choice["token_ids"].get<std::vector<TokenId>>(), expected);
  EXPECT_EQ(choice["text"], expected_text);
  EXPECT_EQ(body["usage"]["prompt_tokens"], 6);  // BOS + 5 bytes
  EXPECT_EQ(body["usage"]["completion_tokens"], 5);
  EXPECT_EQ(body["usage"]["total_tokens"], 11);

  const auto submitted = fake_->submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0].request.prompt.front(), model_.bos_token_id);
  EXPECT_EQ(submitted[0].request.sampling.max_tokens, 5);
}

TEST_F(RouterTest, TokenizeAndDetokenizeWithTheByteTokenizer) {
  start();
  const auto tokenized =
      client().Post("/v1/tokenize", R"({"prompt": "hi\u00e9"})", "application/json");
  ASSERT_TRUE(tokenized);
  ASSERT_EQ(tokenized->status, 200) << tokenized->body;
  const json body = json::parse(tokenized->body);
  EXPECT_EQ(body["tokens"].get<std::vector<TokenId>>(),
            (std::vector<TokenId>{model_.bos_token_id, 'h', 'i', 0xC3, 0xA9}));
  EXPECT_EQ(body["count"], 5);
  EXPECT_EQ(body["max_model_len"], 256);
  const auto text =
      client().Post("/v1/detokenize", R"({"tokens": [104, 105, 195, 169]})", "application/json");
  ASSERT_TRUE(text);
  ASSERT_EQ(text->status, 200) << text->body;
  EXPECT_EQ(json::parse(text->body)["prompt"], "hi\u00e9");
  const auto bad = client().Post("/v1/detokenize", R"({"tokens": [-1]})", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
}

// model.path: the checkpoint's tokenizer.json encodes text prompts (after BOS) and
// /v1/tokenize, and /v1/detokenize decodes with it.
TEST_F(RouterTest, CheckpointTokenizerEncodesPromptsAndTokenizes) {
  model_path_ = PODSERVE_SOURCE_DIR "/tests/data/hf/llama";
  start();
  auto tokenizer = HfTokenizer::load(model_path_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const std::string text = "Caf\u00e9 au lait, 12345 times<|eot_id|>";
  std::vector<TokenId> expected{model_.bos_token_id};
  for (TokenId id : (*tokenizer)->encode(text)) expected.push_back(id);
  ASSERT_LT(expected.size(), text.size());  // merged: not one id per byte

  const auto tokenized =
      client().Post("/v1/tokenize", json{{"prompt", text}}.dump(), "application/json");
  ASSERT_TRUE(tokenized);
  ASSERT_EQ(tokenized->status, 200) << tokenized->body;
  EXPECT_EQ(json::parse(tokenized->body)["tokens"].get<std::vector<TokenId>>(), expected);

  const auto response = post({{"prompt", text}, {"max_tokens", 3}});
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(fake_->submitted().at(0).request.prompt, expected);

  const std::vector<TokenId> ids(expected.begin() + 1, expected.end());
  const auto text_back =
      client().Post("/v1/detokenize", json{{"tokens", ids}}.dump(), "application/json");
  ASSERT_TRUE(text_back);
  ASSERT_EQ(text_back->status, 200) << text_back->body;
  EXPECT_EQ(json::parse(text_back->body)["prompt"], "Caf\u00e9 au lait, 12345 times");
}

// model.path with a chat template: chat prompts are the template's rendering (its BOS text
// included, no extra BOS id) through the checkpoint's tokenizer.
TEST_F(RouterTest, CheckpointChatTemplateRendersChatPrompts) {
  model_path_ = PODSERVE_SOURCE_DIR "/tests/data/hf/llama";
  start();
  auto tokenizer = HfTokenizer::load(model_path_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const auto response =
      client().Post("/v1/chat/completions",
                    json{{"messages",
                          {{{"role", "system"}, {"content", "  Be brief. "}},
                           {{"role", "user"}, {"content", "Hi \u00e9"}, {"name", "ann"}}}},
                         {"max_tokens", 2}}
                        .dump(),
                    "application/json");
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  // tests/data/hf/tokenizer/tokenizer_config.json's template: BOS, then per message a header,
  // the trimmed content and <|eot_id|>, then the assistant header.
  const std::string rendered =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi \u00e9<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  const std::vector<TokenId> expected = (*tokenizer)->encode(rendered);
  EXPECT_EQ(expected.front(), *(*tokenizer)->token_id("<|begin_of_text|>"));
  EXPECT_EQ(fake_->submitted().at(0).request.prompt, expected);
}

TEST_F(RouterTest, StopFinishDropsEosFromTextButCountsIt) {
  start();
  const auto response =
      post({{"prompt", {FakeInstances::kStopPromptToken, 40}}, {"max_tokens", 10}, {"seed", 42}});
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const json body = json::parse(response->body);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["token_ids"].size(), 2u);
  EXPECT_EQ(body["choices"][0]["token_ids"][1], model_.eos_token_id);
  EXPECT_EQ(body["choices"][0]["text"].get<std::string>().size(), 1u);
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
  EXPECT_EQ(fake_->submitted().at(0).request.sampling.seed, 42u);
}

TEST_F(RouterTest, StreamingSendsOneChunkPerTokenThenDone) {
  start();
  const int max_tokens = 12;
  const auto response = post(
      {{"prompt", {3, 4, 5}}, {"max_tokens", max_tokens}, {"stream", true}, {"ignore_eos", true}});
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200);
  EXPECT_EQ(response->get_header_value("Content-Type"), "text/event-stream");
  const SseEvents events = parse_sse(response->body);
  EXPECT_TRUE(events.done);
  ASSERT_EQ(events.chunks.size(), static_cast<std::size_t>(max_tokens));
  for (int i = 0; i < max_tokens; ++i) {
    const json& chunk = events.chunks[i];
    EXPECT_EQ(chunk["object"], "text_completion");
    ASSERT_EQ(chunk["choices"][0]["token_ids"].size(), 1u);
    EXPECT_EQ(chunk["choices"][0]["token_ids"][0], FakeInstances::token_at(3, i));
    const bool last = i + 1 == max_tokens;
    EXPECT_EQ(chunk["choices"][0]["finish_reason"], last ? json("length") : json(nullptr));
    EXPECT_EQ(chunk.contains("usage"), last);
  }
  EXPECT_EQ(events.chunks.back()["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(events.chunks.back()["usage"]["completion_tokens"], max_tokens);
  EXPECT_TRUE(fake_->submitted().at(0).request.sampling.ignore_eos);
}

// stream_options.include_usage: OpenAI's usage-only chunk (empty choices) after the last token.
TEST_F(RouterTest, IncludeUsageAddsAUsageOnlyChunkBeforeDone) {
  start();
  const auto response = post({{"prompt", {3, 4, 5}},
                              {"max_tokens", 4},
                              {"stream", true},
                              {"stream_options", {{"include_usage", true}}}});
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200);
  const SseEvents events = parse_sse(response->body);
  EXPECT_TRUE(events.done);
  ASSERT_EQ(events.chunks.size(), 5u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(events.chunks[i]["choices"].size(), 1u);
  const json& usage = events.chunks.back();
  EXPECT_EQ(usage["object"], "text_completion");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 4);
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

// The per-request phase histograms: queue (arrival to scheduled), prefill (scheduled to the first
// output), decode (first to last token), prompt and generation lengths.
TEST_F(RouterTest, PhaseMetricsFollowEachRequest) {
  start(/*num_instances=*/1);
  fake_->pause();
  std::thread client_thread([&] {
    const auto response = post({{"prompt", {9, 8, 7, 6, 5}}, {"max_tokens", 6}, {"stream", true}});
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
  });
  ASSERT_TRUE(
      fake_->wait_for(5s, [](const auto& submitted, const auto&) { return !submitted.empty(); }));
  router_->on_scheduled(0, fake_->submitted()[0].request.id);
  std::this_thread::sleep_for(30ms);  // the prefill lasts at least this long
  fake_->resume();
  client_thread.join();
  const auto histogram = [](prometheus::Histogram& h) { return h.Collect().histogram; };
  EXPECT_EQ(histogram(metrics_->request_queue_time).sample_count, 1u);
  EXPECT_EQ(histogram(metrics_->request_prefill_time).sample_count, 1u);
  EXPECT_GE(histogram(metrics_->request_prefill_time).sample_sum, 0.030);
  EXPECT_EQ(histogram(metrics_->request_decode_time).sample_count, 1u);
  // Six tokens 2 ms apart: at least 5 gaps, and no longer than the whole request.
  EXPECT_GT(histogram(metrics_->request_decode_time).sample_sum, 0.0);
  EXPECT_LT(histogram(metrics_->request_decode_time).sample_sum,
            histogram(metrics_->e2e_request_latency).sample_sum);
  EXPECT_EQ(histogram(metrics_->request_prompt_tokens).sample_count, 1u);
  EXPECT_EQ(histogram(metrics_->request_prompt_tokens).sample_sum, 5.0);
  EXPECT_EQ(histogram(metrics_->request_generation_tokens).sample_sum, 6.0);

  // Without a scheduled event there is no prefill time (the queue time then ends at the first
  // output, prefill included).
  const auto unscheduled = post({{"prompt", {1, 2}}, {"max_tokens", 2}});
  ASSERT_TRUE(unscheduled);
  EXPECT_EQ(histogram(metrics_->request_queue_time).sample_count, 2u);
  EXPECT_EQ(histogram(metrics_->request_prefill_time).sample_count, 1u);
  EXPECT_EQ(histogram(metrics_->request_decode_time).sample_count, 2u);
  EXPECT_EQ(histogram(metrics_->request_prompt_tokens).sample_sum, 7.0);
}

// A stop string ends the reply just before it (finish_reason stop) and cancels the request on
// its instance, which would otherwise generate up to max_tokens; a stream holds back the bytes
// that could begin a stop string and never sends any of it.
TEST_F(RouterTest, StopStringEndsTheReplyBeforeItAndCancelsOnTheInstance) {
  start();
  // Prompt token 185: the fake's first 16 tokens are 20, 27, ..., 125, ASCII (JSON carries them
  // unchanged).
  std::string full;
  for (int i = 0; i < 16; ++i) full += static_cast<char>(FakeInstances::token_at(185, i));
  const std::string stop = full.substr(6, 3);
  const std::string expected = full.substr(0, full.find(stop));
  ASSERT_LE(expected.size(), 6u);
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "blocking");
    const auto response = post({{"prompt", {185, 4, 5}},
                                {"max_tokens", 40},
                                {"ignore_eos", true},
                                {"stop", {"never appears", stop}},
                                {"stream", stream}});
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    std::string text;
    json last_choice;
    if (stream) {
      const SseEvents events = parse_sse(response->body);
      EXPECT_TRUE(events.done);
      ASSERT_FALSE(events.chunks.empty());
      for (const json& chunk : events.chunks)
        text += chunk["choices"][0]["text"].get<std::string>();
      last_choice = events.chunks.back()["choices"][0];
    } else {
      last_choice = json::parse(response->body)["choices"][0];
      text = last_choice["text"].get<std::string>();
    }
    EXPECT_EQ(text, expected);
    EXPECT_EQ(last_choice["finish_reason"], "stop");
    const std::size_t requests = stream ? 2 : 1;
    ASSERT_TRUE(fake_->wait_for(5s, [&](const auto&, const auto& cancelled) {
      return cancelled.size() == requests;
    })) << "the instance was not told to stop";
    EXPECT_EQ(fake_->cancelled().back().second, fake_->submitted().back().request.id);
  }
}

TEST_F(RouterTest, MalformedRequestsGet400AndTheServerKeepsServing) {
  start();
  const std::vector<std::string> bad_bodies = {
      R"({"prompt": )",
      R"("just a string")",
      R"({})",
      R"({"prompt": ""})",
      R"({"prompt": {"text": "a"}})",
      R"({"prompt": [1, 99999]})",
      R"({"prompt": [[1, 2]]})",
      R"({"prompt": "a", "max_tokens": 0})",
      R"({"prompt": "a", "max_tokens": 100000})",
      R"({"prompt": "a", "max_tokens": "5"})",
      R"({"prompt": "a", "temperature": -1})",
      R"({"prompt": "a", "top_p": 1.5})",
      R"({"prompt": "a", "seed": 1.5})",
      R"({"prompt": "a", "ignore_eos": 1})",
      R"({"prompt": "a", "bogus": true})",
      R"({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]})",
      std::string(R"({"prompt": ")") + std::string(300, 'x') + R"("})",
  };
  for (const std::string& bad : bad_bodies) {
    const auto response = client().Post("/v1/completions", bad, "application/json");
    ASSERT_TRUE(response) << bad;
    EXPECT_EQ(response->status, 400) << bad;
    const json body = json::parse(response->body, nullptr, false);
    ASSERT_TRUE(body.contains("error")) << response->body;
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"].contains("param"));
    EXPECT_TRUE(body["error"].contains("code"));
  }
  const auto good = post({{"prompt", "ok"}, {"max_tokens", 2}});
  ASSERT_TRUE(good);
  EXPECT_EQ(good->status, 200);
  EXPECT_TRUE(fake_->submitted().size() == 1u);
  EXPECT_TRUE(eventually([&] {
    return metrics_->http_requests(400).Value() == static_cast<double>(bad_bodies.size());
  }));
}

TEST_F(RouterTest, RoutesModelsHealthAndErrors) {
  start();
  auto c = client();
  const auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "tiny");
  // Not ready until every instance's leader has reported in (loaded, looping).
  const auto starting = c.Get("/health");
  ASSERT_TRUE(starting);
  EXPECT_EQ(starting->status, 503);
  EXPECT_EQ(json::parse(starting->body)["status"], "starting");
  router_->on_load(0, {});
  router_->on_load(0, {});  // a second report of the same instance counts once
  EXPECT_EQ(json::parse(c.Get("/health")->body)["instances_ready"], 1);
  router_->on_load(1, {});
  const auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  EXPECT_EQ(json::parse(health->body)["instances"], 2);

  const auto unknown = c.Get("/v1/chat/nothing");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
  EXPECT_TRUE(json::parse(unknown->body).contains("error"));
  const auto wrong_method = c.Get("/v1/completions");
  ASSERT_TRUE(wrong_method);
  EXPECT_EQ(wrong_method->status, 405);
  EXPECT_TRUE(json::parse(wrong_method->body).contains("error"));
  const auto wrong_model = post({{"model", "other"}, {"prompt", "a"}});
  ASSERT_TRUE(wrong_model);
  EXPECT_EQ(wrong_model->status, 404);
  EXPECT_EQ(json::parse(wrong_model->body)["error"]["code"], "model_not_found");
}

TEST_F(RouterTest, RejectsWith429PastMaxQueue) {
  start(/*num_instances=*/1, RouterPolicy::kRoundRobin, /*max_queue=*/2);
  fake_->pause();
  std::vector<std::thread> clients;
  std::atomic<int> ok_count{0};
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&] {
      const auto response = post({{"prompt", "a"}, {"max_tokens", 3}});
      if (response && response->status == 200) ++ok_count;
    });
  }
  ASSERT_TRUE(eventually([&] { return router_->in_flight() == 2; }));
  const auto rejected = post({{"prompt", "a"}, {"max_tokens", 3}});
  ASSERT_TRUE(rejected);
  EXPECT_EQ(rejected->status, 429);
  EXPECT_EQ(json::parse(rejected->body)["error"]["code"], "rate_limit_exceeded");
  fake_->resume();
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok_count.load(), 2);
  EXPECT_EQ(router_->in_flight(), 0u);
  EXPECT_EQ(post({{"prompt", "a"}, {"max_tokens", 1}})->status, 200);
}

TEST_F(RouterTest, ClientDisconnectMidStreamCancelsOnTheInstance) {
  start(/*num_instances=*/2, RouterPolicy::kRoundRobin, 64, /*token_interval=*/20ms);
  int chunks_seen = 0;
  auto c = client();
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.body = json{{"prompt", "abc"}, {"max_tokens", 100}, {"stream", true}}.dump();
  request.set_header("Content-Type", "application/json");
  request.content_receiver = [&](const char*, std::size_t, std::uint64_t, std::uint64_t) {
    return ++chunks_seen < 3;
  };
  const auto response = c.send(request);
  EXPECT_FALSE(response);  // the client cancelled the transfer
  ASSERT_EQ(fake_->submitted().size(), 1u);
  const RequestId id = fake_->submitted()[0].request.id;
  const int instance = fake_->submitted()[0].instance;
  EXPECT_TRUE(
      fake_->wait_for(5s, [&](const auto&, const auto& cancelled) { return !cancelled.empty(); }));
  const auto cancelled = fake_->cancelled();
  ASSERT_EQ(cancelled.size(), 1u);
  EXPECT_EQ(cancelled[0], std::make_pair(instance, id));
  EXPECT_TRUE(eventually([&] { return router_->in_flight() == 0; }));
  EXPECT_EQ(metrics_->requests_finished(FinishReason::kAbort).Value(), 1);
  EXPECT_EQ(metrics_->requests_running.Value(), 0);
  EXPECT_EQ(metrics_->requests_waiting.Value(), 0);
}

TEST_F(RouterTest, PolicySpreadsRequestsOverInstances) {
  start(/*num_instances=*/3, RouterPolicy::kRoundRobin);
  for (int i = 0; i < 6; ++i) ASSERT_EQ(post({{"prompt", "a"}, {"max_tokens", 1}})->status, 200);
  std::vector<int> instances;
  for (const auto& s : fake_->submitted()) instances.push_back(s.instance);
  EXPECT_EQ(instances, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST_F(RouterTest, ConcurrentRequestsAreAllServedAndCounted) {
  start(/*num_instances=*/2, RouterPolicy::kLeastOutstandingTokens);
  constexpr int kClients = 6;
  constexpr int kPerClient = 4;
  std::atomic<int> generated{0};
  std::atomic<int> prompt{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < kPerClient; ++i) {
        const bool stream = (t + i) % 2 == 0;
        const int max_tokens = 1 + (t * 7 + i * 3) % 9;
        const auto response = post(
            {{"prompt", std::string(1 + t, 'q')}, {"max_tokens", max_tokens}, {"stream", stream}});
        ASSERT_TRUE(response);
        ASSERT_EQ(response->status, 200);
        generated += max_tokens;
        prompt += 2 + t;
        if (stream) {
          EXPECT_TRUE(parse_sse(response->body).done);
        } else {
          EXPECT_EQ(json::parse(response->body)["usage"]["completion_tokens"], max_tokens);
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  constexpr double kRequests = kClients * kPerClient;
  EXPECT_EQ(metrics_->requests_finished(FinishReason::kLength).Value(), kRequests);
  EXPECT_EQ(metrics_->generation_tokens.Value(), generated.load());
  EXPECT_EQ(metrics_->prompt_tokens.Value(), prompt.load());
  EXPECT_EQ(metrics_->time_to_first_token.Collect().histogram.sample_count, kRequests);
  EXPECT_EQ(metrics_->e2e_request_latency.Collect().histogram.sample_count, kRequests);
  EXPECT_EQ(metrics_->request_queue_time.Collect().histogram.sample_count, kRequests);
  EXPECT_EQ(metrics_->inter_token_latency.Collect().histogram.sample_count,
            generated.load() - kRequests);
  EXPECT_TRUE(eventually([&] { return metrics_->http_requests(200).Value() == kRequests; }));
  EXPECT_EQ(metrics_->requests_running.Value(), 0);
  EXPECT_EQ(metrics_->requests_waiting.Value(), 0);
}

TEST_F(RouterTest, DrainRejectsNewRequestsAndWaitsForInFlight) {
  start(/*num_instances=*/1, RouterPolicy::kRoundRobin, 64, /*token_interval=*/10ms);
  std::thread in_flight([&] {
    const auto response = post({{"prompt", "a"}, {"max_tokens", 20}});
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
  });
  ASSERT_TRUE(eventually([&] { return router_->in_flight() == 1; }));
  router_->begin_drain();
  EXPECT_EQ(client().Get("/health")->status, 503);
  EXPECT_EQ(post({{"prompt", "a"}})->status, 503);
  EXPECT_TRUE(router_->wait_drained());
  EXPECT_EQ(router_->in_flight(), 0u);
  in_flight.join();
}

TEST_F(RouterTest, StopAbortsRequestsInFlight) {
  start(/*num_instances=*/1);
  fake_->pause();
  std::thread waiting([&] {
    const auto response = post({{"prompt", "a"}, {"max_tokens", 4}});
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 503);
  });
  ASSERT_TRUE(eventually([&] { return router_->in_flight() == 1; }));
  router_->stop();
  waiting.join();
  EXPECT_EQ(fake_->cancelled().size(), 1u);
  EXPECT_EQ(metrics_->requests_finished(FinishReason::kAbort).Value(), 1);
}

TEST_F(RouterTest, DisaggregatedRequestsGetAPairAndTokensFromBoth) {
  start_disaggregated(/*num_prefill=*/2, /*num_decode=*/2, RouterPolicy::kLeastOutstandingTokens);
  for (int i = 0; i < 4; ++i) {
    const auto response = post({{"prompt", "hello"}, {"max_tokens", 5}});
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    const json body = json::parse(response->body);
    EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    std::vector<TokenId> expected;
    for (int index = 0; index < 5; ++index) {
      expected.push_back(FakeInstances::token_at(model_.bos_token_id, index));  // prompt: BOS first
    }
    EXPECT_EQ(body["choices"][0]["token_ids"].get<std::vector<TokenId>>(), expected);
  }
  std::set<int> prefill_used, decode_used;
  for (const auto& submitted : fake_->submitted()) {
    EXPECT_GE(submitted.instance, 0);
    EXPECT_LT(submitted.instance, 2);
    EXPECT_GE(submitted.decode_instance, 2);
    EXPECT_LT(submitted.decode_instance, 4);
    prefill_used.insert(submitted.instance);
    decode_used.insert(submitted.decode_instance);
  }
  EXPECT_EQ(prefill_used.size(), 2u);  // idle ties spread over each side
  EXPECT_EQ(decode_used.size(), 2u);
}

TEST_F(RouterTest, DisaggregatedOutputsAreDeliveredInIndexOrder) {
  start_disaggregated(1, 1, RouterPolicy::kLeastOutstandingTokens);
  fake_->pause();
  std::thread client_thread([&] {
    const auto response = post({{"prompt", "abc"}, {"max_tokens", 3}});
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    const json body = json::parse(response->body);
    EXPECT_EQ(body["choices"][0]["token_ids"].get<std::vector<TokenId>>(),
              (std::vector<TokenId>{70, 71, 72}));
    EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  });
  ASSERT_TRUE(
      fake_->wait_for(5s, [](const auto& submitted, const auto&) { return !submitted.empty(); }));
  const RequestId id = fake_->submitted()[0].request.id;
  // The decode instance's tokens overtake the prefill instance's first token.
  const std::vector<TokenOutput> from_decode = {
      {.id = id, .token = 71, .index = 1},
      {.id = id, .token = 72, .index = 2, .finished = true, .reason = FinishReason::kLength}};
  router_->on_outputs(1, from_decode);
  EXPECT_EQ(router_->in_flight(), 1u);
  const std::vector<TokenOutput> from_prefill = {{.id = id, .token = 70, .index = 0}};
  router_->on_outputs(0, from_prefill);
  client_thread.join();
  EXPECT_TRUE(eventually([&] { return router_->in_flight() == 0; }));
  EXPECT_EQ(metrics_->requests_running.Value(), 0);
  EXPECT_EQ(metrics_->requests_waiting.Value(), 0);
}

TEST_F(RouterTest, DisaggregatedCancelReachesBothInstances) {
  start_disaggregated(2, 1, RouterPolicy::kRoundRobin);
  fake_->pause();
  std::thread client_thread([&] {
    const auto response = post({{"prompt", "abc"}, {"max_tokens", 50}});
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 503);  // aborted by stop()
  });
  ASSERT_TRUE(
      fake_->wait_for(5s, [](const auto& submitted, const auto&) { return !submitted.empty(); }));
  const auto submitted = fake_->submitted()[0];
  router_->stop();
  client_thread.join();
  const auto cancelled = fake_->cancelled();
  ASSERT_EQ(cancelled.size(), 2u);
  EXPECT_EQ(cancelled[0], std::make_pair(submitted.instance, submitted.request.id));
  EXPECT_EQ(cancelled[1], std::make_pair(submitted.decode_instance, submitted.request.id));
  EXPECT_EQ(submitted.decode_instance, 2);
}

}  // namespace
}  // namespace podserve
