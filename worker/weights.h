// Weights of one tensor-parallel shard of a Llama-family model: which tensors exist (Hugging
// Face names, full shapes), how each is split across TP ranks, and where the values come from
// (random from a seed, or safetensors files: worker/safetensors.h).
//
// Sharding (Megatron): column-parallel q/k/v/gate/up keep rows [r*N/tp, (r+1)*N/tp) of their
// [out, in] weight (whole heads for q/k/v, an intermediate slice for gate/up); row-parallel
// o/down keep the same column slice of their [out, in] weight, so their partial outputs are
// summed with one all-reduce; lm_head is vocab-parallel (row slice, logits all-gathered along
// the vocabulary); embedding and norm weights are replicated. With tie_word_embeddings the
// lm_head is the row slice of model.embed_tokens.weight.
//
// Random weights: element i (flat index in the FULL unsharded tensor) of tensor `name` is
// Uniform(-a, a) drawn from a counter-based hash of (seed, name, i), so TP=1 and TP=2 shards are
// bitwise slices of the same full tensor. a = sqrt(3 / fan_in) for linear layers (unit-variance
// outputs for unit-RMS inputs), a = sqrt(3) for the embedding (unit-variance rows), norm
// weights are exactly 1.
//
// Contract: WeightSource implementations are used by one thread at a time; load() returns host
// fp32 values the caller owns.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/model_config.h"
#include "core/status.h"

namespace podserve {

enum class ShardAxis : std::uint8_t {
  kReplicated,  // every rank holds the whole tensor
  kRows,        // rank r holds rows [r*rows/tp, (r+1)*rows/tp)
  kColumns,     // rank r holds columns [r*cols/tp, (r+1)*cols/tp)
};

struct TensorSpec {
  std::string name;                 // Hugging Face name
  std::vector<std::int64_t> shape;  // full, unsharded: [rows] or [rows, cols]
  ShardAxis shard = ShardAxis::kReplicated;
  float init_amplitude = 0.0f;  // random weights: Uniform(-a, a); 0 means all ones

  std::int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  std::int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  std::int64_t numel() const { return rows() * cols(); }
};

// The part of a tensor one rank holds: rows [row_begin, row_end) x cols [col_begin, col_end).
struct ShardSlice {
  std::int64_t row_begin = 0, row_end = 0;
  std::int64_t col_begin = 0, col_end = 0;

  std::int64_t rows() const { return row_end - row_begin; }
  std::int64_t cols() const { return col_end - col_begin; }
  std::int64_t numel() const { return rows() * cols(); }
};
// kInvalidArgument when the sharded dimension is not divisible by tp_size.
Result<ShardSlice> shard_slice(const TensorSpec& spec, int tp_rank, int tp_size);

// Names of the per-layer tensors.
struct LayerTensorNames {
  std::string input_norm, q_proj, k_proj, v_proj, o_proj;
  std::string post_attention_norm, gate_proj, up_proj, down_proj;
  std::string q_bias, k_bias, v_bias;  // present when config.attention_bias
};
LayerTensorNames layer_tensor_names(std::int32_t layer);

// Every tensor a checkpoint of `config` holds, in a stable order (lm_head.weight absent when
// the embeddings are tied; q/k/v biases [out], row-sharded like their weights, only with
// attention_bias).
std::vector<TensorSpec> llama_checkpoint_specs(const ModelConfig& config);
// The spec of one named tensor of llama_checkpoint_specs(); lm_head_spec() gives the lm_head
// (model.embed_tokens.weight, row-sharded, when tied).
Result<TensorSpec> llama_tensor_spec(const ModelConfig& config, std::string_view name);
TensorSpec lm_head_spec(const ModelConfig& config);

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Host fp32 values of rank `tp_rank`'s slice of `spec`, row-major [slice.rows, slice.cols].
  virtual Result<std::vector<float>> load(const TensorSpec& spec, int tp_rank, int tp_size) = 0;
  virtual std::string describe() const = 0;
};

class RandomWeightSource final : public WeightSource {
 public:
  explicit RandomWeightSource(std::uint64_t seed) : seed_(seed) {}
  Result<std::vector<float>> load(const TensorSpec& spec, int tp_rank, int tp_size) override;
  std::string describe() const override;

  // Element `flat_index` of the full tensor `spec`.
  static float element(std::uint64_t seed, const TensorSpec& spec, std::int64_t flat_index);

 private:
  std::uint64_t seed_;
};

// "random" -> RandomWeightSource(seed); anything else is a safetensors file, directory or glob.
Result<std::unique_ptr<WeightSource>> open_weight_source(const std::string& weights,
                                                         std::uint64_t seed);

}  // namespace podserve
