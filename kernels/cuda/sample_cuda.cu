// The sample() op on the GPU: the contract of kernels/sampler.h with the arithmetic of
// kernels/sampling_math.h. Every reduction is over integers or an argmax with index tie-breaks,
// so the result does not depend on the order threads or CTAs meet in.
//
// A row is cut into `slices` (several CTAs per row when the batch is small, so that a 128 K
// vocabulary is read by many SMs), and four kernels run per call:
//   1. slice argmax (greedy's answer, and the max the scaled logits subtract);
//   2. slice Gumbel-max draw over every token (tokens that cannot beat the slice's best score so
//      far skip the noise) and the slice's total mass;
//   3. (top_p < 1) the slice's mass strictly above the row winner's key;
//   4-7. only for a row whose winner is not in the nucleus (the mass above the winner's key reaches
//      the nucleus target; the winner falls in the nucleus with probability ~top_p, so this is the
//      uncommon case): a radix select of the nucleus' smallest order key tau, 8 bits per pass,
//      each pass a per-row histogram of the mass by the next byte of the key among the keys that
//      match the bytes chosen so far (integer atomics: exact in any order);
//   8. for those rows, the slice draws again over the tokens with key >= tau;
//   9. one CTA per row writes the token.
// A row whose winner is in the nucleus has its token after kernel 3; the later kernels return at
// once for it (they are launched anyway, so a step is one fixed sequence a CUDA graph can hold).
// Loads are 16 bytes (8 logits) with several in flight per thread: a pass over a row is bound by
// bandwidth, not by one load's latency.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/sampling_math.h"

namespace podserve::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kSliceThreads = 512;
constexpr int kFinishThreads = 128;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kRadixPasses = 32 / kRadixBits;
constexpr int kChunksInFlight = 4;  // 16-byte loads in flight per thread
constexpr std::int64_t kMinSliceLogits = 2048;
constexpr int kMaxSlices = 64;

struct Best {
  float value;
  int index;  // -1: none
};

// Per row and slice ([rows, slices] each) and per row ([rows, passes, bins]).
struct SliceResults {
  Best* top;                  // slice argmax of the raw logits
  Best* draw;                 // slice Gumbel-max winner
  std::uint64_t* mass;        // slice total mass
  std::uint64_t* mass_above;  // slice mass with keys above the row winner's
  Best* nucleus_draw;         // slice winner among keys >= tau (rows that search tau)
  std::uint64_t* histograms;  // [rows, kRadixPasses, kRadixBins]: mass by key byte per pass
};

