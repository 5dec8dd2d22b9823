#include "tools/bench/replay.h"

#include <chrono>
#include <fstream>
#include <semaphore>
#include <thread>

namespace podserve::bench {

Result<std::vector<TraceRequest>> load_workload(const WorkloadSource& source) {
  if (source.synthetic) {
    return synthetic_requests(source.num_requests == 0 ? 100 : source.num_requests,
                              source.synthetic_prompt, source.synthetic_output);
  }
  std::ifstream csv(source.trace);
  if (!csv) return invalid_argument("cannot open trace " + source.trace);
  return parse_azure_trace(csv, source.offset, source.num_requests);
}

ReplayResult replay(const std::vector<TraceRequest>& workload, const ReplayOptions& options) {
  using Clock = std::chrono::steady_clock;
  ReplayResult replayed;
  replayed.results.resize(workload.size());
  std::counting_semaphore<> slots(options.concurrency_limit);
  std::vector<std::jthread> workers;
  workers.reserve(workload.size());
  const Clock::time_point start = Clock::now();
  for (std::size_t i = 0; i < workload.size(); ++i) {
    std::this_thread::sleep_until(start +
                                  std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(workload[i].arrival_s)));
    slots.acquire();
    CompletionSpec spec{.max_tokens = workload[i].output_tokens,
                        .stream = options.stream,
                        .model = options.model,
                        .ignore_eos = options.ignore_eos,
                        .counting = options.counting};
    if (options.text_prompts != nullptr) {
      spec.prompt_text =
          options.text_prompts->make(workload[i].prompt_tokens, options.prompt_seed + i);
    } else {
      spec.prompt =
          random_prompt(workload[i].prompt_tokens, options.vocab_limit, options.prompt_seed + i);
    }
    workers.emplace_back([&, i, spec = std::move(spec)] {
      replayed.results[i] = send_completion(options.url, spec, options.timeout_s);
      slots.release();
      if (options.on_finished) options.on_finished();
    });
  }
  for (auto& worker : workers) worker.join();
  replayed.duration_s = std::chrono::duration<double>(Clock::now() - start).count();
  return replayed;
}

}  // namespace podserve::bench
