#include "worker/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/float_convert.h"

namespace podserve {
namespace {

TensorView view2(const DeviceBuffer& buffer, DType dtype, std::int64_t rows, std::int64_t cols) {
  return buffer.view(dtype, {rows, cols});
}

TensorView view3(const DeviceBuffer& buffer, DType dtype, std::int64_t a, std::int64_t b,
                 std::int64_t c) {
  return buffer.view(dtype, {a, b, c});
}

}  // namespace

LlamaModel::LlamaModel(const ModelConfig& config, Backend& backend, Communicator& comm,
                       const ModelOptions& options)
    : config_(config),
      backend_(backend),
      comm_(comm),
      options_(options),
      tp_size_(comm.size()),
      tp_rank_(comm.rank()),
      dtype_(backend.compute_dtype()),
      local_heads_(config.num_heads / comm.size()),
      local_kv_heads_(config.num_kv_heads / comm.size()),
      local_intermediate_(config.intermediate_size / comm.size()),
      local_vocab_(config.vocab_size / comm.size()) {}

Result<std::unique_ptr<LlamaModel>> LlamaModel::create(const ModelConfig& config,
                                                       WeightSource& weights, Backend& backend,
                                                       Communicator& comm,
                                                       const ModelOptions& options) {
  PODSERVE_RETURN_IF_ERROR(config.validate(comm.size()));
  if (options.num_pages < 1 || options.page_size < 1) {
    return invalid_argument(
        fmt::format("model: need num_pages >= 1 and page_size >= 1, got {} and {}",
                    options.num_pages, options.page_size));
  }
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, backend, comm, options));
  PODSERVE_ASSIGN_OR_RETURN(
      model->embedding_,
      model->load_tensor(weights, *llama_tensor_spec(config, "model.embed_tokens.weight")));
  PODSERVE_ASSIGN_OR_RETURN(
      model->final_norm_,
      model->load_tensor(weights, *llama_tensor_spec(config, "model.norm.weight")));
  PODSERVE_ASSIGN_OR_RETURN(model->lm_head_, model->load_tensor(weights, lm_head_spec(config)));

  const KvCacheView cache_shape = model->kv_cache(0);
  const std::size_t cache_bytes =
      cache_shape.page_elements() * options.num_pages * dtype_size(model->dtype_);
  model->layers_.resize(static_cast<std::size_t>(config.num_layers));
  for (std::int32_t i = 0; i < config.num_layers; ++i) {
    const LayerTensorNames names = layer_tensor_names(i);
    Layer& layer = model->layers_[static_cast<std::size_t>(i)];
    const auto load = [&](const std::string& name, Tensor& out) -> Status {
      PODSERVE_ASSIGN_OR_RETURN(const TensorSpec spec, llama_tensor_spec(config, name));
      PODSERVE_ASSIGN_OR_RETURN(out, model->load_tensor(weights, spec));
      return Status::Ok();
    };
    PODSERVE_RETURN_IF_ERROR(load(names.input_norm, layer.input_norm));
    PODSERVE_RETURN_IF_ERROR(load(names.q_proj, layer.q_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.k_proj, layer.k_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.v_proj, layer.v_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.o_proj, layer.o_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.post_attention_norm, layer.post_attention_norm));
    PODSERVE_RETURN_IF_ERROR(load(names.gate_proj, layer.gate_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.up_proj, layer.up_proj));
    PODSERVE_RETURN_IF_ERROR(load(names.down_proj, layer.down_proj));
    PODSERVE_ASSIGN_OR_RETURN(layer.kv_cache, options.kv_cache_allocator
                                                  ? options.kv_cache_allocator(cache_bytes)
                                                  : backend.allocate(cache_bytes));
  }
  return model;
}

Result<LlamaModel::Tensor> LlamaModel::load_tensor(WeightSource& weights, const TensorSpec& spec) {
  PODSERVE_ASSIGN_OR_RETURN(const ShardSlice slice, shard_slice(spec, tp_rank_, tp_size_));
  PODSERVE_ASSIGN_OR_RETURN(const std::vector<float> values,
                            weights.load(spec, tp_rank_, tp_size_));
  if (static_cast<std::int64_t>(values.size()) != slice.numel()) {
    return internal_error(fmt::format("{}: '{}' gave {} values for a {}x{} shard",
                                      weights.describe(), spec.name, values.size(), slice.rows(),
                                      slice.cols()));
  }
  Tensor t;
  PODSERVE_ASSIGN_OR_RETURN(t.buffer, backend_.allocate(values.size() * dtype_size(dtype_)));
  t.view = spec.shape.size() == 1 ? t.buffer.view(dtype_, {slice.rows()})
                                  : t.buffer.view(dtype_, {slice.rows(), slice.cols()});
  PODSERVE_RETURN_IF_ERROR(backend_.upload_f32(t.view, values));
  return t;
}