// a beats b: larger value, lower index on ties; a missing candidate never beats.
__device__ __forceinline__ bool beats(const Best& a, const Best& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

template <int kThreads>
__device__ Best block_best(Best mine) {
  constexpr int kWarps = kThreads / 32;
  __shared__ Best shared[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) {
    Best other;
    other.value = __shfl_down_sync(0xffffffffu, mine.value, offset);
    other.index = __shfl_down_sync(0xffffffffu, mine.index, offset);
    if (beats(other, mine)) mine = other;
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = mine;
  __syncthreads();
  Best best = shared[0];
  for (int w = 1; w < kWarps; ++w)
    if (beats(shared[w], best)) best = shared[w];
  return best;
}

// Sums kCount counters over the block; every thread gets the totals.
template <int kThreads, int kCount>
__device__ void block_sums(std::uint64_t (&sums)[kCount]) {
  constexpr int kWarps = kThreads / 32;
  __shared__ std::uint64_t shared[kWarps][kCount];
  for (int j = 0; j < kCount; ++j)
    for (int offset = 16; offset > 0; offset >>= 1)
      sums[j] += __shfl_down_sync(0xffffffffu, sums[j], offset);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  __syncthreads();
  if (lane == 0)
    for (int j = 0; j < kCount; ++j) shared[warp][j] = sums[j];
  __syncthreads();
  for (int j = 0; j < kCount; ++j) {
    std::uint64_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += shared[w][j];
    sums[j] = total;
  }
}

// Calls visit(value, token) for the logits of slice `slice` of `slices` of a row that this
// thread owns. The row is read as 16-byte chunks from its first 16-byte boundary (the slices
// split the chunks), the unaligned head and the tail past the last chunk element by element.
template <int kThreads, typename Visit>
__device__ __forceinline__ void for_each_logit(const bf16* row, std::int64_t vocab, int slice,
                                               int slices, Visit visit) {
  const int tid = static_cast<int>(threadIdx.x);
  const auto misalignment = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(row) % 16);
  const std::int64_t head = min(vocab, ((16 - misalignment) % 16) / 2);
  const std::int64_t chunks = (vocab - head) / 8;
  if (slice == 0)
    for (std::int64_t i = tid; i < head; i += kThreads) visit(__bfloat162float(row[i]), i);
  if (slice == slices - 1)
    for (std::int64_t i = head + 8 * chunks + tid; i < vocab; i += kThreads)
      visit(__bfloat162float(row[i]), i);
  const std::int64_t begin = chunks * slice / slices, end = chunks * (slice + 1) / slices;
  const uint4* base = reinterpret_cast<const uint4*>(row + head);
  for (std::int64_t c = begin + tid; c < end; c += kThreads * kChunksInFlight) {
    uint4 chunk[kChunksInFlight];
#pragma unroll
    for (int u = 0; u < kChunksInFlight; ++u) {
      const std::int64_t at = c + static_cast<std::int64_t>(u) * kThreads;
      chunk[u] = at < end ? __ldg(base + at) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kChunksInFlight; ++u) {
      const std::int64_t at = c + static_cast<std::int64_t>(u) * kThreads;
      if (at >= end) break;
      const auto* values = reinterpret_cast<const bf16*>(&chunk[u]);
#pragma unroll
      for (int e = 0; e < 8; ++e) visit(__bfloat162float(values[e]), head + 8 * at + e);
    }
  }
}

// The row's argmax from the slices' (missing when every logit is NaN).
__device__ Best row_best(const Best* slice_best, int slices) {
  Best best{0.0f, -1};
  for (int s = 0; s < slices; ++s)
    if (beats(slice_best[s], best)) best = slice_best[s];
  return best;
}

// Whether a row samples past greedy: a temperature, a token, a finite max.
__device__ __forceinline__ bool draws(const SamplingRow& row, const Best& top) {
  return top.index >= 0 && row.temperature > 0.0f && !isinf(top.value);
}

// The Gumbel-max winner among the tokens of a slice with order key >= floor_key.
template <int kThreads>
__device__ Best draw_slice(const bf16* x, std::int64_t vocab, int slice, int slices,
                           float max_logit, float temperature, std::uint64_t stream,
                           std::uint32_t floor_key, std::uint64_t* total_mass) {
  Best best{0.0f, -1};
  std::uint64_t mass = 0;
  for_each_logit<kThreads>(x, vocab, slice, slices, [&](float v, std::int64_t i) {
    if (isnan(v)) return;
    const float z = (v - max_logit) / temperature;
    if (total_mass != nullptr) mass += sampling::mass_of(z);
    if (best.index >= 0 && z + sampling::kGumbelBound < best.value) return;
    if (sampling::order_key(z) < floor_key) return;
    const float score = z + sampling::gumbel_noise(stream, static_cast<std::int32_t>(i));
    if (best.index < 0 || score > best.value) best = {score, static_cast<int>(i)};
  });
  if (total_mass != nullptr) {
    std::uint64_t sums[1] = {mass};
    block_sums<kThreads, 1>(sums);
    *total_mass = sums[0];
  }
  return block_best<kThreads>(best);
}

// What kernels 4-9 need to know of a row: whether it searches tau and, if so, its scaled logits'
// max and the nucleus target (at least 1: with a target of 0 the nucleus is the top token, as
// the mass of the key range's top bound is then still >= 0 only there).
struct RowState {
  bool search = false;
  Best top{0.0f, -1};
  Best winner{0.0f, -1};
  std::uint64_t target = 0;
};

__device__ RowState row_state(const SamplingRow& row, const SliceResults& results,
                              std::int64_t first, int slices) {
  RowState state;
  state.top = row_best(results.top + first, slices);
  if (!draws(row, state.top)) return state;
  state.winner = row_best(results.draw + first, slices);
  if (row.top_p >= 1.0f) return state;
  std::uint64_t total = 0, above = 0;
  for (int s = 0; s < slices; ++s) {
    total += results.mass[first + s];
    above += results.mass_above[first + s];
  }
  const std::uint64_t target = sampling::nucleus_target(fmaxf(row.top_p, 0.0f), total);
  state.search = above >= target;  // else the winner is in the nucleus
  state.target = target > 0 ? target : 1;
  return state;
}

// The bytes of tau chosen by the first `passes` histograms of a row: `prefix` holds them, `rem`
// the nucleus mass still to find among the keys that match them. Run by one whole warp; every
// lane gets the results. A lane holds 8 consecutive bins; the chosen bin is the highest whose mass
// summed from the top reaches rem.
__device__ void radix_prefix(const std::uint64_t* histograms, int passes, std::uint64_t target,
                             std::uint32_t* prefix, std::uint64_t* rem) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  std::uint32_t chosen = 0;
  std::uint64_t remaining = target;
  for (int q = 0; q < passes; ++q) {
    const std::uint64_t* hist = histograms + q * kRadixBins;
    std::uint64_t bins[8], lane_total = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) lane_total += bins[i] = hist[8 * lane + i];
    // Mass of the bins above this lane's: a suffix scan over the lanes.
    std::uint64_t suffix = lane_total;
    for (int offset = 1; offset < 32; offset <<= 1) {
      const std::uint64_t other = __shfl_down_sync(0xffffffffu, suffix, offset);
      if (lane + offset < 32) suffix += other;
    }
    const std::uint64_t above = suffix - lane_total;
    int bin = -1;
    std::uint64_t mass_above_bin = 0;
    std::uint64_t cum = above;
    for (int i = 7; i >= 0; --i) {
      if (bin < 0 && cum + bins[i] >= remaining) {
        bin = 8 * lane + i;
        mass_above_bin = cum;
      }
      cum += bins[i];
    }
    // The highest lane that found one holds the chosen bin.
    const unsigned found = __ballot_sync(0xffffffffu, bin >= 0);
    const int owner = found != 0 ? 31 - __clz(static_cast<int>(found)) : 0;
    const int chosen_bin = __shfl_sync(0xffffffffu, bin < 0 ? 0 : bin, owner);
    const std::uint64_t chosen_above = __shfl_sync(0xffffffffu, mass_above_bin, owner);
    chosen = (chosen << kRadixBits) | static_cast<std::uint32_t>(chosen_bin);
    remaining -= found != 0 ? chosen_above : 0;
  }
  *prefix = chosen;
  *rem = remaining;
}

