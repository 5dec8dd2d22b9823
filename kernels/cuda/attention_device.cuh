// Internal to kernels/cuda: the device bodies of hybrid attention. One body per kind of work
// (a prefill tile of one warpgroup, a one-warp decode item, a merge of decode splits); the
// standalone kernels and the POD kernel in attention_cuda.cu are thin wrappers over them.
//
// Prefill: wgmma (sm_90a) on 128-byte-swizzled panels (wgmma.cuh). Decode: mma.sync m16n8k16 on
// row-major [rows][D] tiles with 16-byte chunk c of row r at chunk c ^ (r & 7) (conflict-free
// ldmatrix). bf16 operands, fp32 accumulators; softmax in the log2 domain (scale * log2 e).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/wgmma.cuh"

namespace podserve::cuda::device {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -__builtin_huge_valf();

// Everything a kernel needs: the caller's params and the plan's workspace, as device pointers.
struct KernelArgs {
  HybridAttentionParams params;
  const PrefillWorkItem* prefill_items;  // [prefill_ctas]
  const DecodeWorkItem* decode_items;    // [num_decode_items]
  const DecodeMergeItem* merge_items;    // [num_merge_items]
  float* partial_out;                    // [num_decode_items, group, D]
  float* partial_lse;                    // [num_decode_items, group]
  int* sm_tickets;                       // [kPodCounterSlots]: tickets, or running prefill CTAs
  int* next_ids;                         // [2]: next prefill CTA id, next decode CTA id
  int num_prefill_ctas;
  int num_decode_ctas;
  int pod_policy;          // PodPolicy as int (never kAuto)
  int pod_prefill_slots;   // PodPolicy::kSlots: prefill CTAs per SM
  int num_decode_items;    // the launch's bound on decode items
  int num_merge_items;     // the launch's bound on merge items
  const int* item_counts;  // fixed layouts: [2] = the batch's decode and merge items; else null
  float scale_log2;        // scale * log2(e)
};

// Decode and merge items of this batch (a fixed-layout launch covers more than the batch).
__device__ __forceinline__ int decode_item_count(const KernelArgs& args) {
  return args.item_counts != nullptr ? args.item_counts[0] : args.num_decode_items;
}
__device__ __forceinline__ int merge_item_count(const KernelArgs& args) {
  return args.item_counts != nullptr ? args.item_counts[1] : args.num_merge_items;
}

__device__ __forceinline__ std::uint32_t smem_addr(const void* ptr) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(ptr));
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][D] bf16 tile.
template <int D>
__device__ __forceinline__ std::uint32_t swizzle(int row, int chunk) {
  return static_cast<std::uint32_t>(row * D * 2 + ((chunk ^ (row & 7)) << 4));
}

// 16-byte async copy global -> shared; copies zeros when !valid (src must still be mapped).
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b for one m16n8k16 tile.
__device__ __forceinline__ void mma_16816(float (&c)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x & 31); }

// Online-softmax state of one warp's 16 query rows. A thread holds rows lane/4 and lane/4 + 8
// (index 0 and 1), columns 2 * (lane % 4) + {0, 1} of every 8-wide tile; l is a per-thread
// partial sum, reduced over the 4 threads of a row at the end.
template <int D>
struct WarpSoftmaxState {
  float o[D / 8][4];
  float m[2];
  float l[2];

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    m[0] = m[1] = kNegInf;
    l[0] = l[1] = 0.0f;
  }
  // Sum of l over the 4 threads sharing a row.
  __device__ __forceinline__ void reduce_l() {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
      l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
  }
};

