// CPU paged attention against a deliberately naive fp64 reference: contiguous K/V per
// sequence, every score materialized, a full softmax, no tiling. The test scatters the same
// K/V into randomly permuted pages of a NaN-poisoned cache, so a wrong page or slot shows up as
// NaN or as a mismatch. Tolerance: |out - ref| <= kTolerance * (1 + |ref|) per element, with
// kTolerance = 1e-4 (fp32 scores and sums against fp64); 1e-3 for the large-score case whose
// logits reach several hundred.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cpu_backend.h"
#include "test_random.h"

namespace podserve {
namespace {

struct SequenceShape {
  std::int32_t new_tokens;     // C
  std::int32_t cached_tokens;  // P
};

struct AttentionCase {
  std::string name;
  std::vector<SequenceShape> sequences;
  std::int32_t num_q_heads;
  std::int32_t num_kv_heads;
  std::int32_t head_dim;
  std::int32_t page_size;
  float q_magnitude;  // q values are uniform in [-q_magnitude, q_magnitude]
  double tolerance;
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

// One sequence's inputs in contiguous form.
struct SequenceData {
  std::vector<float> k;  // [P + C, Hkv, D]
  std::vector<float> v;  // [P + C, Hkv, D]
  std::vector<std::int32_t> pages;
};

// out [T, Hq, D] for one sequence's rows, computed in fp64 from contiguous K/V.
void reference_attention(const AttentionCase& c, const SequenceShape& shape,
                         const SequenceData& data, const float* q,  // [C, Hq, D]
                         float scale, std::vector<double>& out) {   // [C, Hq, D]
  const std::int32_t d = c.head_dim;
  const std::int32_t group = c.num_q_heads / c.num_kv_heads;
  out.assign(static_cast<std::size_t>(shape.new_tokens) * c.num_q_heads * d, 0.0);
  for (std::int32_t i = 0; i < shape.new_tokens; ++i) {
    const std::int32_t visible = shape.cached_tokens + i + 1;
    for (std::int32_t h = 0; h < c.num_q_heads; ++h) {
      const std::int32_t g = h / group;
      const float* q_row = q + (static_cast<std::size_t>(i) * c.num_q_heads + h) * d;
      std::vector<double> scores(visible);
      for (std::int32_t t = 0; t < visible; ++t) {
        const float* k_row = data.k.data() + (static_cast<std::size_t>(t) * c.num_kv_heads + g) * d;
        double s = 0.0;
        for (std::int32_t e = 0; e < d; ++e) s += static_cast<double>(q_row[e]) * k_row[e];
        scores[t] = s * scale;
      }
      const double max_score = *std::max_element(scores.begin(), scores.end());
      double denom = 0.0;
      for (double& s : scores) {
        s = std::exp(s - max_score);
        denom += s;
      }
      double* out_row = out.data() + (static_cast<std::size_t>(i) * c.num_q_heads + h) * d;
      for (std::int32_t t = 0; t < visible; ++t) {
        const float* v_row = data.v.data() + (static_cast<std::size_t>(t) * c.num_kv_heads + g) * d;
        for (std::int32_t e = 0; e < d; ++e) out_row[e] += scores[t] / denom * v_row[e];
      }
    }
  }
}

class CpuAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(CpuAttentionTest, MatchesNaiveReference) {
  const AttentionCase& c = GetParam();
  const std::uint64_t seed = testing::test_seed();
  SCOPED_TRACE(testing::seed_trace(seed));
  std::mt19937_64 rng(seed);

  const std::int32_t d = c.head_dim;
  const std::size_t slot_elems = static_cast<std::size_t>(c.num_kv_heads) * d;
  std::int32_t total_pages = 3;  // spare pages that no sequence uses
  std::int32_t num_tokens = 0;
  for (const SequenceShape& s : c.sequences) {
    total_pages += (s.cached_tokens + s.new_tokens + c.page_size - 1) / c.page_size;
    num_tokens += s.new_tokens;
  }
  std::vector<std::int32_t> page_ids(total_pages);
  std::iota(page_ids.begin(), page_ids.end(), 0);
  std::shuffle(page_ids.begin(), page_ids.end(), rng);

  KvCacheView cache;
  cache.num_pages = total_pages;
  cache.page_size = c.page_size;
  cache.num_kv_heads = c.num_kv_heads;
  cache.head_dim = d;
  std::vector<float> cache_data = testing::nan_filled(cache.page_elements() * total_pages);
  cache.data = cache_data.data();

