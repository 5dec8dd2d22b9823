#include "worker/weights.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/hash.h"
#include "core/parallel.h"
#include "worker/safetensors.h"

namespace podserve {
namespace {

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : text) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

TensorSpec norm_spec(std::string name, std::int64_t size) {
  return TensorSpec{std::move(name), {size}, ShardAxis::kReplicated, 0.0f};
}

TensorSpec linear_spec(std::string name, std::int64_t out, std::int64_t in, ShardAxis shard) {
  return TensorSpec{std::move(name),
                    {out, in},
                    shard,
                    static_cast<float>(std::sqrt(3.0 / static_cast<double>(in)))};
}

// A column-parallel projection's bias [out]: sharded as the weight's rows.
TensorSpec bias_spec(std::string name, std::int64_t out, std::int64_t in) {
  return TensorSpec{std::move(name),
                    {out},
                    ShardAxis::kRows,
                    static_cast<float>(std::sqrt(3.0 / static_cast<double>(in)))};
}

TensorSpec embedding_spec(const ModelConfig& c, ShardAxis shard) {
  return TensorSpec{"model.embed_tokens.weight",
                    {c.vocab_size, c.hidden_size},
                    shard,
                    static_cast<float>(std::sqrt(3.0))};
}

}  // namespace

Result<ShardSlice> shard_slice(const TensorSpec& spec, int tp_rank, int tp_size) {
  if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) {
    return invalid_argument(fmt::format("bad TP rank {} of {}", tp_rank, tp_size));
  }
  ShardSlice s{0, spec.rows(), 0, spec.cols()};
  const auto split = [&](std::int64_t extent, std::int64_t& begin, std::int64_t& end) -> Status {
    if (extent % tp_size != 0) {
      return invalid_argument(fmt::format("tensor '{}': dimension {} not divisible by tp={}",
                                          spec.name, extent, tp_size));
    }
    begin = extent / tp_size * tp_rank;
    end = begin + extent / tp_size;
    return Status::Ok();
  };
  switch (spec.shard) {
    case ShardAxis::kReplicated: break;
    case ShardAxis::kRows:
      PODSERVE_RETURN_IF_ERROR(split(spec.rows(), s.row_begin, s.row_end));
      break;
    case ShardAxis::kColumns:
      PODSERVE_RETURN_IF_ERROR(split(spec.cols(), s.col_begin, s.col_end));
      break;
  }
  return s;
}

LayerTensorNames layer_tensor_names(std::int32_t layer) {
  const std::string p = fmt::format("model.layers.{}.", layer);
  return LayerTensorNames{p + "input_layernorm.weight",  p + "self_attn.q_proj.weight",
                          p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                          p + "self_attn.o_proj.weight", p + "post_attention_layernorm.weight",
                          p + "mlp.gate_proj.weight",    p + "mlp.up_proj.weight",
                          p + "mlp.down_proj.weight",    p + "self_attn.q_proj.bias",
                          p + "self_attn.k_proj.bias",   p + "self_attn.v_proj.bias"};
}

std::vector<TensorSpec> llama_checkpoint_specs(const ModelConfig& c) {
  const std::int64_t h = c.hidden_size, f = c.intermediate_size;
  const std::int64_t q = std::int64_t{c.num_heads} * c.head_dim;
  const std::int64_t kv = std::int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<TensorSpec> specs;
  specs.push_back(embedding_spec(c, ShardAxis::kReplicated));
  for (std::int32_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerTensorNames n = layer_tensor_names(layer);
    specs.push_back(norm_spec(n.input_norm, h));
    specs.push_back(linear_spec(n.q_proj, q, h, ShardAxis::kRows));
    specs.push_back(linear_spec(n.k_proj, kv, h, ShardAxis::kRows));
    specs.push_back(linear_spec(n.v_proj, kv, h, ShardAxis::kRows));
    if (c.attention_bias) {
      specs.push_back(bias_spec(n.q_bias, q, h));
      specs.push_back(bias_spec(n.k_bias, kv, h));
      specs.push_back(bias_spec(n.v_bias, kv, h));
    }
    specs.push_back(linear_spec(n.o_proj, h, q, ShardAxis::kColumns));
    specs.push_back(norm_spec(n.post_attention_norm, h));
    specs.push_back(linear_spec(n.gate_proj, f, h, ShardAxis::kRows));
    specs.push_back(linear_spec(n.up_proj, f, h, ShardAxis::kRows));
    specs.push_back(linear_spec(n.down_proj, h, f, ShardAxis::kColumns));
  }
  specs.push_back(norm_spec("model.norm.weight", h));
  if (!c.tie_word_embeddings) specs.push_back(lm_head_spec(c));
  return specs;
}