// One warp attends its 16 query rows (Q as mma.sync A fragments in registers) to KT keys held in
// shared memory (swizzled [KT][D] tiles sK, sV: 16-byte chunk c of row r at chunk c ^ (r & 7)).
// Key key0 + j is masked for a row when need_mask and key >= the row's limit.
template <int D, int KT>
__device__ __forceinline__ void attend_tile(WarpSoftmaxState<D>& st,
                                            const std::uint32_t (&q_frag)[D / 16][4],
                                            std::uint32_t k_smem, std::uint32_t v_smem, int key0,
                                            const int (&limit)[2], bool need_mask,
                                            float scale_log2) {
  const int lane = lane_id();
  float s[KT / 8][4];
#pragma unroll
  for (int i = 0; i < KT / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;

    // S = Q K^T
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int j = 0; j < KT / 16; ++j) {
      std::uint32_t b[4];
      const int key = 16 * j + (lane & 7) + (lane >> 4) * 8;
      ldmatrix_x4(b, k_smem + swizzle<D>(key, 2 * kk + ((lane >> 3) & 1)));
      mma_16816(s[2 * j], q_frag[kk], b[0], b[1]);
      mma_16816(s[2 * j + 1], q_frag[kk], b[2], b[3]);
    }
  }

  // Scale, mask, online softmax.
  float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
  for (int nt = 0; nt < KT / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v = s[nt][e] * scale_log2;
      if (need_mask) {
        const int key = key0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        if (key >= limit[e >> 1]) v = kNegInf;
      }
      s[nt][e] = v;
      tile_max[e >> 1] = fmaxf(tile_max[e >> 1], v);
    }
  }
  float alpha[2], m_use[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    const float m_new = fmaxf(st.m[r], tile_max[r]);
    m_use[r] = m_new == kNegInf ? 0.0f : m_new;  // a row with no key yet: keep p = 0, no NaN
    alpha[r] = exp2f(st.m[r] - m_use[r]);
    st.m[r] = m_new;
  }
  float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int nt = 0; nt < KT / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = exp2f(s[nt][e] - m_use[e >> 1]);
      s[nt][e] = p;
      row_sum[e >> 1] += p;
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) st.l[r] = st.l[r] * alpha[r] + row_sum[r];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    st.o[dt][0] *= alpha[0];
    st.o[dt][1] *= alpha[0];
    st.o[dt][2] *= alpha[1];
    st.o[dt][3] *= alpha[1];
  }

  // O += P V
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) {
    const std::uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
    const int key = 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
    for (int dt = 0; dt < D / 16; ++dt) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(b, v_smem + swizzle<D>(key, 2 * dt + (lane >> 4)));
      mma_16816(st.o[2 * dt], a, b[0], b[1]);
      mma_16816(st.o[2 * dt + 1], a, b[2], b[3]);
    }
  }
}

// Shared memory of one prefill CTA: Q [kHalves * 64][D] and two stages of K and V [KT][D], each
// tile in 128-byte-swizzled panels (wgmma.cuh), plus 1 KB to align the base to 1024 bytes.
template <int D, int kHalves, int KT>
constexpr int prefill_smem_bytes() {
  return 1024 + (kHalves * 64 * D + 2 * 2 * KT * D) * 2;
}

// Byte offset of 16-byte chunk `chunk` (< D / 8) of row `row` in a [rows][D] tile of panels.
__device__ __forceinline__ std::uint32_t panel_offset(int rows, int row, int chunk) {
  return static_cast<std::uint32_t>((chunk >> 3) * rows * 128 + row * 128 +
                                    (((chunk & 7) ^ (row & 7)) << 4));
}

