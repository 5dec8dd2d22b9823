// Loads a workload (a slice of an Azure-format trace, or fixed synthetic lengths) and replays it
// against an OpenAI-compatible server: each request is sent at its arrival
// time (from the call's start) on its own thread, at most `concurrency_limit` in flight (later
// arrivals wait for a slot, and are late by that much), with a prompt of random token ids (or
// text of that many tokens, with text_prompts) seeded by prompt_seed + its index (the same
// workload gives the same prompts). Blocking: returns once
// every request has finished; thread-safe (no shared state between calls).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "tools/bench/client.h"
#include "tools/bench/text_prompts.h"
#include "tools/bench/trace.h"

namespace podserve::bench {

struct WorkloadSource {
  std::string trace = "tools/data/azure-llm-2023-code.csv";
  std::size_t offset = 0;        // first data row
  std::size_t num_requests = 0;  // 0: the whole trace (synthetic: 100)
  bool synthetic = false;        // num_requests requests of the lengths below, no trace read
  std::int32_t synthetic_prompt = 512;
  std::int32_t synthetic_output = 128;
};
// The requests with their recorded arrivals (synthetic: all at 0), lengths as read. Errors name
// the file or the bad line.
Result<std::vector<TraceRequest>> load_workload(const WorkloadSource& source);

struct ReplayOptions {
  std::string url = "http://127.0.0.1:8000";
  bool stream = true;
  int concurrency_limit = 256;
  std::int32_t vocab_limit = 256;  // prompt ids in [0, vocab_limit)
  std::uint64_t prompt_seed = 1;
  int timeout_s = 600;  // per read
  std::string model;    // "model" of each request; empty: not sent
  bool ignore_eos = true;
  TokenCounting counting = TokenCounting::kUsage;
  std::function<void()> on_finished;  // after each request (any thread); may be empty
  // Text prompts of each request's token length instead of random ids (podserve-bench
  // --tokenizer), seeded as the ids would be; must outlive the call. Null: ids.
  const TextPrompts* text_prompts = nullptr;
};

struct ReplayResult {
  std::vector<CompletionResult> results;  // [workload.size()], in workload order
  double duration_s = 0.0;                // the first send to the last response
};

ReplayResult replay(const std::vector<TraceRequest>& workload, const ReplayOptions& options);

}  // namespace podserve::bench
