// End-to-end with real checkpoints: each tiny Hugging Face model of tests/data/hf/ (llama,
// mistral, qwen2; made by tools/make_hf_fixtures.py) served whole with `model.path` under mpirun
// on the CPU backend (router + a TP=2 instance + a TP=1 instance). Checked over HTTP: the greedy
// tokens transformers gave for the reference prompts on both instances, text prompts through
// the checkpoint's tokenizer (/v1/tokenize, a streamed reply whose chunks are whole UTF-8 and
// add up to /v1/detokenize of its ids), a chat request through its template, and the context
// limit (max_position_embeddings) as a 400.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "tests/integration/service_process.h"
#include "tests/worker/hf_fixtures.h"

namespace podserve::testing {
namespace {

using nlohmann::json;

class HfCheckpointService : public ::testing::TestWithParam<std::string> {};

using testing_support::hf_fixture_dir;

TEST_P(HfCheckpointService, ServesTheCheckpointAsTransformersRunsIt) {
  const std::string deployment = fmt::format(R"(model: {{path: {}}}
backend: cpu
instances:
  - {{role: colocated, tp: 2, count: 1}}
  - {{role: colocated, tp: 1, count: 1}}
scheduler: {{mode: colocated, token_budget: 64, max_running: 8}}
kv_cache: {{page_size: 16, cpu_memory_mb: 8}}
)",
                                             hf_fixture_dir(GetParam()));
  ServiceUnderTest service("hf-" + GetParam(), deployment);
  ASSERT_TRUE(service.start()) << service.log();
  httplib::Client client(service.host(), service.http_port());
  client.set_read_timeout(120);
  const auto post = [&](const std::string& path, const json& body) {
    auto response = client.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(response) << path;
    return response ? json::parse(response->body, nullptr, false) : json();
  };

  const json reference = testing_support::read_hf_reference(GetParam());
  // Each prompt twice, all at once, so that both instances (TP 2 and TP 1) serve some.
  const std::size_t num_prompts = reference["prompts"].size();
  std::vector<json> replies(2 * num_prompts);
  std::vector<std::thread> senders;
  for (std::size_t r = 0; r < replies.size(); ++r) {
    senders.emplace_back([&, r] {
      httplib::Client own(service.host(), service.http_port());
      own.set_read_timeout(120);
      const json body = {{"prompt", reference["prompts"][r % num_prompts]},
                         {"max_tokens", 32},
                         {"temperature", 0},
                         {"ignore_eos", true}};
      auto response = own.Post("/v1/completions", body.dump(), "application/json");
      if (response) replies[r] = json::parse(response->body, nullptr, false);
    });
  }
  for (auto& sender : senders) sender.join();
  for (std::size_t r = 0; r < replies.size(); ++r) {
    EXPECT_EQ(replies[r]["choices"][0]["token_ids"], reference["greedy"][r % num_prompts])
        << GetParam() << " request " << r << ": " << replies[r].dump();
  }

  const std::string text = "Caf\u00e9 \U0001F600 and 123 plums";
  const json tokenized = post("/v1/tokenize", {{"prompt", text}});
  ASSERT_TRUE(tokenized.contains("tokens")) << tokenized.dump();
  EXPECT_EQ(tokenized["max_model_len"], 256);
  EXPECT_LT(tokenized["count"].get<int>(), static_cast<int>(text.size()));

  auto stream = client.Post(
      "/v1/completions",
      json{
          {"prompt", text}, {"max_tokens", 24}, {"stream", true}, {"ignore_eos", true}, {"seed", 3}}
          .dump(),
      "application/json");
  ASSERT_TRUE(stream);
  std::string streamed_text;
  json ids = json::array();
  std::size_t at = 0;
  while ((at = stream->body.find("data: {", at)) != std::string::npos) {
    const std::size_t end = stream->body.find("\n\n", at);
    const json chunk = json::parse(stream->body.substr(at + 6, end - at - 6));
    streamed_text += chunk["choices"][0]["text"].get<std::string>();
    for (const auto& id : chunk["choices"][0]["token_ids"]) ids.push_back(id);
    at = end;
  }
  ASSERT_EQ(ids.size(), 24u);
  const json detokenized = post("/v1/detokenize", {{"tokens", ids}});
  // The same text, except bytes that are not UTF-8 at all, which both replace with U+FFFD.
  EXPECT_EQ(streamed_text, detokenized["prompt"].get<std::string>());

  const json chat =
      post("/v1/chat/completions",
           {{"messages", {{{"role", "user"}, {"content", "Hello!"}}}}, {"max_tokens", 4}});
  EXPECT_EQ(chat["object"], "chat.completion") << chat.dump();

  const json too_long = post("/v1/completions", {{"prompt", "hi"}, {"max_tokens", 300}});
  EXPECT_EQ(too_long["error"]["code"], "context_length_exceeded") << too_long.dump();

  EXPECT_EQ(service.stop(), 0) << service.log();
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfCheckpointService,
                         ::testing::Values("llama", "mistral", "qwen2"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace podserve::testing