// Kernel 1. grid (slices, rows).  logits [rows, vocab]
__global__ void __launch_bounds__(kSliceThreads)
    sample_top_kernel(const bf16* logits, std::int64_t vocab, SliceResults results) {
  wait_for_prior_grids();  // a dependent launch (launch_sample)
  allow_next_grid();
  const int slice = static_cast<int>(blockIdx.x), slices = static_cast<int>(gridDim.x);
  const bf16* x = logits + static_cast<std::int64_t>(blockIdx.y) * vocab;
  Best mine{0.0f, -1};
  for_each_logit<kSliceThreads>(x, vocab, slice, slices, [&](float v, std::int64_t i) {
    if (!isnan(v) && (mine.index < 0 || v > mine.value)) mine = {v, static_cast<int>(i)};
  });
  const Best best = block_best<kSliceThreads>(mine);
  if (threadIdx.x == 0) results.top[blockIdx.y * slices + slice] = best;
  if (slice == 0) {  // the row's radix histograms start at zero (kernels 4-7 add into them)
    std::uint64_t* histograms =
        results.histograms + static_cast<std::int64_t>(blockIdx.y) * kRadixPasses * kRadixBins;
    for (int i = static_cast<int>(threadIdx.x); i < kRadixPasses * kRadixBins; i += kSliceThreads)
      histograms[i] = 0;
  }
}

