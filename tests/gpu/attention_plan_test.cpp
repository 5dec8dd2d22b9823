// CPU unit tests of plan_hybrid_attention: coverage of the work lists, workspace layout,
// the CTAs-per-SM heuristic and validation. No GPU needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "kernels/cuda/attention_cuda.h"

namespace podserve::cuda {
namespace {

HybridAttentionShape make_shape(int hq, int hkv, int d, const std::vector<int>& new_tokens,
                                const std::vector<int>& cached,
                                const std::vector<int>& decode_cached) {
  HybridAttentionShape shape;
  shape.num_q_heads = hq;
  shape.num_kv_heads = hkv;
  shape.head_dim = d;
  shape.prefill_new_tokens = new_tokens;
  shape.prefill_cached_tokens = cached;
  shape.decode_cached_tokens = decode_cached;
  return shape;
}

TEST(AttentionPlan, RejectsUnsupportedShapes) {
  const std::vector<int> c{4}, p{0}, dec{3};
  EXPECT_EQ(plan_hybrid_attention(make_shape(8, 8, 96, c, p, dec), {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(plan_hybrid_attention(make_shape(12, 8, 128, c, p, dec), {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(plan_hybrid_attention(make_shape(64, 2, 128, c, p, dec), {}).status().code(),
            StatusCode::kInvalidArgument);
  auto shape = make_shape(8, 8, 128, c, p, dec);
  shape.page_size = 32;
  EXPECT_EQ(plan_hybrid_attention(shape, {}).status().code(), StatusCode::kInvalidArgument);
  const std::vector<int> zero{0};
  EXPECT_EQ(plan_hybrid_attention(make_shape(8, 8, 128, zero, p, dec), {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(plan_hybrid_attention(make_shape(8, 8, 128, c, p, dec), {}, 3).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(plan_hybrid_attention(make_shape(8, 8, 128, c, p, dec), {}).ok());
}

// Every (sequence, row tile, KV head) exactly once, KV length right, heaviest first; every
// (decode sequence, KV head) split into contiguous page-aligned ranges covering [0, P + 1).
TEST(AttentionPlan, WorkListsCoverTheBatchExactly) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 50; ++trial) {
    const int hkv = std::vector<int>{1, 2, 4, 8}[rng() % 4];
    const int group = std::vector<int>{1, 4, 8}[rng() % 3];
    const int d = rng() % 2 ? 64 : 128;
    std::vector<int> c, p, dec;
    for (int i = 0, n = static_cast<int>(rng() % 6); i < n; ++i) {
      c.push_back(1 + static_cast<int>(rng() % 3000));
      p.push_back(static_cast<int>(rng() % 20000));
    }
    for (int i = 0, n = static_cast<int>(rng() % 300); i < n; ++i)
      dec.push_back(static_cast<int>(rng() % 40000));
    const DeviceShape device{static_cast<int>(16 + rng() % 200)};
    auto plan_or = plan_hybrid_attention(make_shape(hkv * group, hkv, d, c, p, dec), device);
    ASSERT_TRUE(plan_or.ok()) << plan_or.status().to_string();
    const HybridAttentionPlan& plan = *plan_or;

    std::set<std::tuple<int, int, int>> seen;
    for (std::size_t i = 0; i < plan.prefill_items.size(); ++i) {
      const auto& it = plan.prefill_items[i];
      ASSERT_TRUE(seen.insert({it.seq, it.row_tile, it.kv_head}).second);
      const long rows = static_cast<long>(c[it.seq]) * group;
      const long tile_rows = plan.prefill_rows_per_cta;
      const long last_row = std::min<long>(rows, (it.row_tile + 1) * tile_rows) - 1;
      EXPECT_EQ(it.kv_len, p[it.seq] + last_row / group + 1);
      if (i > 0) {
        EXPECT_GE(plan.prefill_items[i - 1].kv_len, it.kv_len);
      }
    }
    std::size_t expected_tiles = 0;
    const std::size_t tile_rows = plan.prefill_rows_per_cta;
    EXPECT_TRUE(tile_rows == 64 || (tile_rows == 128 && plan.pod_ctas_per_sm == 2));
    for (std::size_t s = 0; s < c.size(); ++s)
      expected_tiles += (static_cast<std::size_t>(c[s]) * group + tile_rows - 1) / tile_rows * hkv;
    EXPECT_EQ(plan.prefill_items.size(), expected_tiles);
    EXPECT_EQ(plan.prefill_ctas, static_cast<int>(plan.prefill_items.size()));

    ASSERT_EQ(plan.merge_items.size(), dec.size() * hkv);
    int next_item = 0;
    for (const auto& m : plan.merge_items) {
      EXPECT_EQ(m.first_item, next_item);
      ASSERT_GE(m.num_splits, 1);
      const int len = dec[m.seq - static_cast<int>(c.size())] + 1;
      int expect_begin = 0;
      for (int s = 0; s < m.num_splits; ++s) {
        const auto& it = plan.decode_items[m.first_item + s];
        EXPECT_EQ(it.seq, m.seq);
        EXPECT_EQ(it.kv_head, m.kv_head);
        EXPECT_EQ(it.kv_begin, expect_begin);
        EXPECT_EQ(it.kv_begin % 16, 0);
        EXPECT_GT(it.kv_end, it.kv_begin);
        expect_begin = it.kv_end;
      }
      EXPECT_EQ(expect_begin, len);
      next_item += m.num_splits;
    }
    EXPECT_EQ(next_item, static_cast<int>(plan.decode_items.size()));
    // The smallest page-aligned split (>= the minimum) within the target waves of one-warp items.
    if (!dec.empty()) {
      auto items_for = [&](long split) {
        long n = 0;
        for (int ctx : dec) n += (ctx + split) / split * hkv;
        return n;
      };
      const long target = static_cast<long>(device.num_sms) * kDecodeCtasPerSm * kWarpsPerCta *
                          decode_waves(static_cast<int>(c.size()));
      const long split = plan.decode_split_keys;
      EXPECT_EQ(split % 16, 0);
      EXPECT_GE(split, kMinDecodeSplitKeys);
      EXPECT_EQ(items_for(split), static_cast<long>(plan.decode_items.size()));
      if (items_for(split) > target) {
        for (const auto& m : plan.merge_items) EXPECT_EQ(m.num_splits, 1);
      } else if (split > kMinDecodeSplitKeys) {
        EXPECT_GT(items_for(split - 16), target);
      }
    }
    // Layout: increasing, 256-aligned, static image spans the item lists.
    const std::vector<std::size_t> offsets{plan.counters_bytes,      plan.prefill_items_offset,
                                           plan.decode_items_offset, plan.merge_items_offset,
                                           plan.partial_out_offset,  plan.partial_lse_offset,
                                           plan.workspace_bytes};
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      EXPECT_EQ(offsets[i] % 256, 0u);
      if (i > 0) {
        EXPECT_LE(offsets[i - 1], offsets[i]);
      }
    }
    EXPECT_GE(plan.counters_bytes, sizeof(int) * (kPodCounterSlots + 2));
    EXPECT_EQ(plan.static_image.size(), plan.partial_out_offset - plan.counters_bytes);
    EXPECT_GE(plan.partial_lse_offset - plan.partial_out_offset,
              plan.decode_items.size() * group * d * sizeof(float));
  }
}

TEST(AttentionPlan, FlopsAndBytesFollowTheFormulas) {
  const std::vector<int> c{2048}, p{12288}, dec{16383, 4095};
  auto plan = plan_hybrid_attention(make_shape(32, 8, 128, c, p, dec), {132});
  ASSERT_TRUE(plan.ok());
  EXPECT_DOUBLE_EQ(plan->prefill_flops, 4.0 * 128 * 32 * (2048.0 * 12288 + 2048.0 * 2049 / 2));
  EXPECT_DOUBLE_EQ(plan->decode_kv_bytes, 2.0 * 8 * 128 * (16384 + 4096) * 2);
}

TEST(AttentionPlan, CtasPerSmAndTileRowsHeuristic) {
  const std::vector<int> big_c{2048}, big_p{12288}, none{};
  std::vector<int> many_decodes(128, 16383);
  // Hybrid batches pair prefill with decode: 2 CTAs per SM, 128-row tiles when they fill a wave.
  auto big = plan_hybrid_attention(make_shape(32, 8, 128, big_c, big_p, many_decodes), {132});
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->pod_ctas_per_sm, 2);
  EXPECT_EQ(big->prefill_rows_per_cta, 128);  // 512 tiles: 2 waves of 128 rows < 4 waves of 64
  // TP=2 heads: 256 tiles of 128 rows, one wave, beats two waves of 64-row tiles.
  const std::vector<int> tp2_decodes(64, 4095);
  auto tp2 = plan_hybrid_attention(make_shape(16, 4, 128, big_c, big_p, tp2_decodes), {132});
  ASSERT_TRUE(tp2.ok());
  EXPECT_EQ(tp2->prefill_rows_per_cta, 128);
  const std::vector<int> small_c{512}, small_p{0};
  auto small = plan_hybrid_attention(make_shape(32, 8, 128, small_c, small_p, many_decodes), {132});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->pod_ctas_per_sm, 2);
  EXPECT_EQ(small->prefill_rows_per_cta, 64);  // 128 tiles of 128 rows: half a wave
  // Decode-only batches too: the 4-CTA variant lost everywhere it was measured.
  auto decode_only = plan_hybrid_attention(make_shape(32, 8, 128, none, none, many_decodes), {132});
  ASSERT_TRUE(decode_only.ok());
  EXPECT_EQ(decode_only->pod_ctas_per_sm, 2);
  auto forced = plan_hybrid_attention(make_shape(32, 8, 128, big_c, big_p, many_decodes), {132}, 4);
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(forced->pod_ctas_per_sm, 4);
  EXPECT_EQ(forced->prefill_rows_per_cta, 64);
  // POD policy: tickets by default; resident slots (half of the SM's CTAs prefill) on request.
  EXPECT_EQ(big->pod_policy, PodPolicy::kTickets);
  auto slots = plan_hybrid_attention(make_shape(32, 8, 128, big_c, big_p, many_decodes), {132}, 0,
                                     PodPolicy::kSlots);
  ASSERT_TRUE(slots.ok());
  EXPECT_EQ(slots->pod_policy, PodPolicy::kSlots);
  EXPECT_EQ(slots->pod_prefill_slots, 1);
  EXPECT_EQ(slots->prefill_items.size(), big->prefill_items.size());
  EXPECT_EQ(forced->pod_prefill_slots, 2);
  // A small decode beside a long prefill (estimated decode time 0.17 of the prefill's): prefill
  // first.
  const std::vector<int> few_short_decodes(32, 4096);
  auto prefill_heavy =
      plan_hybrid_attention(make_shape(32, 8, 128, big_c, big_p, few_short_decodes), {132});
  ASSERT_TRUE(prefill_heavy.ok());
  EXPECT_EQ(prefill_heavy->pod_policy, PodPolicy::kPrefillFirst);
  EXPECT_EQ(decode_only->pod_policy, PodPolicy::kTickets);
  // No GQA: prefill first whatever the ratio.
  auto mha = plan_hybrid_attention(make_shape(32, 32, 128, big_c, big_p, many_decodes), {132});
  ASSERT_TRUE(mha.ok());
  EXPECT_EQ(mha->pod_policy, PodPolicy::kPrefillFirst);
  EXPECT_FALSE(plan_hybrid_attention(make_shape(32, 8, 128, big_c, big_p, many_decodes), {132}, 0,
                                     static_cast<PodPolicy>(7))
                   .ok());
  auto empty = plan_hybrid_attention(make_shape(32, 8, 128, none, none, none), {132});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->prefill_ctas + empty->decode_ctas, 0);
}

// Interleaved prefill chunks and decodes: prefills first then decodes, each in list order; the
// arrays hold each sequence's offset, C, P and page-table offset, and the flat table only the
// pages its context needs (a longer table is cut). A chunk of one token counts as a decode.
// Fixed layouts (CUDA graphs): every decode batch up to layout_decode_seqs gets the same offsets
// and workspace size; the launch bounds cover the grid's sequences; the image carries the batch's
// item counts; the work items are those of the exact plan. Random batches, seed fixed.
TEST(AttentionPlan, FixedLayoutsKeepTheirOffsetsAndCarryTheCounts) {
  std::mt19937 rng(2024);
  for (const auto& [hq, hkv] : std::vector<std::pair<int, int>>{{32, 8}, {8, 8}, {28, 4}}) {
    const DeviceShape device{132};
    const int layout = 64;
    std::size_t workspace_bytes = 0, decode_items_offset = 0, merge_items_offset = 0;
    for (int trial = 0; trial < 40; ++trial) {
      const int batch = 1 + static_cast<int>(rng() % layout);
      const int grid = batch + static_cast<int>(rng() % (layout - batch + 1));
      std::vector<int> cached(static_cast<std::size_t>(batch));
      for (int& p : cached) p = static_cast<int>(rng() % 20000);
      const std::vector<int> none;
      HybridAttentionShape shape = make_shape(hq, hkv, 128, none, none, cached);
      auto exact = plan_hybrid_attention(shape, device);
      ASSERT_TRUE(exact.ok()) << exact.status().to_string();
      shape.layout_decode_seqs = layout;
      shape.grid_decode_seqs = grid;
      auto fixed = plan_hybrid_attention(shape, device);
      ASSERT_TRUE(fixed.ok()) << fixed.status().to_string();
      if (trial == 0) {
        workspace_bytes = fixed->workspace_bytes;
        decode_items_offset = fixed->decode_items_offset;
        merge_items_offset = fixed->merge_items_offset;
      }
      EXPECT_EQ(fixed->workspace_bytes, workspace_bytes);
      EXPECT_EQ(fixed->decode_items_offset, decode_items_offset);
      EXPECT_EQ(fixed->merge_items_offset, merge_items_offset);
      ASSERT_EQ(fixed->decode_items.size(), exact->decode_items.size());
      for (std::size_t i = 0; i < exact->decode_items.size(); ++i) {
        const DecodeWorkItem& a = fixed->decode_items[i];
        const DecodeWorkItem& b = exact->decode_items[i];
        EXPECT_TRUE(a.seq == b.seq && a.kv_head == b.kv_head && a.kv_begin == b.kv_begin &&
                    a.kv_end == b.kv_end)
            << "item " << i;
      }
      EXPECT_EQ(fixed->merge_items.size(), exact->merge_items.size());
      EXPECT_GE(fixed->decode_item_bound, static_cast<int>(exact->decode_items.size()));
      EXPECT_EQ(fixed->merge_item_bound, grid * hkv);
      EXPECT_EQ(fixed->decode_ctas, (fixed->decode_item_bound + kWarpsPerCta - 1) / kWarpsPerCta);
      ASSERT_GT(fixed->counts_offset, 0u);
      std::int32_t counts[2];
      std::memcpy(counts,
                  fixed->static_image.data() + (fixed->counts_offset - fixed->counters_bytes),
                  sizeof(counts));
      EXPECT_EQ(counts[0], static_cast<std::int32_t>(exact->decode_items.size()));
      EXPECT_EQ(counts[1], static_cast<std::int32_t>(exact->merge_items.size()));
      EXPECT_EQ(exact->counts_offset, 0u);
    }
  }
  // A prefill in a fixed layout, or a batch beyond its grid, is an error.
  const std::vector<int> chunk = {64}, prefix = {0}, one_decode = {100}, three = {1, 2, 3}, none;
  HybridAttentionShape mixed = make_shape(32, 8, 128, chunk, prefix, one_decode);
  mixed.layout_decode_seqs = 8;
  mixed.grid_decode_seqs = 8;
  EXPECT_FALSE(plan_hybrid_attention(mixed, DeviceShape{132}).ok());
  HybridAttentionShape over = make_shape(32, 8, 128, none, none, three);
  over.layout_decode_seqs = 8;
  over.grid_decode_seqs = 2;
  EXPECT_FALSE(plan_hybrid_attention(over, DeviceShape{132}).ok());
}

TEST(FlattenAttentionBatch, PrefillsFirstThenDecodesWithTheirPagesOnly) {
  const std::vector<std::int32_t> table_a = {7, 3, 9};     // decode: P=20, context 21: 2 pages
  const std::vector<std::int32_t> table_b = {1, 2, 4, 5};  // prefill: C=5 after P=11: 1 page
  const std::vector<std::int32_t> table_c = {8};           // decode: P=0
  const std::vector<std::int32_t> table_d = {6, 0};        // prefill: C=17, P=0: 2 pages
  const std::vector<AttentionSequence> sequences = {
      {.query_offset = 0, .num_new_tokens = 1, .num_cached_tokens = 20, .page_table = table_a},
      {.query_offset = 1, .num_new_tokens = 5, .num_cached_tokens = 11, .page_table = table_b},
      {.query_offset = 6, .num_new_tokens = 1, .num_cached_tokens = 0, .page_table = table_c},
      {.query_offset = 7, .num_new_tokens = 17, .num_cached_tokens = 0, .page_table = table_d}};
  const FlatAttentionBatch batch = flatten_attention_batch(sequences, 16);
  EXPECT_EQ(batch.num_prefill, 2);
  EXPECT_EQ(batch.num_decode, 2);
  const std::vector<std::int32_t> expected = {1,  7,  0,  6,  // query offsets: b, d, a, c
                                              5,  17, 1,  1,  // new tokens
                                              11, 0,  20, 0,  // cached tokens
                                              0,  1,  3,  5,  // page-table offsets
                                              1,  6,  0,  7,
                                              3,  8};  // pages: b {1}, d {6, 0}, a {7, 3}, c {8}
  EXPECT_EQ(batch.arrays, expected);
  // The launch parameters read the same layout: decode a's row, context and pages through them.
  HybridAttentionParams params;
  point_at_flat_arrays(params, batch.arrays.data(), batch.num_prefill, batch.num_decode,
                       batch.stride);
  EXPECT_EQ(params.num_prefill_seqs, 2);
  EXPECT_EQ(params.num_decode_seqs, 2);
  EXPECT_EQ(params.query_offsets[2], 0);
  EXPECT_EQ(params.num_new_tokens[2], 1);
  EXPECT_EQ(params.num_cached_tokens[2], 20);
  EXPECT_EQ(params.page_table[params.page_table_offsets[2] + 1], 3);
  EXPECT_EQ(params.page_table[params.page_table_offsets[3]], 8);
  EXPECT_EQ(batch.prefill_new_tokens, (std::vector<std::int32_t>{5, 17}));
  EXPECT_EQ(batch.prefill_cached_tokens, (std::vector<std::int32_t>{11, 0}));
  EXPECT_EQ(batch.decode_cached_tokens, (std::vector<std::int32_t>{20, 0}));
  const HybridAttentionShape shape = batch.shape(8, 2, 128, 16);
  EXPECT_EQ(shape.prefill_new_tokens.size(), 2u);
  EXPECT_EQ(shape.decode_cached_tokens.size(), 2u);
  EXPECT_TRUE(plan_hybrid_attention(shape, {}).ok());
  // The same batch again compares equal (the backend reuses its plan); a changed page does not.
  EXPECT_EQ(flatten_attention_batch(sequences, 16), batch);
  const std::vector<std::int32_t> moved = {7, 4};
  std::vector<AttentionSequence> changed = sequences;
  changed[0].page_table = moved;
  EXPECT_NE(flatten_attention_batch(changed, 16), batch);
  EXPECT_EQ(flatten_attention_batch({}, 16).arrays.size(), 0u);
}

}  // namespace
}  // namespace podserve::cuda
