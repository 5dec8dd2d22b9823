// Token sampling from one row of logits: greedy, temperature and top-p (nucleus). This is the
// reference of the sampling contract; the CUDA backend's sample() op follows the same contract
// (kernels/sampling_math.h holds the arithmetic both use).
//
// Contract: stateless, pure and thread-safe. The random draw depends only on
// (params.seed, generated_index) through a counter-based hash, never on global RNG state,
// batch composition or TP degree, so a request recomputed after preemption, or served by
// another instance with the same seed, samples the same tokens from the same logits.
// Logits are host fp32 values; NaN logits are never chosen.
#pragma once

#include <cstdint>
#include <span>

#include "core/types.h"

namespace podserve {

// Picks the next token. generated_index counts the tokens this request has generated so far
// (0 for the first). temperature <= 0: argmax, lowest index on ties. Otherwise samples from
// softmax(logits / temperature) restricted to the top-p nucleus: the most probable tokens whose
// mass reaches top_p, every token tied with the least probable one of them included,
// renormalized; top_p >= 1 keeps every token. The draw is Gumbel-max with per-token noise
// hashed from (seed, generated_index, token id): kernels/sampling_math.h gives the exact
// arithmetic. Returns -1 when logits is empty or all NaN.
TokenId sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::int32_t generated_index);

}  // namespace podserve