// Online softmax of one 64-row half's S tile [64][KT] (this thread's two rows, wgmma accumulator
// layout) in place: masks keys at or past a row's limit, scales into the log2 domain inside the
// exponent (one FFMA per score), updates
// the running max and sum, rescales O, and packs P as the bf16 A operand of P V.
template <int D, int KT>
__device__ __forceinline__ void softmax_half(float (&s)[KT / 2], float (&o)[D / 2], float (&m)[2],
                                             float (&l)[2], std::uint32_t (&pf)[KT / 16][4],
                                             const int (&limit)[2], int key0, bool need_mask,
                                             float scale_log2) {
  const int lane = lane_id();
  float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
  for (int j = 0; j < KT / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (need_mask && key0 + 8 * j + 2 * (lane & 3) + (e & 1) >= limit[e >> 1])
        s[4 * j + e] = kNegInf;
      tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[4 * j + e]);
    }
  }
  float alpha[2], m_use[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
    tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
    const float m_new = fmaxf(m[r], tile_max[r] * scale_log2);  // scale > 0: max commutes
    m_use[r] = m_new == kNegInf ? 0.0f : m_new;  // a row with no key yet: keep p = 0, no NaN
    alpha[r] = exp2f(m[r] - m_use[r]);
    m[r] = m_new;
  }
  float row_sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < KT / 2; ++i) {
    const float pv = exp2f(fmaf(s[i], scale_log2, -m_use[(i >> 1) & 1]));
    s[i] = pv;
    row_sum[(i >> 1) & 1] += pv;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + row_sum[r];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
#pragma unroll
  for (int kk = 0; kk < KT / 16; ++kk) {
    pf[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
    pf[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
    pf[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
    pf[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

// One prefill tile on one warpgroup (the whole 128-thread CTA): kHalves * 64 (token,
// head-in-group) query rows of one sequence and KV head against keys [0, kv_len), causal
// bottom-right, KT keys per step. S = Q K^T and O += P V run on wgmma with Q, K and V in shared
// memory (P from registers); K/V stages are gathered page by page with cp.async, double
// buffered, the next stage's loads issued while the current S is on the tensor cores (one
// barrier a step: a warp reaches step t + 1's barrier only after its step-t wgmmas completed,
// so the stage they read is free once the barrier passes). Within a step the halves are pipelined:
// half 1's S is in flight during half 0's softmax, and half 0's P V during half 1's.
template <int D, int kHalves, int KT>
__device__ __forceinline__ void prefill_tile(const KernelArgs& args, int item_index,
                                             char* smem_raw) {
  constexpr int kRows = 64 * kHalves;
  constexpr int kChunks = D / 8;
  constexpr int kStageBytes = KT * D * 2;  // one K or V stage
  const HybridAttentionParams& p = args.params;
  const PrefillWorkItem item = args.prefill_items[item_index];
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int group = p.num_q_heads / p.num_kv_heads;
  const int num_new = p.num_new_tokens[item.seq];
  const int num_cached = p.num_cached_tokens[item.seq];
  const int query_offset = p.query_offsets[item.seq];
  const std::int32_t* page_table = p.page_table + p.page_table_offsets[item.seq];
  const int rows = num_new * group;
  const int row0 = item.row_tile * kRows;
  const int kv_len = item.kv_len;
  const auto* q = static_cast<const __nv_bfloat16*>(p.q);

  const std::uint32_t q_smem = (smem_addr(smem_raw) + 1023u) & ~1023u;  // [kRows][D] panels
  const std::uint32_t k_smem = q_smem + kRows * D * 2;                  // [2][KT][D] panels
  const std::uint32_t v_smem = k_smem + 2 * kStageBytes;                // [2][KT][D] panels

  for (int idx = tid; idx < kRows * kChunks; idx += kThreadsPerCta) {
    const int r = idx / kChunks;
    const int c = idx % kChunks;
    const int row = row0 + r;
    const bool valid = row < rows;
    const int token = valid ? row / group : 0;
    const int head = item.kv_head * group + (valid ? row % group : 0);
    const __nv_bfloat16* src =
        q + (static_cast<std::int64_t>(query_offset + token) * p.num_q_heads + head) * D + c * 8;
    cp_async16(q_smem + panel_offset(kRows, r, c), src, valid);
  }
  cp_async_commit();

  // K/V gather: thread tid copies 16-byte chunk tid % kChunks of rows tid / kChunks + j * kRowStep
  // of each page; one page-table read per page and thread, the rest is compile-time offsets.
  constexpr int kRowStep = kThreadsPerCta / kChunks;  // 8 (D = 128) or 16 (D = 64)
  static_assert(kDecodeKeysPerStage % kRowStep == 0, "rows of a page split evenly");
  const int chunk = tid % kChunks;
  const int row_in_page0 = tid / kChunks;
  const std::int64_t kv_row_stride = static_cast<std::int64_t>(p.num_kv_heads) * D;  // one key
  const auto* kv_head_base = static_cast<const __nv_bfloat16*>(p.kv) + item.kv_head * D + chunk * 8;
  auto load_kv = [&](int tile, int stage) {
    const std::uint32_t k_dst = k_smem + stage * kStageBytes;
    const std::uint32_t v_dst = v_smem + stage * kStageBytes;
#pragma unroll
    for (int pg = 0; pg < KT / kDecodeKeysPerStage; ++pg) {
      const int page_key0 = tile * KT + pg * kDecodeKeysPerStage;
      const std::int64_t page = page_key0 < kv_len ? page_table[page_key0 >> 4] : 0;
      const __nv_bfloat16* k_page = kv_head_base + page * 2 * kDecodeKeysPerStage * kv_row_stride;
      const __nv_bfloat16* v_page = k_page + kDecodeKeysPerStage * kv_row_stride;
#pragma unroll
      for (int j = 0; j < kDecodeKeysPerStage / kRowStep; ++j) {
        const int row_in_page = row_in_page0 + j * kRowStep;
        const int r = pg * kDecodeKeysPerStage + row_in_page;
        const bool valid = page_key0 + row_in_page < kv_len;
        const std::uint32_t offset = panel_offset(KT, r, chunk);
        cp_async16(k_dst + offset, k_page + row_in_page * kv_row_stride, valid);
        cp_async16(v_dst + offset, v_page + row_in_page * kv_row_stride, valid);
      }
    }
  };

  const int num_tiles = (kv_len + KT - 1) / KT;
  load_kv(0, 0);
  cp_async_commit();

  // This thread's rows: 16 * warp + lane / 4 (+8) of each half.
  int limit[kHalves][2];
#pragma unroll
  for (int h = 0; h < kHalves; ++h)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 64 * h + 16 * warp + 8 * r + (lane >> 2);
      limit[h][r] = row < rows ? num_cached + row / group + 1 : 0;
    }
  const int tile_min_limit = num_cached + row0 / group + 1;

  float o[kHalves][D / 2];
  float m[kHalves][2];
  float l[kHalves][2];
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[h][i] = 0.0f;
    m[h][0] = m[h][1] = kNegInf;
    l[h][0] = l[h][1] = 0.0f;
  }

  for (int t = 0; t < num_tiles; ++t) {
    // Stage t (and Q) landed; every warp finished step t - 1, so stage (t + 1) & 1 is free.
    cp_async_wait<0>();
    fence_proxy_async_shared();
    __syncthreads();
    const std::uint32_t k_tile = k_smem + (t & 1) * kStageBytes;
    const std::uint32_t v_tile = v_smem + (t & 1) * kStageBytes;

    float s[kHalves][KT / 2];
    wgmma_fence();
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const std::uint64_t desc_q =
            wgmma_desc(q_smem + (kk >> 2) * kRows * 128 + h * 64 * 128 + (kk & 3) * 32, 16, 1024);
        const std::uint64_t desc_k =
            wgmma_desc(k_tile + (kk >> 2) * KT * 128 + (kk & 3) * 32, 16, 1024);
        wgmma_ss<KT>(s[h], desc_q, desc_k, kk > 0);
      }
      wgmma_commit();
    }
    // The next stage's gather is issued while the tensor cores compute S.
    if (t + 1 < num_tiles) load_kv(t + 1, (t + 1) & 1);
    cp_async_commit();

    const bool need_mask = (t + 1) * KT > tile_min_limit;
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      // Pending groups: S of halves h.. and P V of halves ..h-1, oldest first.
      if (h == 0) {
        wgmma_wait<kHalves - 1>();
      } else {
        wgmma_wait<1>();
      }
      wgmma_pin(s[h]);
      std::uint32_t pf[KT / 16][4];
      softmax_half<D, KT>(s[h], o[h], m[h], l[h], pf, limit[h], t * KT, need_mask, args.scale_log2);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < KT / 16; ++kk) {
        wgmma_rs_tb<D>(o[h], pf[kk], wgmma_desc(v_tile + kk * 16 * 128, KT * 128, 1024));
      }
      wgmma_commit();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int h = 0; h < kHalves; ++h) wgmma_pin(o[h]);
  }

  auto* out = static_cast<__nv_bfloat16*>(p.out);
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float row_l = l[h][r];
      row_l += __shfl_xor_sync(0xffffffffu, row_l, 1);
      row_l += __shfl_xor_sync(0xffffffffu, row_l, 2);
      const int row = row0 + 64 * h + 16 * warp + 8 * r + (lane >> 2);
      if (row >= rows) continue;
      const float inv_l = 1.0f / row_l;
      const int token = row / group;
      const int head = item.kv_head * group + row % group;
      __nv_bfloat16* dst =
          out + (static_cast<std::int64_t>(query_offset + token) * p.num_q_heads + head) * D +
          (lane & 3) * 2;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        *reinterpret_cast<__nv_bfloat162*>(dst + j * 8) =
            __floats2bfloat162_rn(o[h][4 * j + 2 * r] * inv_l, o[h][4 * j + 2 * r + 1] * inv_l);
      }
    }
  }
}

