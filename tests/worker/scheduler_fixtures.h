// Helpers shared by the scheduler tests (no model): a scheduler config and deterministic
// requests whose tokens never collide with the EOS id.
#pragma once

#include <cstdint>

#include "core/request.h"
#include "worker/scheduler.h"

namespace podserve::testing_support {

inline constexpr TokenId kEos = 2;

inline SchedulerConfig scheduler_config(std::int32_t token_budget, std::int32_t max_running,
                                        std::int32_t page_size, std::int32_t num_pages,
                                        std::int32_t max_model_len) {
  SchedulerConfig c;
  c.token_budget = token_budget;
  c.max_running = max_running;
  c.page_size = page_size;
  c.num_pages = num_pages;
  c.max_model_len = max_model_len;
  c.eos_token_ids = {kEos};
  return c;
}

// Prompt tokens in [100, 150): never EOS.
inline GenerationRequest make_request(RequestId id, std::int32_t prompt_len,
                                      std::int32_t max_tokens, bool ignore_eos = true) {
  GenerationRequest r;
  r.id = id;
  for (std::int32_t i = 0; i < prompt_len; ++i)
    r.prompt.push_back(100 + (i + static_cast<int>(id)) % 50);
  r.sampling.max_tokens = max_tokens;
  r.sampling.ignore_eos = ignore_eos;
  return r;
}

}  // namespace podserve::testing_support