KvCacheView LlamaModel::kv_cache(std::int32_t layer) const {
  KvCacheView view;
  if (layer >= 0 && layer < static_cast<std::int32_t>(layers_.size()))
    view.data = layers_[static_cast<std::size_t>(layer)].kv_cache.data();
  view.dtype = dtype_;
  view.num_pages = options_.num_pages;
  view.page_size = options_.page_size;
  view.num_kv_heads = local_kv_heads_;
  view.head_dim = config_.head_dim;
  return view;
}

std::size_t LlamaModel::kv_page_bytes(const ModelConfig& config, int tp, int page_size,
                                      DType dtype) {
  const std::size_t kv_heads = static_cast<std::size_t>(config.num_kv_heads / std::max(tp, 1));
  return static_cast<std::size_t>(config.num_layers) * 2 * static_cast<std::size_t>(page_size) *
         kv_heads * static_cast<std::size_t>(config.head_dim) * dtype_size(dtype);
}

std::int32_t LlamaModel::pages_that_fit(const ModelConfig& config, int tp, std::size_t bytes,
                                        int page_size, DType dtype) {
  const std::size_t page_bytes = kv_page_bytes(config, tp, page_size, dtype);
  if (page_bytes == 0) return 0;
  return static_cast<std::int32_t>(std::min<std::size_t>(bytes / page_bytes, INT32_MAX));
}