Result<TensorSpec> llama_tensor_spec(const ModelConfig& config, std::string_view name) {
  for (auto& spec : llama_checkpoint_specs(config))
    if (spec.name == name) return spec;
  return not_found(fmt::format("model '{}' has no tensor '{}'", config.name, name));
}

TensorSpec lm_head_spec(const ModelConfig& c) {
  if (c.tie_word_embeddings) return embedding_spec(c, ShardAxis::kRows);
  return linear_spec("lm_head.weight", c.vocab_size, c.hidden_size, ShardAxis::kRows);
}

namespace {

// The per-tensor half of RandomWeightSource's hash, computed once per tensor.
std::uint64_t random_tensor_key(std::uint64_t seed, const TensorSpec& spec) {
  return splitmix64(seed ^ fnv1a(spec.name));
}

float random_value(std::uint64_t tensor_key, float amplitude, std::int64_t flat_index) {
  const std::uint64_t h = splitmix64(tensor_key + static_cast<std::uint64_t>(flat_index));
  // 24 random bits: an exact float in [0, 1).
  const float unit = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  return (2.0f * unit - 1.0f) * amplitude;
}

}  // namespace

float RandomWeightSource::element(std::uint64_t seed, const TensorSpec& spec,
                                  std::int64_t flat_index) {
  if (spec.init_amplitude == 0.0f) return 1.0f;
  return random_value(random_tensor_key(seed, spec), spec.init_amplitude, flat_index);
}

Result<std::vector<float>> RandomWeightSource::load(const TensorSpec& spec, int tp_rank,
                                                    int tp_size) {
  PODSERVE_ASSIGN_OR_RETURN(const ShardSlice slice, shard_slice(spec, tp_rank, tp_size));
  if (spec.init_amplitude == 0.0f)
    return std::vector<float>(static_cast<std::size_t>(slice.numel()), 1.0f);
  std::vector<float> values(static_cast<std::size_t>(slice.numel()));
  const std::uint64_t key = random_tensor_key(seed_, spec);
  // An 8B model is 8e9 draws: spread the rows over the host's cores.
  parallel_for(
      slice.rows(), std::max<std::int64_t>(1, (1 << 20) / std::max<std::int64_t>(slice.cols(), 1)),
      [&](std::int64_t row_begin, std::int64_t row_end) {
        float* out = values.data() + row_begin * slice.cols();
        for (std::int64_t r = slice.row_begin + row_begin; r < slice.row_begin + row_end; ++r)
          for (std::int64_t c = slice.col_begin; c < slice.col_end; ++c)
            *out++ = random_value(key, spec.init_amplitude, r * spec.cols() + c);
      });
  return values;
}

std::string RandomWeightSource::describe() const {
  return fmt::format("random weights (seed {})", seed_);
}

Result<std::unique_ptr<WeightSource>> open_weight_source(const std::string& weights,
                                                         std::uint64_t seed) {
  if (weights == "random") return std::unique_ptr<WeightSource>(new RandomWeightSource(seed));
  PODSERVE_ASSIGN_OR_RETURN(auto source, SafetensorsWeightSource::open(weights));
  return std::unique_ptr<WeightSource>(std::move(source));
}

}  // namespace podserve