  std::vector<SequenceData> data(c.sequences.size());
  std::vector<AttentionSequence> sequences(c.sequences.size());
  std::size_t next_page = 0;
  std::int32_t query_offset = 0;
  for (std::size_t s = 0; s < c.sequences.size(); ++s) {
    const std::int32_t context = c.sequences[s].cached_tokens + c.sequences[s].new_tokens;
    data[s].k = testing::uniform_values(rng, context * slot_elems);
    data[s].v = testing::uniform_values(rng, context * slot_elems);
    const std::int32_t pages = (context + c.page_size - 1) / c.page_size;
    data[s].pages.assign(page_ids.begin() + next_page, page_ids.begin() + next_page + pages);
    next_page += pages;
    for (std::int32_t t = 0; t < context; ++t) {
      float* slot = cache_data.data() + data[s].pages[t / c.page_size] * cache.page_elements() +
                    (t % c.page_size) * slot_elems;
      std::copy_n(data[s].k.data() + t * slot_elems, slot_elems, slot);
      std::copy_n(data[s].v.data() + t * slot_elems, slot_elems,
                  slot + static_cast<std::size_t>(c.page_size) * slot_elems);
    }
    sequences[s].query_offset = query_offset;
    sequences[s].num_new_tokens = c.sequences[s].new_tokens;
    sequences[s].num_cached_tokens = c.sequences[s].cached_tokens;
    sequences[s].page_table = data[s].pages;
    query_offset += c.sequences[s].new_tokens;
  }

  const std::size_t token_elems = static_cast<std::size_t>(c.num_q_heads) * d;
  std::vector<float> q =
      testing::uniform_values(rng, num_tokens * token_elems, -c.q_magnitude, c.q_magnitude);
  std::vector<float> out = testing::nan_filled(q.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  const auto backend = make_cpu_backend();
  const Status status = backend->attention(
      make_view(q.data(), DType::kF32, {num_tokens, c.num_q_heads, d}), cache, sequences, scale,
      AttentionKind::kCpu, make_view(out.data(), DType::kF32, {num_tokens, c.num_q_heads, d}));
  ASSERT_TRUE(status.ok()) << status.to_string();

  double out_sq = 0.0;
  std::vector<double> ref;
  for (std::size_t s = 0; s < c.sequences.size(); ++s) {
    const std::size_t first = static_cast<std::size_t>(sequences[s].query_offset) * token_elems;
    reference_attention(c, c.sequences[s], data[s], q.data() + first, scale, ref);
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const float got = out[first + i];
      ASSERT_FALSE(std::isnan(got)) << "sequence " << s << " element " << i;
      ASSERT_LE(std::abs(got - ref[i]), c.tolerance * (1.0 + std::abs(ref[i])))
          << "sequence " << s << " element " << i << " got " << got << " want " << ref[i];
      out_sq += static_cast<double>(got) * got;
    }
  }
  // Averages of uniform(-1, 1) values over up to ~100 keys keep an RMS well above 0.01.
  EXPECT_GT(std::sqrt(out_sq / static_cast<double>(out.size())), 0.01)
      << "output is trivially small";
}

struct HeadConfig {
  const char* name;
  std::int32_t num_q_heads, num_kv_heads, head_dim, page_size;
};

// Each batch shape runs under every head config; together they cover GQA groups 1 and 4,
// head dims 32 and 64, and page sizes 16 and 8.
constexpr HeadConfig kHeadConfigs[] = {
    {"g1_d32_ps16", 4, 4, 32, 16},
    {"g4_d32_ps8", 8, 2, 32, 8},
    {"g4_d64_ps16", 8, 2, 64, 16},
    {"g1_d64_ps8", 2, 2, 64, 8},
};

std::vector<AttentionCase> attention_cases() {
  std::vector<std::pair<std::string, std::vector<SequenceShape>>> batches;
  for (std::int32_t c : {1, 7, 33}) {
    for (std::int32_t p : {0, 5, 16, 40}) {
      batches.push_back({"prefill_C" + std::to_string(c) + "_P" + std::to_string(p), {{c, p}}});
    }
  }
  for (std::int32_t context : {1, 15, 16, 17, 100}) {
    batches.push_back({"decode_L" + std::to_string(context), {{1, context - 1}}});
  }
  batches.push_back({"hybrid_3decodes_2prefills", {{1, 16}, {1, 0}, {1, 57}, {33, 5}, {7, 0}}});
  batches.push_back({"hybrid_prefill_first", {{20, 12}, {1, 31}, {9, 40}, {1, 8}}});

  std::vector<AttentionCase> cases;
  for (const auto& [batch_name, shapes] : batches) {
    for (const HeadConfig& h : kHeadConfigs) {
      cases.push_back({batch_name + "_" + h.name, shapes, h.num_q_heads, h.num_kv_heads, h.head_dim,
                       h.page_size, 1.0f, 1e-4});
    }
  }
  // Scores of several hundred: exp() overflows fp32 unless the maximum is subtracted.
  cases.push_back(
      {"hybrid_large_scores_g4_d32_ps16", {{1, 30}, {17, 9}}, 8, 2, 32, 16, 300.0f, 1e-3});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Batches, CpuAttentionTest, ::testing::ValuesIn(attention_cases()),
                         [](const ::testing::TestParamInfo<AttentionCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace podserve
