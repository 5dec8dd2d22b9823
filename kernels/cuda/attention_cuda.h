// CUDA attention for hybrid batches (prefill chunks + decode tokens) over the paged KV cache:
// the POD fused kernel (arXiv 2410.18038) and its serial / two-stream baselines.
//
// Contract:
// - Plan on the host, run on the device. plan_hybrid_attention() is pure C++ (no CUDA): it
//   partitions the work (prefill tiles, decode KV splits, CTA counts, POD's CTAs-per-SM) and
//   builds the static part of the workspace in host memory. upload_plan() copies that part into
//   a device workspace of plan.workspace_bytes (async on `stream`; the plan must outlive it).
//   The run_* launchers take only device pointers and reset POD's scheduling counters with a
//   cudaMemsetAsync of their own, so they can be captured in a CUDA graph and replayed.
// - bf16 in and out, fp32 accumulation. Sequences [0, num_prefill_seqs) are prefill chunks,
//   [num_prefill_seqs, num_prefill_seqs + num_decode_seqs) are decode tokens (1 new token each).
//   Each sequence's new tokens are aligned bottom-right: new token i sees keys [0, P + i].
//   The new tokens' K/V must already be in the cache.
// - Supported: head_dim 64 or 128, page_size 16, num_q_heads / num_kv_heads in [1, 16].
//   Anything else is an error (kInvalidArgument), never a silent fallback.
// - Streams are cudaStream_t passed as void*; nullptr is the legacy default stream.
// - Not thread-safe per workspace: one run at a time may use a workspace.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/backend.h"
#include "core/status.h"

