// fp32 causal attention over the paged KV cache for the CPU backend (AttentionKind::kCpu).
//
// Contract: single-threaded, blocking. Inputs are validated by the caller (CpuBackend):
// every sequence's rows lie inside q/out and its page table covers [0, P + C) with valid page
// ids. Per (token, query head) it runs an exact two-pass softmax (scores, subtract the max,
// exponentiate, normalize), so there is no approximation beyond fp32 rounding. `scores` is
// caller-owned scratch, grown as needed and reused between calls.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/backend.h"

namespace podserve::cpu {

struct PagedAttentionParams {
  const float* q = nullptr;      // [T, Hq, D]
  const float* cache = nullptr;  // [num_pages, 2, page_size, Hkv, D]
  float* out = nullptr;          // [T, Hq, D]
  std::int32_t num_q_heads = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  std::int32_t page_size = 0;
  float scale = 1.0f;
};

void paged_attention_f32(const PagedAttentionParams& params,
                         std::span<const AttentionSequence> sequences, std::vector<float>& scores);

}  // namespace podserve::cpu