// Shared memory of one decode warp: kStages stages of one page of K and V [16][D].
template <int D, int kStages>
constexpr int decode_warp_smem_bytes() {
  return kStages * 2 * kDecodeKeysPerStage * D * 2;
}

// One decode work item on one warp (a "virtual CTA"): the GQA group of one KV head (padded to 16
// query rows) against keys [kv_begin, kv_end); writes the normalized partial output and its
// log2-sum-exp to the workspace for the merge.
template <int D, int kStages>
__device__ __forceinline__ void decode_item(const KernelArgs& args, int item_index,
                                            char* warp_smem) {
  const HybridAttentionParams& p = args.params;
  const DecodeWorkItem item = args.decode_items[item_index];
  const int lane = lane_id();
  const int group = p.num_q_heads / p.num_kv_heads;
  const int query_row = p.query_offsets[item.seq];
  const std::int32_t* page_table = p.page_table + p.page_table_offsets[item.seq];
  const auto* q = static_cast<const __nv_bfloat16*>(p.q) +
                  (static_cast<std::int64_t>(query_row) * p.num_q_heads + item.kv_head * group) * D;
  constexpr int kChunks = D / 8;
  constexpr int kStageBytes = 2 * kDecodeKeysPerStage * D * 2;
  const std::uint32_t smem = smem_addr(warp_smem);

  auto load_stage = [&](int tile, int slot) {
    const int key0 = item.kv_begin + tile * kDecodeKeysPerStage;  // page aligned
    const std::int64_t page = page_table[key0 >> 4];
    const auto* page_base = static_cast<const __nv_bfloat16*>(p.kv) +
                            page * 2 * kDecodeKeysPerStage * p.num_kv_heads * D + item.kv_head * D;
    const std::uint32_t k_dst = smem + slot * kStageBytes;
    const std::uint32_t v_dst = k_dst + kDecodeKeysPerStage * D * 2;
#pragma unroll
    for (int i = 0; i < kDecodeKeysPerStage * kChunks / 32; ++i) {
      const int idx = lane + 32 * i;
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      const bool valid = key0 + r < item.kv_end;
      const __nv_bfloat16* k_src =
          page_base + static_cast<std::int64_t>(r) * p.num_kv_heads * D + c * 8;
      const __nv_bfloat16* v_src =
          k_src + static_cast<std::int64_t>(kDecodeKeysPerStage) * p.num_kv_heads * D;
      cp_async16(k_dst + swizzle<D>(r, c), k_src, valid);
      cp_async16(v_dst + swizzle<D>(r, c), v_src, valid);
    }
  };

  const int num_tiles =
      (item.kv_end - item.kv_begin + kDecodeKeysPerStage - 1) / kDecodeKeysPerStage;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_stage(s, s);
    cp_async_commit();
  }

  // Q fragments straight from global memory (read once per item); rows >= group are zero.
  std::uint32_t q_frag[D / 16][4];
  const int r0 = lane >> 2;
  const int r1 = r0 + 8;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int col = kk * 16 + (lane & 3) * 2;
    q_frag[kk][0] = r0 < group ? *reinterpret_cast<const std::uint32_t*>(q + r0 * D + col) : 0u;
    q_frag[kk][1] = r1 < group ? *reinterpret_cast<const std::uint32_t*>(q + r1 * D + col) : 0u;
    q_frag[kk][2] = r0 < group ? *reinterpret_cast<const std::uint32_t*>(q + r0 * D + col + 8) : 0u;
    q_frag[kk][3] = r1 < group ? *reinterpret_cast<const std::uint32_t*>(q + r1 * D + col + 8) : 0u;
  }
  const int limit[2] = {item.kv_end, item.kv_end};

  WarpSoftmaxState<D> st;
  st.init();
  for (int t = 0; t < num_tiles; ++t) {
    const int next = t + kStages - 1;
    if (next < num_tiles) load_stage(next, next % kStages);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const int key0 = item.kv_begin + t * kDecodeKeysPerStage;
    const std::uint32_t k_src = smem + (t % kStages) * kStageBytes;
    attend_tile<D, kDecodeKeysPerStage>(st, q_frag, k_src, k_src + kDecodeKeysPerStage * D * 2,
                                        key0, limit, key0 + kDecodeKeysPerStage > item.kv_end,
                                        args.scale_log2);
    __syncwarp();
  }
  cp_async_wait<0>();

  st.reduce_l();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? r0 : r1;
    if (row >= group) continue;
    const float inv_l = 1.0f / st.l[r];
    float* dst = args.partial_out + (static_cast<std::int64_t>(item_index) * group + row) * D +
                 (lane & 3) * 2;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<float2*>(dst + dt * 8) =
          make_float2(st.o[dt][2 * r] * inv_l, st.o[dt][2 * r + 1] * inv_l);
    }
    if ((lane & 3) == 0) args.partial_lse[item_index * group + row] = st.m[r] + log2f(st.l[r]);
  }
}