namespace podserve::cuda {

// Device pointers and dimensions of one hybrid attention call.
struct HybridAttentionParams {
  const void* q = nullptr;   // [T, Hq, D] bf16
  void* out = nullptr;       // [T, Hq, D] bf16
  const void* kv = nullptr;  // [num_pages, 2, page_size, Hkv, D] bf16; dim 1: 0 = K, 1 = V
  std::int32_t num_pages = 0;
  std::int32_t page_size = 16;
  std::int32_t num_q_heads = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  // Per sequence, device int32 arrays of num_prefill_seqs + num_decode_seqs entries.
  const std::int32_t* query_offsets = nullptr;       // first row of the sequence in q / out
  const std::int32_t* num_new_tokens = nullptr;      // C (1 for decode)
  const std::int32_t* num_cached_tokens = nullptr;   // P
  const std::int32_t* page_table_offsets = nullptr;  // first entry of the sequence in page_table
  const std::int32_t* page_table = nullptr;          // flat; pages covering [0, P + C)
  std::int32_t num_prefill_seqs = 0;
  std::int32_t num_decode_seqs = 0;
  float scale = 0.0f;  // softmax scale, usually 1/sqrt(D)
};

// What the host knows about the batch when planning (host memory).
struct HybridAttentionShape {
  std::int32_t num_q_heads = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  std::int32_t page_size = 16;
  std::span<const std::int32_t> prefill_new_tokens;     // C per prefill sequence
  std::span<const std::int32_t> prefill_cached_tokens;  // P per prefill sequence
  std::span<const std::int32_t> decode_cached_tokens;   // P per decode sequence (context = P + 1)
  // Fixed layout (CUDA graphs): 0 = lay out the workspace for this batch. Otherwise the batch is
  // decode-only and the workspace is laid out for up to layout_decode_seqs decode sequences, so
  // every such plan has the same offsets and workspace_bytes; the launches are sized for
  // grid_decode_seqs (>= the batch, <= layout_decode_seqs) and read the item counts of the batch
  // from the workspace (HybridAttentionPlan::counts_offset).
  std::int32_t layout_decode_seqs = 0;
  std::int32_t grid_decode_seqs = 0;
};

// Properties of the card the plan targets (read with cudaGetDeviceProperties by the caller).
struct DeviceShape {
  std::int32_t num_sms = 132;
};

// Work partitioning constants shared by the plan and the kernels.
inline constexpr int kThreadsPerCta = 128;  // 4 warps, every kernel
inline constexpr int kWarpsPerCta = 4;
inline constexpr int kDecodeKeysPerStage = 16;  // one page
inline constexpr int kMinDecodeSplitKeys = 64;  // smallest KV split of one decode item
inline constexpr int kDecodeCtasPerSm =
    2;  // standalone decode kernel residency (3 measured slower)
inline constexpr int kPodCounterSlots = 1024;  // per-SM ticket counters (>= any %smid)

// Prefill tile: query rows [row_tile * R, +R) of one sequence's (token, head-in-group) rows (row
// = token * group + head-in-group; R = plan.prefill_rows_per_cta), for one KV head. Stored as int4
// in the workspace.
struct PrefillWorkItem {
  std::int32_t seq = 0;
  std::int32_t row_tile = 0;
  std::int32_t kv_head = 0;
  std::int32_t kv_len = 0;  // keys the tile reads: P + last token of the tile + 1
};

// Decode work item: keys [kv_begin, kv_end) of one decode sequence and KV head, for the whole
// GQA group; its partial (lse, out) lands at its own index in the workspace.
struct DecodeWorkItem {
  std::int32_t seq = 0;  // index into the full sequence arrays (num_prefill_seqs + i)
  std::int32_t kv_head = 0;
  std::int32_t kv_begin = 0;
  std::int32_t kv_end = 0;
};

// Merge of one (decode sequence, KV head): items [first_item, first_item + num_splits).
struct DecodeMergeItem {
  std::int32_t seq = 0;
  std::int32_t kv_head = 0;
  std::int32_t first_item = 0;
  std::int32_t num_splits = 0;
};

// How POD's CTAs pick prefill or decode on the SM they landed on (per-SM counters read via %smid).
enum class PodPolicy : std::int32_t {
  kAuto = 0,  // planning input only: let the plan choose
  // Per-SM tickets: tickets 0 and 1 of an SM are one prefill and one decode CTA, later tickets
  // alternate in proportion to the two CTA counts (the paper's policy).
  kTickets = 1,
  // Resident slots: each SM keeps pod_prefill_slots prefill CTAs running and fills its other
  // slots with decode CTAs, so a finishing CTA is replaced by one of its own kind (long prefill
  // tiles start early instead of trickling in at the count ratio and forming a tail).
  kSlots = 2,
  // Prefill first: every CTA takes a prefill id while any is left, then decode, so decode fills
  // the prefill's last wave. For batches whose decode is a small part of the work, where sharing
  // SMs from the start delays the prefill's critical path more than it overlaps.
  kPrefillFirst = 3,
};

struct HybridAttentionPlan {
  std::int32_t head_dim = 0;
  std::int32_t group_size = 0;                 // Hq / Hkv
  std::vector<PrefillWorkItem> prefill_items;  // longest KV first
  std::vector<DecodeWorkItem> decode_items;    // grouped by (seq, kv_head), splits consecutive
  std::vector<DecodeMergeItem> merge_items;
  std::int32_t decode_split_keys = 0;  // KV keys per decode item (last split of a pair: fewer)
  std::int32_t prefill_ctas = 0;       // = prefill_items.size()
  std::int32_t decode_ctas = 0;        // ceil(decode_item_bound / kWarpsPerCta): one warp per item
  // Items the launches cover: decode_items.size() and merge_items.size(), or in a fixed layout
  // the most any batch of grid_decode_seqs sequences has (items past the batch's exit at once).
  std::int32_t decode_item_bound = 0;
  std::int32_t merge_item_bound = 0;
  std::int32_t pod_ctas_per_sm = 2;  // 2 (measured best) or 4 (forced); see attention_plan.cpp
  PodPolicy pod_policy = PodPolicy::kTickets;  // never kAuto; see attention_plan.cpp
  std::int32_t pod_prefill_slots = 1;          // kSlots: prefill CTAs resident per SM
  // Query rows per prefill CTA: 128 (4 warps x 2 row tiles of 16) or 64 (one row tile a warp:
  // twice the CTAs for small prefills; the only choice with 4 CTAs per SM). The standalone
  // prefill kernel follows the plan, so serial, streams and POD compute the same tiles.
  std::int32_t prefill_rows_per_cta = 128;
  double prefill_flops = 0;    // 4 * D * Hq * sum(C*P + C(C+1)/2)
  double decode_kv_bytes = 0;  // 2 * Hkv * D * L * 2 per decode sequence
  // Workspace layout (byte offsets, 256-aligned). [0, counters_bytes) is reset by every run.
  std::size_t counters_bytes = 0;  // int32 sm_tickets[kPodCounterSlots], int32 next_id[2]
  // Fixed layout only (else 0): int32 [2] = the batch's decode and merge item counts.
  std::size_t counts_offset = 0;
  std::size_t prefill_items_offset = 0;
  std::size_t decode_items_offset = 0;
  std::size_t merge_items_offset = 0;
  std::size_t partial_out_offset = 0;  // float [decode_items, group, D]
  std::size_t partial_lse_offset = 0;  // float [decode_items, group] (log2 domain)
  std::size_t workspace_bytes = 0;
  std::vector<std::byte> static_image;  // bytes [counters_bytes, partial_out_offset)
};

// The shapes these kernels take (head_dim 64 or 128, page_size 16, a GQA group of at most 16):
// what the plan validates, and what the service asks before it picks the CUDA backend.
Status check_attention_shape(int num_q_heads, int num_kv_heads, int head_dim, int page_size);

// A backend's attention batch (core/backend.h AttentionSequence, any order of prefill chunks and
// decodes) as the launchers take it: prefill chunks (more than one new token) first, then decodes
// (one new token), each group in the given order; their per-sequence int32 arrays flattened into
// one array for one upload, and the planning inputs. Pure C++.
struct FlatAttentionBatch {
  std::int32_t num_prefill = 0;
  std::int32_t num_decode = 0;
  std::int32_t stride = 0;  // entries per per-sequence array: num_prefill + num_decode, or more
  // [query_offsets | num_new_tokens | num_cached_tokens | page_table_offsets], each of `stride`
  // entries (those past the batch are 0), then the flat page table (each sequence's pages
  // covering its context, no more).
  std::vector<std::int32_t> arrays;
  std::vector<std::int32_t> prefill_new_tokens, prefill_cached_tokens, decode_cached_tokens;

