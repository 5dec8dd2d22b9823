// The sample() op on the GPU: one CTA per row of logits, the contract of kernels/sampler.h with
// the arithmetic of kernels/sampling_math.h. Every reduction is over integers or an argmax with
// index tie-breaks, so the result does not depend on the order threads meet in.
//
// Per row: an argmax pass (greedy ends here); the Gumbel-max draw over every token (tokens that
// cannot beat the best score so far skip the noise); for top_p < 1 a pass that sums the total
// mass and the mass strictly above the winner's key: when that is below the nucleus target the
// winner is in the nucleus, hence its winner too (the common case: the winner falls in the
// nucleus with probability ~top_p). Otherwise the nucleus' smallest order key is searched (each
// pass counts the mass at or above 15 pivots that split the remaining key range in 16, so 8
// passes pin down a 32-bit key) and the draw repeated over the kept tokens.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/sampling_math.h"

namespace podserve::cuda {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kPivots = 15;

struct Best {
  float value;
  int index;  // -1: none
};

// a beats b: larger value, lower index on ties; a missing candidate never beats.
__device__ __forceinline__ bool beats(const Best& a, const Best& b) {
  if (a.index < 0) return false;
  if (b.index < 0) return true;
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__device__ Best block_best(Best mine, Best* shared) {
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
  for (int w = 1; w < kSampleWarps; ++w)
    if (beats(shared[w], best)) best = shared[w];
  return best;
}

// Sums kPivots counters over the block; every thread gets the totals.
__device__ void block_sums(std::uint64_t (&sums)[kPivots], std::uint64_t (*shared)[kPivots]) {
  for (int j = 0; j < kPivots; ++j)
    for (int offset = 16; offset > 0; offset >>= 1)
      sums[j] += __shfl_down_sync(0xffffffffu, sums[j], offset);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  __syncthreads();
  if (lane == 0)
    for (int j = 0; j < kPivots; ++j) shared[warp][j] = sums[j];
  __syncthreads();
  for (int j = 0; j < kPivots; ++j) {
    std::uint64_t total = 0;
    for (int w = 0; w < kSampleWarps; ++w) total += shared[w][j];
    sums[j] = total;
  }
}

// logits [rows, vocab]; params [rows]; out [rows]
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const __nv_bfloat16* logits, std::int64_t vocab, const SamplingRow* params,
                  std::int32_t* out) {
  __shared__ Best best_shared[kSampleWarps];
  __shared__ std::uint64_t sums_shared[kSampleWarps][kPivots];
  const __nv_bfloat16* x = logits + static_cast<std::int64_t>(blockIdx.x) * vocab;
  const SamplingRow row = params[blockIdx.x];
  const int tid = static_cast<int>(threadIdx.x);

  Best mine{0.0f, -1};
  for (std::int64_t i = tid; i < vocab; i += kSampleThreads) {
    const float v = __bfloat162float(x[i]);
    if (!isnan(v) && (mine.index < 0 || v > mine.value)) mine = {v, static_cast<int>(i)};
  }
  const Best top = block_best(mine, best_shared);
  if (top.index < 0 || !(row.temperature > 0.0f) || isinf(top.value)) {
    if (tid == 0) out[blockIdx.x] = top.index;
    return;
  }
  const float max_logit = top.value;
  const float temperature = row.temperature;
  const std::uint64_t stream = sampling::row_stream(row.seed, row.generated_index);
  // The Gumbel-max winner among tokens with order key >= floor_key.
  const auto draw = [&](std::uint32_t floor_key) {
    Best best{0.0f, -1};
    for (std::int64_t i = tid; i < vocab; i += kSampleThreads) {
      const float v = __bfloat162float(x[i]);
      if (isnan(v)) continue;
      const float z = (v - max_logit) / temperature;
      if (best.index >= 0 && z + sampling::kGumbelBound < best.value) continue;
      if (sampling::order_key(z) < floor_key) continue;
      const float score = z + sampling::gumbel_noise(stream, static_cast<std::int32_t>(i));
      if (best.index < 0 || score > best.value) best = {score, static_cast<int>(i)};
    }
    return block_best(best, best_shared);
  };
  const Best winner = draw(0);
  if (row.top_p >= 1.0f) {
    if (tid == 0) out[blockIdx.x] = winner.index;
    return;
  }

  // Total mass, and the mass strictly above the winner's key.
  const std::uint32_t winner_key =
      sampling::order_key((__bfloat162float(x[winner.index]) - max_logit) / temperature);
  std::uint64_t sums[kPivots] = {};
  for (std::int64_t i = tid; i < vocab; i += kSampleThreads) {
    const float v = __bfloat162float(x[i]);
    if (isnan(v)) continue;
    const float z = (v - max_logit) / temperature;
    const std::uint64_t mass = sampling::mass_of(z);
    sums[0] += mass;
    sums[1] += sampling::order_key(z) > winner_key ? mass : 0;
  }
  block_sums(sums, sums_shared);
  const std::uint64_t target = sampling::nucleus_target(fmaxf(row.top_p, 0.0f), sums[0]);
  if (sums[1] < target) {  // the nucleus' smallest key is at most the winner's
    if (tid == 0) out[blockIdx.x] = winner.index;
    return;
  }

  // Invariant: mass(key >= lo) >= target; the nucleus' smallest key lies in [lo, hi].
  std::uint32_t lo = 0, hi = sampling::order_key(0.0f);
  while (lo < hi) {
    const std::uint64_t span = static_cast<std::uint64_t>(hi) - lo + 1;
    const std::uint64_t step = (span + kPivots) / (kPivots + 1);
    std::uint32_t pivot[kPivots];
    for (int j = 0; j < kPivots; ++j) {
      const std::uint64_t p = lo + step * (j + 1);
      pivot[j] = p > hi ? hi : static_cast<std::uint32_t>(p);
      sums[j] = 0;
    }
    for (std::int64_t i = tid; i < vocab; i += kSampleThreads) {
      const float v = __bfloat162float(x[i]);
      if (isnan(v)) continue;
      const float z = (v - max_logit) / temperature;
      const std::uint32_t key = sampling::order_key(z);
      if (key < pivot[0]) continue;
      const std::uint64_t mass = sampling::mass_of(z);
      for (int j = 0; j < kPivots; ++j) sums[j] += key >= pivot[j] ? mass : 0;
    }
    block_sums(sums, sums_shared);
    std::uint32_t new_lo = lo, new_hi = hi;
    for (int j = 0; j < kPivots; ++j) {
      if (sums[j] >= target) {
        new_lo = pivot[j];
      } else {
        new_hi = pivot[j] - 1;
        break;
      }
    }
    lo = new_lo;
    hi = new_hi;
  }
  const Best chosen = draw(lo);
  if (tid == 0) out[blockIdx.x] = chosen.index;
}

}  // namespace

Status launch_sample(const void* logits, std::int64_t rows, std::int64_t vocab, const void* params,
                     std::int32_t* out, void* stream) {
  if (rows == 0) return Status::Ok();
  sample_kernel<<<static_cast<unsigned>(rows), kSampleThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(logits), vocab, static_cast<const SamplingRow*>(params),
      out);
  PODSERVE_CHECK(cudaGetLastError());
  return Status::Ok();
}

}  // namespace podserve::cuda