Status LlamaModel::ensure_workspace(std::int32_t num_tokens, std::int32_t num_sampled) {
  const std::size_t e = dtype_size(dtype_);
  const auto bytes = [&](std::int64_t rows, std::int64_t cols, std::size_t element) {
    return static_cast<std::size_t>(rows * cols) * element;
  };
  if (num_tokens > ws_.token_capacity) {
    std::int32_t cap = std::max(ws_.token_capacity, 16);
    while (cap < num_tokens) cap *= 2;
    const std::int64_t h = config_.hidden_size, d = config_.head_dim;
    PODSERVE_ASSIGN_OR_RETURN(ws_.residual, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.normed, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.q, backend_.allocate(bytes(cap, local_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.k, backend_.allocate(bytes(cap, local_kv_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.v, backend_.allocate(bytes(cap, local_kv_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.attention_out,
                              backend_.allocate(bytes(cap, local_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.projected, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.gate, backend_.allocate(bytes(cap, local_intermediate_, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.up, backend_.allocate(bytes(cap, local_intermediate_, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.activated, backend_.allocate(bytes(cap, local_intermediate_, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.token_ids, backend_.allocate(bytes(cap, 1, 4)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.positions, backend_.allocate(bytes(cap, 1, 4)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.slots, backend_.allocate(bytes(cap, 1, 4)));
    ws_.token_capacity = cap;
  }
  if (num_sampled > ws_.sample_capacity) {
    std::int32_t cap = std::max(ws_.sample_capacity, 8);
    while (cap < num_sampled) cap *= 2;
    PODSERVE_ASSIGN_OR_RETURN(ws_.sampled_hidden,
                              backend_.allocate(bytes(cap, config_.hidden_size, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.sampled_normed,
                              backend_.allocate(bytes(cap, config_.hidden_size, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.local_logits, backend_.allocate(bytes(cap, local_vocab_, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.gathered_logits,
                              backend_.allocate(bytes(cap, config_.vocab_size, e)));
    ws_.sample_capacity = cap;
  }
  return Status::Ok();
}

Status LlamaModel::validate_plan(const BatchPlan& plan) const {
  for (const SequenceWork& work : plan.sequences) {
    if (work.new_tokens.empty() || work.num_cached_tokens < 0) {
      return invalid_argument(
          fmt::format("plan {}: sequence {} has no new tokens", plan.iteration, work.seq_id));
    }
    const std::int64_t pages_needed =
        (std::int64_t{work.context_length()} + options_.page_size - 1) / options_.page_size;
    if (static_cast<std::int64_t>(work.page_table.size()) < pages_needed) {
      return invalid_argument(fmt::format("plan {}: sequence {} has {} pages for {} tokens",
                                          plan.iteration, work.seq_id, work.page_table.size(),
                                          work.context_length()));
    }
    for (std::int32_t page : work.page_table) {
      if (page < 0 || page >= options_.num_pages) {
        return out_of_range(fmt::format("plan {}: sequence {} uses page {} outside [0, {})",
                                        plan.iteration, work.seq_id, page, options_.num_pages));
      }
    }
    for (TokenId token : work.new_tokens) {
      if (token < 0 || token >= config_.vocab_size) {
        return out_of_range(fmt::format("plan {}: token {} outside the vocabulary of {}",
                                        plan.iteration, token, config_.vocab_size));
      }
    }
  }
  return Status::Ok();
}

Result<std::vector<float>> LlamaModel::forward(const BatchPlan& plan,
                                               const LayerCallback& after_layer) {
  PODSERVE_RETURN_IF_ERROR(validate_plan(plan));
  attention_seconds_ = 0.0;
  const std::int32_t num_tokens = plan.total_new_tokens();
  if (num_tokens == 0) return std::vector<float>{};

  // Host-side index tensors and the attention batch description.
  std::vector<std::int32_t> token_ids, positions, slots, sample_rows;  // [T], [T], [T], [S]
  std::vector<AttentionSequence> attention_sequences;
  token_ids.reserve(static_cast<std::size_t>(num_tokens));
  positions.reserve(static_cast<std::size_t>(num_tokens));
  slots.reserve(static_cast<std::size_t>(num_tokens));
  for (const SequenceWork& work : plan.sequences) {
    AttentionSequence seq;
    seq.query_offset = static_cast<std::int32_t>(token_ids.size());
    seq.num_new_tokens = work.num_new_tokens();
    seq.num_cached_tokens = work.num_cached_tokens;
    seq.page_table = work.page_table;
    attention_sequences.push_back(seq);
    for (std::int32_t i = 0; i < work.num_new_tokens(); ++i) {
      const std::int32_t position = work.num_cached_tokens + i;
      token_ids.push_back(work.new_tokens[static_cast<std::size_t>(i)]);
      positions.push_back(position);
      slots.push_back(work.page_table[static_cast<std::size_t>(position / options_.page_size)] *
                          options_.page_size +
                      position % options_.page_size);
    }
    if (work.sample) sample_rows.push_back(static_cast<std::int32_t>(token_ids.size()) - 1);
  }
  const auto num_sampled = static_cast<std::int32_t>(sample_rows.size());
  PODSERVE_RETURN_IF_ERROR(ensure_workspace(num_tokens, num_sampled));
  PODSERVE_RETURN_IF_ERROR(
      backend_.copy_to_device(ws_.token_ids.data(), token_ids.data(), token_ids.size() * 4));
  PODSERVE_RETURN_IF_ERROR(
      backend_.copy_to_device(ws_.positions.data(), positions.data(), positions.size() * 4));
  PODSERVE_RETURN_IF_ERROR(
      backend_.copy_to_device(ws_.slots.data(), slots.data(), slots.size() * 4));

  const TensorView residual =
      view2(ws_.residual, dtype_, num_tokens, config_.hidden_size);  // [T, H]
  PODSERVE_RETURN_IF_ERROR(
      backend_.embedding(embedding_.view, ws_.token_ids.view(DType::kI32, {num_tokens}), residual));
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    PODSERVE_RETURN_IF_ERROR(run_layer(layers_[l], num_tokens, attention_sequences));
    if (after_layer) {
      PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
      PODSERVE_RETURN_IF_ERROR(after_layer(static_cast<std::int32_t>(l)));
    }
  }
  if (num_sampled == 0) {
    PODSERVE_ASSIGN_OR_RETURN(attention_seconds_, backend_.take_attention_seconds());
    return std::vector<float>{};
  }

  const TensorView sampled_hidden =
      view2(ws_.sampled_hidden, dtype_, num_sampled, config_.hidden_size);  // [S, H]
  const TensorView sampled_normed =
      view2(ws_.sampled_normed, dtype_, num_sampled, config_.hidden_size);  // [S, H]
  PODSERVE_RETURN_IF_ERROR(backend_.gather_rows(residual, sample_rows, sampled_hidden));
  PODSERVE_RETURN_IF_ERROR(
      backend_.rms_norm(sampled_hidden, final_norm_.view, config_.rms_norm_eps, sampled_normed));
  const TensorView local_logits =
      view2(ws_.local_logits, dtype_, num_sampled, local_vocab_);  // [S, V/tp]
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(sampled_normed, lm_head_.view, local_logits));
  TensorView logits = local_logits;  // [S, V]
  if (tp_size_ > 1) {
    logits = view2(ws_.gathered_logits, dtype_, num_sampled, config_.vocab_size);
    PODSERVE_RETURN_IF_ERROR(comm_.all_gather_last_dim(local_logits, logits));
  }
  std::vector<std::uint8_t> device_bytes(logits.bytes());
  PODSERVE_RETURN_IF_ERROR(backend_.copy_to_host(device_bytes.data(), logits.data, logits.bytes()));
  std::vector<float> host_logits(static_cast<std::size_t>(logits.numel()));
  PODSERVE_RETURN_IF_ERROR(convert_to_f32(device_bytes.data(), dtype_, host_logits));
  PODSERVE_ASSIGN_OR_RETURN(attention_seconds_, backend_.take_attention_seconds());
  return host_logits;
}

Status LlamaModel::run_layer(Layer& layer, std::int32_t num_tokens,
                             std::span<const AttentionSequence> attention_sequences) {
  const std::int64_t t = num_tokens, h = config_.hidden_size, d = config_.head_dim;
  const TensorView residual = view2(ws_.residual, dtype_, t, h);           // [T, H]
  const TensorView normed = view2(ws_.normed, dtype_, t, h);               // [T, H]
  const TensorView q = view2(ws_.q, dtype_, t, local_heads_ * d);          // [T, Hq/tp * D]
  const TensorView k = view2(ws_.k, dtype_, t, local_kv_heads_ * d);       // [T, Hkv/tp * D]
  const TensorView v = view2(ws_.v, dtype_, t, local_kv_heads_ * d);       // [T, Hkv/tp * D]
  const TensorView q_heads = view3(ws_.q, dtype_, t, local_heads_, d);     // [T, Hq/tp, D]
  const TensorView k_heads = view3(ws_.k, dtype_, t, local_kv_heads_, d);  // [T, Hkv/tp, D]
  const TensorView v_heads = view3(ws_.v, dtype_, t, local_kv_heads_, d);  // [T, Hkv/tp, D]
  const TensorView attention_heads =
      view3(ws_.attention_out, dtype_, t, local_heads_, d);  // [T, Hq/tp, D]
  const TensorView attention_rows =
      view2(ws_.attention_out, dtype_, t, local_heads_ * d);                // [T, Hq/tp * D]
  const TensorView projected = view2(ws_.projected, dtype_, t, h);          // [T, H]
  const TensorView gate = view2(ws_.gate, dtype_, t, local_intermediate_);  // [T, F/tp]
  const TensorView up = view2(ws_.up, dtype_, t, local_intermediate_);      // [T, F/tp]
  const TensorView activated = view2(ws_.activated, dtype_, t, local_intermediate_);  // [T, F/tp]
  const TensorView positions = ws_.positions.view(DType::kI32, {t});                  // [T]
  const TensorView slots = ws_.slots.view(DType::kI32, {t});                          // [T]
  KvCacheView cache = kv_cache(0);
  cache.data = layer.kv_cache.data();

  // Attention block: x += o_proj(attention(rope(q), rope(k), v)), summed over TP ranks.
  PODSERVE_RETURN_IF_ERROR(
      backend_.rms_norm(residual, layer.input_norm.view, config_.rms_norm_eps, normed));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.q_proj.view, q));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.k_proj.view, k));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.v_proj.view, v));
  PODSERVE_RETURN_IF_ERROR(backend_.rope(q_heads, k_heads, positions, config_.rope_theta));
  PODSERVE_RETURN_IF_ERROR(backend_.kv_append(k_heads, v_heads, slots, cache));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  PODSERVE_RETURN_IF_ERROR(backend_.attention(q_heads, cache, attention_sequences, scale,
                                              options_.attention, attention_heads));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(attention_rows, layer.o_proj.view, projected));
  if (tp_size_ > 1) PODSERVE_RETURN_IF_ERROR(comm_.all_reduce_sum(projected));
  PODSERVE_RETURN_IF_ERROR(backend_.add(residual, projected, residual));

  // MLP block: x += down(silu(gate(x)) * up(x)), summed over TP ranks.
  PODSERVE_RETURN_IF_ERROR(
      backend_.rms_norm(residual, layer.post_attention_norm.view, config_.rms_norm_eps, normed));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.gate_proj.view, gate));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.up_proj.view, up));
  PODSERVE_RETURN_IF_ERROR(backend_.silu_mul(gate, up, activated));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(activated, layer.down_proj.view, projected));
  if (tp_size_ > 1) PODSERVE_RETURN_IF_ERROR(comm_.all_reduce_sum(projected));
  return backend_.add(residual, projected, residual);
}

}  // namespace podserve
