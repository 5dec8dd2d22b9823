#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace podserve::cpu {
namespace {

// Dot product with 8 independent partial sums (vectorizes without reassociation).
inline float dot(const float* a, const float* b, std::int32_t n) {
  constexpr std::int32_t kLanes = 8;
  float acc[kLanes] = {};
  std::int32_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int32_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

void paged_attention_f32(const PagedAttentionParams& p,
                         std::span<const AttentionSequence> sequences, std::vector<float>& scores) {
  const std::int32_t d = p.head_dim;
  const std::int32_t group = p.num_q_heads / p.num_kv_heads;
  const std::int64_t row_elems = static_cast<std::int64_t>(p.num_kv_heads) * d;  // one slot
  const std::int64_t half_page = static_cast<std::int64_t>(p.page_size) * row_elems;
  const std::int64_t page_elems = 2 * half_page;
  const std::int64_t token_elems = static_cast<std::int64_t>(p.num_q_heads) * d;

  for (const AttentionSequence& seq : sequences) {
    const std::int32_t context = seq.num_cached_tokens + seq.num_new_tokens;
    if (scores.size() < static_cast<std::size_t>(context)) scores.resize(context);
    for (std::int32_t i = 0; i < seq.num_new_tokens; ++i) {
      const std::int32_t visible = seq.num_cached_tokens + i + 1;  // keys [0, P + i]
      const std::int64_t row = seq.query_offset + i;
      for (std::int32_t h = 0; h < p.num_q_heads; ++h) {
        const std::int32_t kv_head = h / group;
        const float* q_row = p.q + row * token_elems + static_cast<std::int64_t>(h) * d;  // [D]
        float* out_row = p.out + row * token_elems + static_cast<std::int64_t>(h) * d;    // [D]

        float max_score = -std::numeric_limits<float>::infinity();
        for (std::int32_t t = 0; t < visible; ++t) {
          const float* page = p.cache + seq.page_table[t / p.page_size] * page_elems;
          const float* k_row = page + (t % p.page_size) * row_elems + kv_head * d;  // [D]
          const float s = dot(q_row, k_row, d) * p.scale;
          scores[t] = s;
          max_score = std::max(max_score, s);
        }
        float denom = 0.0f;
        for (std::int32_t t = 0; t < visible; ++t) {
          scores[t] = std::exp(scores[t] - max_score);
          denom += scores[t];
        }
        std::fill(out_row, out_row + d, 0.0f);
        for (std::int32_t t = 0; t < visible; ++t) {
          const float* page = p.cache + seq.page_table[t / p.page_size] * page_elems;
          const float* v_row = page + half_page + (t % p.page_size) * row_elems + kv_head * d;
          const float weight = scores[t];
          for (std::int32_t c = 0; c < d; ++c) out_row[c] += weight * v_row[c];
        }
        const float inv_denom = 1.0f / denom;
        for (std::int32_t c = 0; c < d; ++c) out_row[c] *= inv_denom;
      }
    }
  }
}

}  // namespace podserve::cpu