// A CTA of a (slices, rows) grid after a row's parameters: which slice of which row. Every
// kernel here is a dependent launch (launch_sample): this is where each waits for the kernels
// before it.
struct SliceCta {
  int slice, slices;
  std::int64_t first;  // the row's first entry in SliceResults' [rows, slices] arrays
  SamplingRow row;
  const bf16* x;  // the row's logits [vocab]
};

__device__ SliceCta enter_slice_cta(const bf16* logits, std::int64_t vocab,
                                    const SamplingRow* params) {
  wait_for_prior_grids();
  allow_next_grid();
  SliceCta cta;
  cta.slice = static_cast<int>(blockIdx.x);
  cta.slices = static_cast<int>(gridDim.x);
  cta.first = static_cast<std::int64_t>(blockIdx.y) * cta.slices;
  cta.row = params[blockIdx.y];
  cta.x = logits + static_cast<std::int64_t>(blockIdx.y) * vocab;
  return cta;
}

// Kernel 2. grid (slices, rows).
__global__ void __launch_bounds__(kSliceThreads)
    sample_draw_kernel(const bf16* logits, std::int64_t vocab, const SamplingRow* params,
                       SliceResults results) {
  const auto [slice, slices, first, row, x] = enter_slice_cta(logits, vocab, params);
  const Best top = row_best(results.top + first, slices);
  if (!draws(row, top)) return;
  std::uint64_t mass = 0;
  const Best best =
      draw_slice<kSliceThreads>(x, vocab, slice, slices, top.value, row.temperature,
                                sampling::row_stream(row.seed, row.generated_index), 0, &mass);
  if (threadIdx.x == 0) {
    results.draw[first + slice] = best;
    results.mass[first + slice] = mass;
  }
}

// Kernel 3. grid (slices, rows): the mass strictly above the row winner's key.
__global__ void __launch_bounds__(kSliceThreads)
    sample_mass_above_kernel(const bf16* logits, std::int64_t vocab, const SamplingRow* params,
                             SliceResults results) {
  const auto [slice, slices, first, row, x] = enter_slice_cta(logits, vocab, params);
  const Best top = row_best(results.top + first, slices);
  if (!draws(row, top) || row.top_p >= 1.0f) return;
  const Best winner = row_best(results.draw + first, slices);
  const std::uint32_t winner_key =
      sampling::order_key((__bfloat162float(x[winner.index]) - top.value) / row.temperature);
  std::uint64_t sums[1] = {0};
  for_each_logit<kSliceThreads>(x, vocab, slice, slices, [&](float v, std::int64_t) {
    if (isnan(v)) return;
    const float z = (v - top.value) / row.temperature;
    if (sampling::order_key(z) > winner_key) sums[0] += sampling::mass_of(z);
  });
  block_sums<kSliceThreads, 1>(sums);
  if (threadIdx.x == 0) results.mass_above[first + slice] = sums[0];
}