// Combines the split partial states of one (decode sequence, KV head, query head of its group)
// into bf16 outputs. Every warp reduces the max and sum of the head's split log-sum-exps itself
// (lanes over splits: no barrier before the sums start); warp w then sums splits w, w + 4, ...
// with each lane holding D / 32 consecutive outputs (one vector load per split, all of a warp's
// splits in flight), and the four warps' sums are added in warp order through shared memory (a
// fixed order: results do not depend on timing). One CTA per query head keeps a single item's
// merge short at small batches; its latency is about two L2 round trips, not one per split.
template <int D>
__device__ __forceinline__ void merge_item(const KernelArgs& args, int merge_index, int g) {
  constexpr int kWarps = kThreadsPerCta / 32;
  constexpr int kPerLane = D / 32;  // 4 (D = 128) or 2 (D = 64)
  static_assert(kPerLane == 2 || kPerLane == 4, "merge_item: head dim 64 or 128");
  __shared__ float warp_sums[kWarps][D];
  const HybridAttentionParams& p = args.params;
  const DecodeMergeItem item = args.merge_items[merge_index];
  const int group = p.num_q_heads / p.num_kv_heads;
  const float* lse = args.partial_lse + static_cast<std::int64_t>(item.first_item) * group;
  const float* partial = args.partial_out + static_cast<std::int64_t>(item.first_item) * group * D;
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) / 32;
  float m = kNegInf;
  for (int s = lane; s < item.num_splits; s += 32) m = fmaxf(m, lse[s * group + g]);
  for (int offset = 16; offset > 0; offset >>= 1)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  float sum = 0.0f;
  for (int s = lane; s < item.num_splits; s += 32) sum += exp2f(lse[s * group + g] - m);
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);

  float acc[kPerLane] = {};
