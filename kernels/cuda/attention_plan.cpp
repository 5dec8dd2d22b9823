// Host-side planning for hybrid attention: pure C++, no CUDA (see attention_cuda.h).
#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cuda/attention_cuda.h"

namespace podserve::cuda {

Status check_attention_shape(int num_q_heads, int num_kv_heads, int head_dim, int page_size) {
  if (head_dim != 64 && head_dim != 128)
    return invalid_argument("attention: head_dim " + std::to_string(head_dim) +
                            " unsupported (64 or 128)");
  if (page_size != kDecodeKeysPerStage)
    return invalid_argument("attention: page_size " + std::to_string(page_size) +
                            " unsupported (16)");
  if (num_kv_heads <= 0 || num_q_heads <= 0 || num_q_heads % num_kv_heads != 0)
    return invalid_argument("attention: num_q_heads must be a positive multiple of num_kv_heads");
  if (num_q_heads / num_kv_heads > 16)
    return invalid_argument("attention: GQA group larger than 16 unsupported");
  return Status::Ok();
}

namespace {

std::size_t align256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

template <typename T>
void append_bytes(std::vector<std::byte>& image, std::size_t offset, const std::vector<T>& items) {
  if (items.empty()) return;
  std::memcpy(image.data() + offset, items.data(), items.size() * sizeof(T));
}

Status validate(const HybridAttentionShape& shape, const DeviceShape& device) {
  PODSERVE_RETURN_IF_ERROR(check_attention_shape(shape.num_q_heads, shape.num_kv_heads,
                                                 shape.head_dim, shape.page_size));
  if (shape.prefill_new_tokens.size() != shape.prefill_cached_tokens.size())
    return invalid_argument(
        "attention: prefill_new_tokens and prefill_cached_tokens differ in size");
  for (std::size_t i = 0; i < shape.prefill_new_tokens.size(); ++i) {
    if (shape.prefill_new_tokens[i] < 1 || shape.prefill_cached_tokens[i] < 0)
      return invalid_argument("attention: prefill sequence " + std::to_string(i) +
                              " needs C >= 1 and P >= 0");
  }
  for (std::size_t i = 0; i < shape.decode_cached_tokens.size(); ++i) {
    if (shape.decode_cached_tokens[i] < 0)
      return invalid_argument("attention: decode sequence " + std::to_string(i) + " has P < 0");
  }
  if (device.num_sms <= 0 || device.num_sms > kPodCounterSlots)
    return invalid_argument("attention: num_sms out of range");
  if (shape.layout_decode_seqs != 0) {
    const auto batch = static_cast<std::int32_t>(shape.decode_cached_tokens.size());
    if (!shape.prefill_new_tokens.empty())
      return invalid_argument("attention: a fixed layout takes decode-only batches");
    if (shape.grid_decode_seqs < batch || shape.layout_decode_seqs < shape.grid_decode_seqs)
      return invalid_argument(
          "attention: a fixed layout needs batch <= grid_decode_seqs <= "
          "layout_decode_seqs, got " +
          std::to_string(batch) + ", " + std::to_string(shape.grid_decode_seqs) + ", " +
          std::to_string(shape.layout_decode_seqs));
  }
  return Status::Ok();
}

}  // namespace

int decode_waves(int num_prefill_seqs) { return num_prefill_seqs > 0 ? 2 : 1; }

Result<HybridAttentionPlan> plan_hybrid_attention(const HybridAttentionShape& shape,
                                                  const DeviceShape& device, int force_ctas_per_sm,
                                                  PodPolicy policy) {
  PODSERVE_RETURN_IF_ERROR(validate(shape, device));
  if (force_ctas_per_sm != 0 && force_ctas_per_sm != 2 && force_ctas_per_sm != 4)
    return invalid_argument("attention: force_ctas_per_sm must be 0, 2 or 4");

  HybridAttentionPlan plan;
  const int group = shape.num_q_heads / shape.num_kv_heads;
  const int hkv = shape.num_kv_heads;
  const int d = shape.head_dim;
  plan.head_dim = d;
  plan.group_size = group;

  const int num_prefill = static_cast<int>(shape.prefill_new_tokens.size());
  for (int s = 0; s < num_prefill; ++s) {
    const std::int64_t c = shape.prefill_new_tokens[s];
    const std::int64_t p = shape.prefill_cached_tokens[s];
    plan.prefill_flops += 4.0 * d * shape.num_q_heads * (c * p + c * (c + 1) / 2.0);
  }
  // Decode: split each (sequence, KV head) into page-aligned KV chunks: the smallest split (at
  // least kMinDecodeSplitKeys) whose item count fits kDecodeWaves waves of one-warp items (8 warps
  // per SM for the standalone kernel). Measured on H100: a decode-only batch reads fastest with
  // one wave (equal or faster on all 18 decode shapes of the sweep than two; Hkv=4, B=32, L=16K:
  // 2.72 -> 2.81 TB/s), each warp streaming a longer run with no second-wave ramp; beside a
  // prefill, two waves of shorter items pack better around POD's prefill CTAs (one wave: POD /
  // serial 1.048x, worst 0.961x; two: 1.069x, worst 0.996x). 3 CTAs per SM read 1-4% slower.
  const int num_decode = static_cast<int>(shape.decode_cached_tokens.size());
  std::int64_t max_len = 1;
  for (int i = 0; i < num_decode; ++i) {
    const std::int64_t len = shape.decode_cached_tokens[i] + 1;
    max_len = std::max(max_len, len);
    plan.decode_kv_bytes += 2.0 * hkv * d * len * 2.0;
  }
  const std::int64_t target_items = static_cast<std::int64_t>(device.num_sms) * kDecodeCtasPerSm *
                                    kWarpsPerCta * decode_waves(num_prefill);
  auto items_for = [&](std::int64_t split) {
    std::int64_t items = 0;
    for (int i = 0; i < num_decode; ++i)
      items += (shape.decode_cached_tokens[i] + split) / split * hkv;
    return items;
  };
  const std::int64_t stage = kDecodeKeysPerStage;
  std::int64_t lo_stages = kMinDecodeSplitKeys / stage;
  std::int64_t hi_stages = std::max(lo_stages, (max_len + stage - 1) / stage);
  if (items_for(hi_stages * stage) <= target_items) {
    while (lo_stages < hi_stages) {  // smallest split within the target
      const std::int64_t mid = (lo_stages + hi_stages) / 2;
      if (items_for(mid * stage) <= target_items)
        hi_stages = mid;
      else
        lo_stages = mid + 1;
    }
  }
  const std::int64_t split_keys = hi_stages * stage;  // one split per pair when none fits
  plan.decode_split_keys = static_cast<std::int32_t>(split_keys);
  for (int i = 0; i < num_decode; ++i) {
    const int seq = num_prefill + i;
    const std::int64_t len = shape.decode_cached_tokens[i] + 1;
    const int splits = static_cast<int>((len + split_keys - 1) / split_keys);
    for (int h = 0; h < hkv; ++h) {
      plan.merge_items.push_back(
          {seq, h, static_cast<std::int32_t>(plan.decode_items.size()), splits});
      for (int sp = 0; sp < splits; ++sp) {
        const auto begin = static_cast<std::int32_t>(sp * split_keys);
        const auto end =
            static_cast<std::int32_t>(std::min<std::int64_t>(len, (sp + 1) * split_keys));
        plan.decode_items.push_back({seq, h, begin, end});
      }
    }
  }

  // CTAs per SM for POD. The first heuristic (4 when decode's roofline time exceeds prefill's,
  // else 2) picked the slower variant: on H100 the 2-CTA variant (128- or 64-row prefill tiles,
  // 3-stage decode pipelines) beat the 4-CTA variant (64-row x 32-key prefill tiles under a
  // 128-register cap, single-stage decode warps) in 161 of the 162 sweep configurations (geomean
  // 1.33x), across decode:prefill time ratios from 0.1 to 100 (docs/perf.md). So the plan picks 2;
  // 4 stays available through force_ctas_per_sm for experiments on other cards.
  plan.pod_ctas_per_sm = force_ctas_per_sm != 0 ? force_ctas_per_sm : 2;
  // Policy: tickets, or prefill first when the decode is a small part of the batch: estimated
  // decode time under kPrefillFirstRatio of the prefill's, with the two estimated at our kernels'
  // H100 balance of kKernelFlopsPerByte (~390 TFLOP/s prefill over ~2.9 TB/s decode). Measured on
  // the H100 sweep: at a decode:prefill time ratio of 0.20 tickets ran 0.935x of serial (the
  // decode CTAs delay the prefill's two waves) where two streams ran 1.07x; above ~0.3 tickets
  // win. Resident slots won 40 of 162 configurations but lost the geomean (1.073x vs 1.089x) and
  // the worst case (0.921x vs 0.984x); selectable for experiments.
  constexpr double kKernelFlopsPerByte = 135.0;
  constexpr double kPrefillFirstRatio = 0.3;
  switch (policy) {
    case PodPolicy::kAuto: {
      const bool small_decode =
          kKernelFlopsPerByte * plan.decode_kv_bytes < kPrefillFirstRatio * plan.prefill_flops;
      // Without GQA (group 1) a prefill tile reads K/V for one query head per row: its K/V
      // traffic competes with the decode's stream instead of hiding under it (H100 sweep, 54
      // Llama-2 configurations: tickets 1.002x over serial, worst 0.947x; two streams 1.010x).
      const bool no_gqa = group == 1;
      plan.pod_policy = plan.prefill_flops > 0 && (small_decode || no_gqa)
                            ? PodPolicy::kPrefillFirst
                            : PodPolicy::kTickets;
      break;
    }
    case PodPolicy::kTickets: plan.pod_policy = PodPolicy::kTickets; break;
    case PodPolicy::kSlots: plan.pod_policy = PodPolicy::kSlots; break;
    case PodPolicy::kPrefillFirst: plan.pod_policy = PodPolicy::kPrefillFirst; break;
    default: return invalid_argument("attention: unknown PodPolicy");
  }
  plan.pod_prefill_slots = plan.pod_ctas_per_sm / 2;
  // Prefill rows per CTA: 128 (two 64-row wgmma halves pipelined against each other, K/V read
  // once for both) or 64 (one half: twice the CTAs for small prefills; the only choice with 4
  // CTAs per SM). Whichever finishes in fewer row-steps: waves of 2 CTAs per SM times rows per
  // CTA, a 64-row tile counted at 1 / 0.76 of its rows (measured on H100: C=2048 after P=12K
  // takes 1.30 ms with 128-row tiles, 1.71 ms with 64-row tiles, both several full waves).
  std::int64_t tiles_at_128 = 0;
  std::int64_t tiles_at_64 = 0;
  for (int s = 0; s < num_prefill; ++s) {
    const std::int64_t rows = static_cast<std::int64_t>(shape.prefill_new_tokens[s]) * group;
    tiles_at_128 += (rows + 127) / 128 * hkv;
    tiles_at_64 += (rows + 63) / 64 * hkv;
  }
  const std::int64_t slots = 2 * static_cast<std::int64_t>(device.num_sms);
  const double cost_128 = static_cast<double>((tiles_at_128 + slots - 1) / slots) * 128;
  const double cost_64 = static_cast<double>((tiles_at_64 + slots - 1) / slots) * 64 / 0.76;
  plan.prefill_rows_per_cta = plan.pod_ctas_per_sm == 2 && cost_128 <= cost_64 ? 128 : 64;

  // Prefill: tiles of prefill_rows_per_cta (token, head-in-group) rows per KV head; heaviest
  // (longest KV) first so the tail of the launch is made of short tiles.
  const int tile_rows = plan.prefill_rows_per_cta;
  for (int s = 0; s < num_prefill; ++s) {
    const std::int64_t c = shape.prefill_new_tokens[s];
    const std::int64_t p = shape.prefill_cached_tokens[s];
    const std::int64_t rows = c * group;
    const int tiles = static_cast<int>((rows + tile_rows - 1) / tile_rows);
    for (int t = 0; t < tiles; ++t) {
      const std::int64_t last_row = std::min<std::int64_t>(rows, (t + 1) * tile_rows) - 1;
      const int kv_len = static_cast<int>(p + last_row / group + 1);
      for (int h = 0; h < hkv; ++h) plan.prefill_items.push_back({s, t, h, kv_len});
    }
  }
  std::stable_sort(
      plan.prefill_items.begin(), plan.prefill_items.end(),
      [](const PrefillWorkItem& a, const PrefillWorkItem& b) { return a.kv_len > b.kv_len; });

  plan.prefill_ctas = static_cast<std::int32_t>(plan.prefill_items.size());
  // A decode batch of n sequences has at most max(target_items, n * hkv) items (one split per
  // pair when the target cannot hold them) and exactly n * hkv merges.
  const bool fixed = shape.layout_decode_seqs != 0;
  const auto item_bound = [&](std::int64_t seqs) {
    return std::max<std::int64_t>(target_items, seqs * hkv);
  };
  const std::size_t item_capacity =
      fixed ? static_cast<std::size_t>(item_bound(shape.layout_decode_seqs))
            : plan.decode_items.size();
  const std::size_t merge_capacity =
      fixed ? static_cast<std::size_t>(shape.layout_decode_seqs) * hkv : plan.merge_items.size();
  plan.decode_item_bound =
      static_cast<std::int32_t>(fixed ? item_bound(shape.grid_decode_seqs)
                                      : static_cast<std::int64_t>(plan.decode_items.size()));
  plan.merge_item_bound =
      static_cast<std::int32_t>(fixed ? std::int64_t{shape.grid_decode_seqs} * hkv
                                      : static_cast<std::int64_t>(plan.merge_items.size()));
  plan.decode_ctas = (plan.decode_item_bound + kWarpsPerCta - 1) / kWarpsPerCta;

  // Workspace layout.
  std::size_t offset = 0;
  plan.counters_bytes = align256(sizeof(std::int32_t) * (kPodCounterSlots + 2));
  offset = plan.counters_bytes;
  if (fixed) {
    plan.counts_offset = offset;
    offset = align256(offset + 2 * sizeof(std::int32_t));
  }
  plan.prefill_items_offset = offset;
  offset = align256(offset + plan.prefill_items.size() * sizeof(PrefillWorkItem));
  plan.decode_items_offset = offset;
  offset = align256(offset + item_capacity * sizeof(DecodeWorkItem));
  plan.merge_items_offset = offset;
  offset = align256(offset + merge_capacity * sizeof(DecodeMergeItem));
  plan.partial_out_offset = offset;
  offset = align256(offset + item_capacity * group * d * sizeof(float));
  plan.partial_lse_offset = offset;
  offset = align256(offset + item_capacity * group * sizeof(float));
  plan.workspace_bytes = offset;

  plan.static_image.assign(plan.partial_out_offset - plan.counters_bytes, std::byte{0});
  if (fixed) {
    const std::vector<std::int32_t> counts = {static_cast<std::int32_t>(plan.decode_items.size()),
                                              static_cast<std::int32_t>(plan.merge_items.size())};
    append_bytes(plan.static_image, plan.counts_offset - plan.counters_bytes, counts);
  }
  append_bytes(plan.static_image, plan.prefill_items_offset - plan.counters_bytes,
               plan.prefill_items);
  append_bytes(plan.static_image, plan.decode_items_offset - plan.counters_bytes,
               plan.decode_items);
  append_bytes(plan.static_image, plan.merge_items_offset - plan.counters_bytes, plan.merge_items);
  return plan;
}

HybridAttentionShape FlatAttentionBatch::shape(int num_q_heads, int num_kv_heads, int head_dim,
                                               int page_size) const {
  HybridAttentionShape shape;
  shape.num_q_heads = num_q_heads;
  shape.num_kv_heads = num_kv_heads;
  shape.head_dim = head_dim;
  shape.page_size = page_size;
  shape.prefill_new_tokens = prefill_new_tokens;
  shape.prefill_cached_tokens = prefill_cached_tokens;
  shape.decode_cached_tokens = decode_cached_tokens;
  return shape;
}

FlatAttentionBatch flatten_attention_batch(std::span<const AttentionSequence> sequences,
                                           int page_size, std::int32_t min_stride) {
  std::vector<const AttentionSequence*> order;
  order.reserve(sequences.size());
  for (const AttentionSequence& seq : sequences)
    if (seq.num_new_tokens > 1) order.push_back(&seq);
  FlatAttentionBatch batch;
  batch.num_prefill = static_cast<std::int32_t>(order.size());
  for (const AttentionSequence& seq : sequences)
    if (seq.num_new_tokens == 1) order.push_back(&seq);
  batch.num_decode = static_cast<std::int32_t>(order.size()) - batch.num_prefill;
  const std::size_t n = order.size();
  batch.stride = std::max(static_cast<std::int32_t>(n), min_stride);
  const std::size_t stride = static_cast<std::size_t>(batch.stride);
  batch.arrays.assign(4 * stride, 0);
  std::int32_t table_entries = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const AttentionSequence& seq = *order[i];
    const std::int32_t context = seq.num_cached_tokens + seq.num_new_tokens;
    const std::int32_t pages = (context + page_size - 1) / page_size;
    batch.arrays[i] = seq.query_offset;
    batch.arrays[stride + i] = seq.num_new_tokens;
    batch.arrays[2 * stride + i] = seq.num_cached_tokens;
    batch.arrays[3 * stride + i] = table_entries;
    batch.arrays.insert(batch.arrays.end(), seq.page_table.begin(), seq.page_table.begin() + pages);
    table_entries += pages;
    if (static_cast<std::int32_t>(i) < batch.num_prefill) {
      batch.prefill_new_tokens.push_back(seq.num_new_tokens);
      batch.prefill_cached_tokens.push_back(seq.num_cached_tokens);
    } else {
      batch.decode_cached_tokens.push_back(seq.num_cached_tokens);
    }
  }
  return batch;
}

void point_at_flat_arrays(HybridAttentionParams& params, const std::int32_t* arrays,
                          std::int32_t num_prefill, std::int32_t num_decode, std::int32_t stride) {
  const std::size_t n = static_cast<std::size_t>(stride);
  params.query_offsets = arrays;
  params.num_new_tokens = arrays + n;
  params.num_cached_tokens = arrays + 2 * n;
  params.page_table_offsets = arrays + 3 * n;
  params.page_table = arrays + 4 * n;
  params.num_prefill_seqs = num_prefill;
  params.num_decode_seqs = num_decode;
}

}  // namespace podserve::cuda