  bool operator==(const FlatAttentionBatch&) const = default;
  // The planning input for this batch (spans into this object).
  HybridAttentionShape shape(int num_q_heads, int num_kv_heads, int head_dim, int page_size) const;
};
// min_stride: lay the per-sequence arrays out for at least this many sequences (fixed layouts).
FlatAttentionBatch flatten_attention_batch(std::span<const AttentionSequence> sequences,
                                           int page_size, std::int32_t min_stride = 0);
// Points params' per-sequence arrays into `arrays` (laid out as FlatAttentionBatch::arrays with
// `stride` entries per array; on the device for a run) and sets the two counts.
void point_at_flat_arrays(HybridAttentionParams& params, const std::int32_t* arrays,
                          std::int32_t num_prefill, std::int32_t num_decode, std::int32_t stride);

// Waves of one-warp decode items the plan targets: 1 for decode-only batches, 2 beside a prefill
// (measured; attention_plan.cpp).
int decode_waves(int num_prefill_seqs);

// Partitions the batch. Pure C++; validates the shape (kInvalidArgument on unsupported values).
// force_ctas_per_sm: 0 = the plan's choice (2), else 2 or 4. policy: kAuto = the plan's choice.
Result<HybridAttentionPlan> plan_hybrid_attention(const HybridAttentionShape& shape,
                                                  const DeviceShape& device,
                                                  int force_ctas_per_sm = 0,
                                                  PodPolicy policy = PodPolicy::kAuto);

// Copies the plan's static image into `workspace` (device, plan.workspace_bytes). Async.
Status upload_plan(const HybridAttentionPlan& plan, void* workspace, void* stream);

// Prefill sequences only.
Status run_prefill(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                   void* workspace, void* stream);
// Decode sequences only (split-KV kernel, then the merge).
Status run_decode(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                  void* workspace, void* stream);
// Prefill launch, then decode launch, on one stream.
Status run_serial(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                  void* workspace, void* stream);
// Prefill on `stream`, decode on `side_stream`, joined back into `stream` with events.
Status run_streams(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
                   void* workspace, void* stream, void* side_stream);
// One fused POD launch (SM-aware scheduling), then the decode merge.
Status run_pod(const HybridAttentionParams& params, const HybridAttentionPlan& plan,
               void* workspace, void* stream);

}  // namespace podserve::cuda