#pragma unroll 4
  for (int s = warp; s < item.num_splits; s += kWarps) {
    const float weight = exp2f(lse[s * group + g] - m);
    const float* src = partial + (static_cast<std::int64_t>(s) * group + g) * D + lane * kPerLane;
    if constexpr (kPerLane == 4) {
      const float4 v = *reinterpret_cast<const float4*>(src);
      acc[0] += weight * v.x;
      acc[1] += weight * v.y;
      acc[2] += weight * v.z;
      acc[3] += weight * v.w;
    } else {
      const float2 v = *reinterpret_cast<const float2*>(src);
      acc[0] += weight * v.x;
      acc[1] += weight * v.y;
    }
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) warp_sums[warp][lane * kPerLane + i] = acc[i];
  __syncthreads();
  auto* out = static_cast<__nv_bfloat16*>(p.out) +
              (static_cast<std::int64_t>(p.query_offsets[item.seq]) * p.num_q_heads +
               item.kv_head * group + g) *
                  D;
  const float inv_sum = 1.0f / sum;
  for (int d = static_cast<int>(threadIdx.x); d < D; d += kThreadsPerCta) {
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w][d];
    out[d] = __float2bfloat16_rn(total * inv_sum);
  }
}

__device__ __forceinline__ unsigned sm_id() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(id));
  return id;
}

}  // namespace podserve::cuda::device