// Kernels 4-7. grid (slices, rows): radix pass `pass` of tau for the rows that search it.
__global__ void __launch_bounds__(kSliceThreads)
    sample_radix_kernel(const bf16* logits, std::int64_t vocab, const SamplingRow* params,
                        SliceResults results, int pass) {
  __shared__ unsigned long long bins[kRadixBins];
  __shared__ std::uint32_t prefix_s;
  const auto [slice, slices, first, row, x] = enter_slice_cta(logits, vocab, params);
  const RowState state = row_state(row, results, first, slices);
  if (!state.search) return;
  std::uint64_t* histograms =
      results.histograms + static_cast<std::int64_t>(blockIdx.y) * kRadixPasses * kRadixBins;
  if (threadIdx.x < 32) {
    std::uint32_t prefix = 0;
    std::uint64_t rem = 0;
    radix_prefix(histograms, pass, state.target, &prefix, &rem);
    if (threadIdx.x == 0) prefix_s = prefix;
  }
  for (int i = static_cast<int>(threadIdx.x); i < kRadixBins; i += kSliceThreads) bins[i] = 0;
  __syncthreads();
  const std::uint32_t prefix = prefix_s;
  const int shift = 32 - kRadixBits * (pass + 1);  // the byte this pass bins
  const float max_logit = state.top.value, temperature = row.temperature;
  // Each thread adds into its own (bin, mass) until its key's bin changes, then into the shared
  // histogram: a flat row sends nearly every key of a pass to one or two bins, where per-key
  // shared atomics (or a warp's match of equal bins per key) serialised the CTA. Integer sums:
  // exact in any order.
  unsigned held_bin = kRadixBins;
  unsigned long long held_mass = 0;
  const auto visit = [&](float v, std::int64_t) {
    if (isnan(v)) return;
    const float z = (v - max_logit) / temperature;
    const std::uint32_t key = sampling::order_key(z);
    // pass 0 bins every key (a shift by 32 is undefined: test the pass first)
    if (pass != 0 && (key >> (shift + kRadixBits)) != prefix) return;
    const unsigned bin = (key >> shift) & (kRadixBins - 1);
    if (bin != held_bin) {
      if (held_mass != 0) atomicAdd(&bins[held_bin], held_mass);
      held_bin = bin;
      held_mass = 0;
    }
    held_mass += sampling::mass_of(z);
  };
  for_each_logit<kSliceThreads>(x, vocab, slice, slices, visit);
  if (held_mass != 0) atomicAdd(&bins[held_bin], held_mass);
  __syncthreads();
  auto* histogram = reinterpret_cast<unsigned long long*>(histograms + pass * kRadixBins);
  for (int i = static_cast<int>(threadIdx.x); i < kRadixBins; i += kSliceThreads)
    if (bins[i] != 0) atomicAdd(&histogram[i], bins[i]);
}

// Kernel 8. grid (slices, rows): the slice's winner among the keys >= tau.
__global__ void __launch_bounds__(kSliceThreads)
    sample_nucleus_draw_kernel(const bf16* logits, std::int64_t vocab, const SamplingRow* params,
                               SliceResults results) {
  __shared__ std::uint32_t tau_s;
  const auto [slice, slices, first, row, x] = enter_slice_cta(logits, vocab, params);
  const RowState state = row_state(row, results, first, slices);
  if (!state.search) return;
  if (threadIdx.x < 32) {
    std::uint32_t tau = 0;
    std::uint64_t rem = 0;
    radix_prefix(
        results.histograms + static_cast<std::int64_t>(blockIdx.y) * kRadixPasses * kRadixBins,
        kRadixPasses, state.target, &tau, &rem);
    if (threadIdx.x == 0) tau_s = tau;
  }
  __syncthreads();
  const Best best = draw_slice<kSliceThreads>(
      x, vocab, slice, slices, state.top.value, row.temperature,
      sampling::row_stream(row.seed, row.generated_index), tau_s, nullptr);
  if (threadIdx.x == 0) results.nucleus_draw[first + slice] = best;
}

