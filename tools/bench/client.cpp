#include "tools/bench/client.h"

#include <httplib.h>

#include <chrono>
#include <random>

#include "nlohmann/json.hpp"

namespace podserve::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Incremental SSE reader: feed() bytes as they arrive; each complete `data:` event is handled.
class SseReader {
 public:
  SseReader(CompletionResult& result, TokenCounting counting, Clock::time_point start)
      : result_(result), counting_(counting), start_(start) {}

  void feed(const char* data, std::size_t size) {
    buffer_.append(data, size);
    std::size_t end;
    while ((end = buffer_.find("\n\n")) != std::string::npos) {
      handle(buffer_.substr(0, end));
      buffer_.erase(0, end + 2);
    }
  }
  bool saw_done() const { return done_; }
  const std::string& error() const { return error_; }
  // The output length: usage.completion_tokens when the server sent it, else the chunks (or
  // ids) counted.
  std::int32_t output_tokens() const { return usage_tokens_ >= 0 ? usage_tokens_ : counted_; }

 private:
  void handle(const std::string& event) {
    if (!event.starts_with("data: ")) return;  // SSE comments (keep-alive) and other fields
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      done_ = true;
      return;
    }
    const json chunk = json::parse(data, nullptr, false);
    if (chunk.is_discarded()) {
      error_ = "malformed SSE chunk";
      return;
    }
    if (chunk.contains("error")) {
      error_ = chunk["error"].value("message", "error event");
      return;
    }
    if (counting_ == TokenCounting::kUsage && chunk.contains("usage") &&
        chunk["usage"].is_object()) {
      usage_tokens_ = chunk["usage"].value("completion_tokens", 0);
    }
    const auto& choices = chunk.value("choices", json::array());
    if (choices.empty()) return;  // the usage-only chunk
    std::size_t tokens = 1;
    if (counting_ == TokenCounting::kTokenIds) {
      tokens = choices[0].value("token_ids", json::array()).size();
      if (tokens == 0) return;
    }
    const double now = seconds_since(start_);
    if (counted_ == 0) {
      result_.ttft_s = now;
    } else {
      result_.itl_s.push_back(now - last_token_s_);
    }
    last_token_s_ = now;
    counted_ += static_cast<std::int32_t>(tokens);
  }

  CompletionResult& result_;
  const TokenCounting counting_;
  const Clock::time_point start_;
  std::string buffer_;
  std::string error_;
  double last_token_s_ = 0.0;
  std::int32_t counted_ = 0;
  std::int32_t usage_tokens_ = -1;
  bool done_ = false;
};

}  // namespace

std::vector<TokenId> random_prompt(std::int32_t length, std::int32_t vocab_limit,
                                   std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<TokenId> token(0, vocab_limit - 1);
  std::vector<TokenId> prompt(static_cast<std::size_t>(length));
  for (TokenId& id : prompt) id = token(rng);
  return prompt;
}

CompletionResult send_completion(const std::string& url, const CompletionSpec& spec,
                                 int timeout_s) {
  CompletionResult result;
  httplib::Client client(url);
  client.set_connection_timeout(timeout_s);
  client.set_read_timeout(timeout_s);
  client.set_keep_alive(false);

  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.set_header("Content-Type", "application/json");
  json body_json = {
      {"prompt", spec.prompt_text.empty() ? json(spec.prompt) : json(spec.prompt_text)},
      {"max_tokens", spec.max_tokens},
      {"temperature", 0},
      {"stream", spec.stream}};
  if (spec.ignore_eos) body_json["ignore_eos"] = true;
  if (!spec.model.empty()) body_json["model"] = spec.model;
  if (spec.stream) body_json["stream_options"] = {{"include_usage", true}};
  request.body = body_json.dump();
  std::string body;
  const Clock::time_point start = Clock::now();
  SseReader reader(result, spec.counting, start);
  request.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
    body.append(data, size);
    if (spec.stream) reader.feed(data, size);
    return true;
  };
  const httplib::Result response = client.send(request);
  result.e2e_s = seconds_since(start);
  if (!response) {
    result.error = "connection: " + httplib::to_string(response.error());
    return result;
  }
  result.http_status = response->status;
  if (body.empty()) body = response->body;
  if (response->status != 200) {
    const json error = json::parse(body, nullptr, false);
    result.error = "HTTP " + std::to_string(response->status) +
                   (error.is_object() && error.contains("error")
                        ? ": " + error["error"].value("message", std::string())
                        : std::string());
    return result;
  }
  if (spec.stream) {
    if (!reader.error().empty()) {
      result.error = reader.error();
    } else if (!reader.saw_done()) {
      result.error = "stream ended without [DONE]";
    } else {
      result.output_tokens = reader.output_tokens();
      result.ok = true;
    }
    return result;
  }
  const json completion = json::parse(body, nullptr, false);
  if (completion.is_discarded() || !completion.contains("usage")) {
    result.error = "malformed completion body";
    return result;
  }
  result.output_tokens = completion["usage"].value("completion_tokens", 0);
  result.ok = true;
  return result;
}

}  // namespace podserve::bench