// Kernel 9. One thread per row: the token.  out [rows]
__global__ void sample_finish_kernel(const SamplingRow* params, std::int64_t rows, int slices,
                                     SliceResults results, std::int32_t* out) {
  wait_for_prior_grids();  // a dependent launch (launch_sample)
  allow_next_grid();
  const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  const std::int64_t first = r * slices;
  const RowState state = row_state(params[r], results, first, slices);
  if (!draws(params[r], state.top)) {
    out[r] = state.top.index;
  } else if (!state.search) {
    out[r] = state.winner.index;
  } else {
    out[r] = row_best(results.nucleus_draw + first, slices).index;
  }
}

}  // namespace

int sample_slices(std::int64_t rows, std::int64_t vocab, int num_sms) {
  if (rows <= 0) return 1;
  const std::int64_t wanted = (2 * static_cast<std::int64_t>(num_sms) + rows - 1) / rows;
  const std::int64_t most = std::max<std::int64_t>(1, vocab / kMinSliceLogits);
  return static_cast<int>(
      std::clamp<std::int64_t>(wanted, 1, std::min<std::int64_t>(most, kMaxSlices)));
}

std::size_t sample_workspace_bytes(std::int64_t rows, std::int64_t vocab, int num_sms) {
  const auto entries = static_cast<std::size_t>(rows) * sample_slices(rows, vocab, num_sms);
  return entries * (3 * sizeof(Best) + 2 * sizeof(std::uint64_t)) +
         static_cast<std::size_t>(rows) * kRadixPasses * kRadixBins * sizeof(std::uint64_t);
}

Status launch_sample(const void* logits, std::int64_t rows, std::int64_t vocab, const void* params,
                     std::int32_t* out, void* workspace, int num_sms, void* stream) {
  if (rows == 0) return Status::Ok();
  if (rows > 65535) return invalid_argument("sample: more than 65,535 rows in one call");
  const int slices = sample_slices(rows, vocab, num_sms);
  const auto entries = static_cast<std::size_t>(rows) * slices;
  SliceResults results;
  results.histograms = static_cast<std::uint64_t*>(workspace);
  results.mass = results.histograms + rows * kRadixPasses * kRadixBins;
  results.mass_above = results.mass + entries;
  results.top = reinterpret_cast<Best*>(results.mass_above + entries);
  results.draw = results.top + entries;
  results.nucleus_draw = results.draw + entries;
  const auto* x = static_cast<const bf16*>(logits);
  const auto* rows_params = static_cast<const SamplingRow*>(params);
  auto* cuda_stream = static_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>(slices), static_cast<unsigned>(rows));
  const dim3 block(kSliceThreads);
  PODSERVE_RETURN_IF_ERROR(
      launch_dependent(sample_top_kernel, grid, block, 0, cuda_stream, x, vocab, results));
  PODSERVE_RETURN_IF_ERROR(launch_dependent(sample_draw_kernel, grid, block, 0, cuda_stream, x,
                                            vocab, rows_params, results));
  PODSERVE_RETURN_IF_ERROR(launch_dependent(sample_mass_above_kernel, grid, block, 0, cuda_stream,
                                            x, vocab, rows_params, results));
  for (int pass = 0; pass < kRadixPasses; ++pass) {
    PODSERVE_RETURN_IF_ERROR(launch_dependent(sample_radix_kernel, grid, block, 0, cuda_stream, x,
                                              vocab, rows_params, results, pass));
  }
  PODSERVE_RETURN_IF_ERROR(launch_dependent(sample_nucleus_draw_kernel, grid, block, 0, cuda_stream,
                                            x, vocab, rows_params, results));
  const auto finish_blocks = static_cast<unsigned>((rows + kFinishThreads - 1) / kFinishThreads);
  PODSERVE_RETURN_IF_ERROR(launch_dependent(sample_finish_kernel, dim3(finish_blocks),
                                            dim3(kFinishThreads), 0, cuda_stream, rows_params, rows,
                                            slices, results, out));
  return Status::Ok();
}

}  // namespace podserve::cuda
