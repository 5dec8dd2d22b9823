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
  if (options.max_graph_batch < 1 || options.max_context < 0) {
    return invalid_argument(
        fmt::format("model: need max_graph_batch >= 1 and max_context >= 0, got {} and {}",
                    options.max_graph_batch, options.max_context));
  }
  backend.set_small_batch_kernels(options.small_batch_kernels);
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
    const auto load = [&](std::initializer_list<const std::string*> tensor_names,
                          Tensor& out) -> Status {
      std::vector<TensorSpec> specs;
      for (const std::string* name : tensor_names) {
        PODSERVE_ASSIGN_OR_RETURN(TensorSpec spec, llama_tensor_spec(config, *name));
        specs.push_back(std::move(spec));
      }
      PODSERVE_ASSIGN_OR_RETURN(out, specs.size() == 1 ? model->load_tensor(weights, specs[0])
                                                       : model->load_stacked(weights, specs));
      return Status::Ok();
    };
    PODSERVE_RETURN_IF_ERROR(load({&names.input_norm}, layer.input_norm));
    PODSERVE_RETURN_IF_ERROR(load({&names.q_proj, &names.k_proj, &names.v_proj}, layer.qkv_proj));
    PODSERVE_RETURN_IF_ERROR(load({&names.o_proj}, layer.o_proj));
    PODSERVE_RETURN_IF_ERROR(load({&names.post_attention_norm}, layer.post_attention_norm));
    PODSERVE_RETURN_IF_ERROR(load({&names.gate_proj, &names.up_proj}, layer.gate_up_proj));
    PODSERVE_RETURN_IF_ERROR(load({&names.down_proj}, layer.down_proj));
    PODSERVE_ASSIGN_OR_RETURN(layer.kv_cache, options.kv_cache_allocator
                                                  ? options.kv_cache_allocator(cache_bytes)
                                                  : backend.allocate(cache_bytes));
  }
  PODSERVE_RETURN_IF_ERROR(model->load_extras(weights));
  return model;
}

Result<LlamaModel::Tensor> LlamaModel::load_tensor(WeightSource& weights, const TensorSpec& spec) {
  return load_stacked(weights, std::span<const TensorSpec>(&spec, 1));
}

Result<LlamaModel::Tensor> LlamaModel::load_stacked(WeightSource& weights,
                                                    std::span<const TensorSpec> specs) {
  std::vector<float> values;
  std::int64_t rows = 0, cols = 0;
  for (const TensorSpec& spec : specs) {
    PODSERVE_ASSIGN_OR_RETURN(const ShardSlice slice, shard_slice(spec, tp_rank_, tp_size_));
    PODSERVE_ASSIGN_OR_RETURN(const std::vector<float> part,
                              weights.load(spec, tp_rank_, tp_size_));
    if (static_cast<std::int64_t>(part.size()) != slice.numel()) {
      return internal_error(fmt::format("{}: '{}' gave {} values for a {}x{} shard",
                                        weights.describe(), spec.name, part.size(), slice.rows(),
                                        slice.cols()));
    }
    if (rows > 0 && slice.cols() != cols) {
      return internal_error(fmt::format("'{}' has {} columns, the tensors stacked with it {}",
                                        spec.name, slice.cols(), cols));
    }
    rows += slice.rows();
    cols = slice.cols();
    values.insert(values.end(), part.begin(), part.end());
  }
  Tensor t;
  PODSERVE_ASSIGN_OR_RETURN(t.buffer, backend_.allocate(values.size() * dtype_size(dtype_)));
  t.view = specs.size() == 1 && specs[0].shape.size() == 1 ? t.buffer.view(dtype_, {rows})
                                                           : t.buffer.view(dtype_, {rows, cols});
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
  if (num_tokens <= ws_.token_capacity && num_sampled <= ws_.sample_capacity) return Status::Ok();
  const std::size_t e = dtype_size(dtype_);
  const auto bytes = [&](std::int64_t rows, std::int64_t cols, std::size_t element) {
    return static_cast<std::size_t>(rows * cols) * element;
  };
  const std::int64_t h = config_.hidden_size, d = config_.head_dim;
  if (num_tokens > ws_.token_capacity) {
    std::int32_t cap = std::max(ws_.token_capacity, 16);
    while (cap < num_tokens) cap *= 2;
    PODSERVE_ASSIGN_OR_RETURN(ws_.residual, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.normed, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.projected, backend_.allocate(bytes(cap, h, e)));
    PODSERVE_ASSIGN_OR_RETURN(
        ws_.qkv, backend_.allocate(bytes(cap, (local_heads_ + 2 * local_kv_heads_) * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.q, backend_.allocate(bytes(cap, local_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.attention_out,
                              backend_.allocate(bytes(cap, local_heads_ * d, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.gate_up,
                              backend_.allocate(bytes(cap, 2 * local_intermediate_, e)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.activated, backend_.allocate(bytes(cap, local_intermediate_, e)));
    if (config_.attention_bias) {
      PODSERVE_ASSIGN_OR_RETURN(ws_.ones, backend_.allocate(bytes(cap, 1, e)));
      PODSERVE_RETURN_IF_ERROR(
          backend_.upload_f32(ws_.ones.view(dtype_, {cap, 1}),
                              std::vector<float>(static_cast<std::size_t>(cap), 1.0f)));
    }
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
    PODSERVE_ASSIGN_OR_RETURN(ws_.sampled_ids, backend_.allocate(bytes(cap, 1, 4)));
    PODSERVE_ASSIGN_OR_RETURN(ws_.sampled_ids_staged, backend_.allocate_host(bytes(cap, 1, 4)));
    ws_.sample_capacity = cap;
  }
  // The step inputs follow both capacities; their staging must be idle before it is replaced.
  if (inputs_in_flight_) {
    PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
    inputs_in_flight_ = false;
  }
  const std::size_t input_bytes =
      bytes(ws_.token_capacity, 3, 4) + bytes(ws_.sample_capacity, 1, sizeof(SamplingRow));
  PODSERVE_ASSIGN_OR_RETURN(ws_.inputs, backend_.allocate(input_bytes));
  PODSERVE_ASSIGN_OR_RETURN(ws_.inputs_staged, backend_.allocate_host(input_bytes));
  ++ws_.generation;
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

TensorView LlamaModel::int_view(std::size_t byte_offset, std::int64_t count) const {
  return make_view(static_cast<char*>(ws_.inputs.data()) + byte_offset, DType::kI32, {count});
}

bool LlamaModel::bucketed(const BatchPlan& plan, std::span<const SamplingRow> rows,
                          const LayerCallback& after_layer) const {
  if (!backend_.supports_graphs() || tp_size_ != 1 || after_layer ||
      rows.size() != plan.sequences.size() ||
      static_cast<std::int32_t>(plan.sequences.size()) > options_.max_graph_batch)
    return false;
  const std::int64_t max_tokens = std::int64_t{graph_layout_pages()} * options_.page_size;
  for (const SequenceWork& work : plan.sequences) {
    if (work.num_new_tokens() != 1 || !work.sample || work.context_length() > max_tokens)
      return false;
  }
  return true;
}

std::int32_t LlamaModel::graph_bucket(std::int32_t batch) const {
  std::int32_t bucket = 1;
  while (bucket < batch && bucket < 8) bucket *= 2;
  if (batch > 8) {
    const std::int32_t step = batch <= 64 ? 8 : batch <= 128 ? 16 : 32;
    bucket = (batch + step - 1) / step * step;
  }
  return std::min(bucket, options_.max_graph_batch);
}

std::int32_t LlamaModel::graph_layout_pages() const {
  const std::int64_t context =
      options_.max_context > 0 ? options_.max_context : config_.max_position_embeddings;
  const std::int64_t pages = (context + options_.page_size - 1) / options_.page_size;
  return static_cast<std::int32_t>(std::clamp<std::int64_t>(pages, 1, options_.num_pages));
}

Status LlamaModel::stage_inputs(const BatchPlan& plan, std::span<const SamplingRow> rows,
                                std::int32_t padded_tokens, std::int32_t padded_rows) {
  if (inputs_in_flight_) {
    PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
    inputs_in_flight_ = false;
  }
  const std::size_t cap = static_cast<std::size_t>(ws_.token_capacity);
  auto* staged = static_cast<std::int32_t*>(ws_.inputs_staged.data());
  std::int32_t* token_ids = staged;        // [T]
  std::int32_t* positions = staged + cap;  // [T]
  std::int32_t* slots = staged + 2 * cap;  // [T]
  std::size_t t = 0;
  for (const SequenceWork& work : plan.sequences) {
    for (std::int32_t i = 0; i < work.num_new_tokens(); ++i, ++t) {
      const std::int32_t position = work.num_cached_tokens + i;
      token_ids[t] = work.new_tokens[static_cast<std::size_t>(i)];
      positions[t] = position;
      slots[t] = work.page_table[static_cast<std::size_t>(position / options_.page_size)] *
                     options_.page_size +
                 position % options_.page_size;
    }
  }
  for (; t < static_cast<std::size_t>(padded_tokens); ++t) {
    token_ids[t] = 0;
    positions[t] = 0;
    slots[t] = -1;
  }
  auto* sampling = reinterpret_cast<SamplingRow*>(staged + 3 * cap);  // [S]
  std::copy(rows.begin(), rows.end(), sampling);
  std::fill(sampling + rows.size(), sampling + padded_rows, SamplingRow{});
  // Token fields in one piece up to the last slot, then the sampling rows.
  PODSERVE_RETURN_IF_ERROR(backend_.stage_to_device(ws_.inputs.data(), staged,
                                                    (2 * cap + static_cast<std::size_t>(t)) * 4));
  PODSERVE_RETURN_IF_ERROR(
      backend_.stage_to_device(static_cast<char*>(ws_.inputs.data()) + 3 * cap * 4, sampling,
                               static_cast<std::size_t>(padded_rows) * sizeof(SamplingRow)));
  inputs_in_flight_ = true;
  return Status::Ok();
}

Status LlamaModel::prepare_attention(const BatchPlan& plan, const AttentionBatchOptions& options) {
  std::vector<AttentionSequence> sequences;
  sequences.reserve(plan.sequences.size());
  std::int32_t offset = 0;
  for (const SequenceWork& work : plan.sequences) {
    AttentionSequence seq;
    seq.query_offset = offset;
    seq.num_new_tokens = work.num_new_tokens();
    seq.num_cached_tokens = work.num_cached_tokens;
    seq.page_table = work.page_table;
    sequences.push_back(seq);
    offset += work.num_new_tokens();
  }
  return backend_.prepare_attention(sequences, kv_cache(0), options);
}

Status LlamaModel::run_layers(std::int32_t num_tokens, const LayerCallback& after_layer) {
  const TensorView residual =
      view2(ws_.residual, dtype_, num_tokens, config_.hidden_size);  // [T, H]
  PODSERVE_RETURN_IF_ERROR(backend_.embedding(embedding_.view, int_view(0, num_tokens), residual));
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    PODSERVE_RETURN_IF_ERROR(run_layer(layers_[l], num_tokens));
    if (after_layer) {
      PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
      PODSERVE_RETURN_IF_ERROR(after_layer(static_cast<std::int32_t>(l)));
    }
  }
  return Status::Ok();
}

Result<TensorView> LlamaModel::compute_logits(std::span<const std::int32_t> sample_rows,
                                              std::int32_t num_sampled) {
  const TensorView sampled_normed =
      view2(ws_.sampled_normed, dtype_, num_sampled, config_.hidden_size);  // [S, H]
  if (sample_rows.empty()) {
    // Every row samples, in order: the norm reads the residual directly.
    PODSERVE_RETURN_IF_ERROR(
        backend_.rms_norm(view2(ws_.residual, dtype_, num_sampled, config_.hidden_size),
                          final_norm_.view, config_.rms_norm_eps, sampled_normed));
  } else {
    const TensorView sampled_hidden =
        view2(ws_.sampled_hidden, dtype_, num_sampled, config_.hidden_size);  // [S, H]
    PODSERVE_RETURN_IF_ERROR(
        backend_.gather_rows(view2(ws_.residual, dtype_, ws_.token_capacity, config_.hidden_size),
                             sample_rows, sampled_hidden));
    PODSERVE_RETURN_IF_ERROR(
        backend_.rms_norm(sampled_hidden, final_norm_.view, config_.rms_norm_eps, sampled_normed));
  }
  const TensorView local_logits =
      view2(ws_.local_logits, dtype_, num_sampled, local_vocab_);  // [S, V/tp]
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(sampled_normed, lm_head_.view, local_logits));
  if (tp_size_ == 1) return local_logits;
  const TensorView logits = view2(ws_.gathered_logits, dtype_, num_sampled, config_.vocab_size);
  PODSERVE_RETURN_IF_ERROR(comm_.all_gather_last_dim(local_logits, logits));
  return logits;
}

Status LlamaModel::sample(const TensorView& logits, std::int32_t num_rows) {
  const std::size_t rows_offset = static_cast<std::size_t>(ws_.token_capacity) * 3 * 4;
  const TensorView rows = make_view(static_cast<char*>(ws_.inputs.data()) + rows_offset,
                                    DType::kI32, {num_rows, sizeof(SamplingRow) / 4});
  return backend_.sample(logits, rows, ws_.sampled_ids.view(DType::kI32, {num_rows}));
}

Result<std::vector<TokenId>> LlamaModel::read_sampled(std::int32_t num_rows) {
  PODSERVE_RETURN_IF_ERROR(backend_.stage_to_host(ws_.sampled_ids_staged.data(),
                                                  ws_.sampled_ids.data(),
                                                  static_cast<std::size_t>(num_rows) * 4));
  PODSERVE_RETURN_IF_ERROR(backend_.synchronize());
  inputs_in_flight_ = false;
  const auto* ids = static_cast<const std::int32_t*>(ws_.sampled_ids_staged.data());
  return std::vector<TokenId>(ids, ids + num_rows);
}

Result<TensorView> LlamaModel::forward_eager(const BatchPlan& plan,
                                             std::span<const SamplingRow> rows,
                                             const LayerCallback& after_layer) {
  const std::int32_t num_tokens = plan.total_new_tokens();
  std::vector<std::int32_t> sample_rows;  // [S]: the last new token of each sampled sequence
  std::int32_t row = 0;
  for (const SequenceWork& work : plan.sequences) {
    row += work.num_new_tokens();
    if (work.sample) sample_rows.push_back(row - 1);
  }
  const auto num_sampled = static_cast<std::int32_t>(sample_rows.size());
  if (!rows.empty() && static_cast<std::int32_t>(rows.size()) != num_sampled) {
    return invalid_argument(fmt::format("plan {}: {} sampling rows for {} sampled sequences",
                                        plan.iteration, rows.size(), num_sampled));
  }
  PODSERVE_RETURN_IF_ERROR(ensure_workspace(num_tokens, num_sampled));
  PODSERVE_RETURN_IF_ERROR(
      stage_inputs(plan, rows, num_tokens, static_cast<std::int32_t>(rows.size())));
  AttentionBatchOptions attention;
  attention.num_q_heads = local_heads_;
  PODSERVE_RETURN_IF_ERROR(prepare_attention(plan, attention));
  PODSERVE_RETURN_IF_ERROR(run_layers(num_tokens, after_layer));
  if (num_sampled == 0) return TensorView{};
  return compute_logits(sample_rows, num_sampled);
}

Result<std::vector<TokenId>> LlamaModel::forward_bucketed(const BatchPlan& plan,
                                                          std::span<const SamplingRow> rows) {
  const auto batch = static_cast<std::int32_t>(plan.sequences.size());
  const std::int32_t bucket = graph_bucket(batch);
  // Capacity for the largest bucket up front, so buffers stay put while buckets are captured.
  PODSERVE_RETURN_IF_ERROR(ensure_workspace(options_.max_graph_batch, options_.max_graph_batch));
  PODSERVE_RETURN_IF_ERROR(stage_inputs(plan, rows, bucket, bucket));
  AttentionBatchOptions attention;
  attention.num_q_heads = local_heads_;
  attention.layout_seqs = options_.max_graph_batch;
  attention.layout_pages = graph_layout_pages();
  attention.grid_seqs = bucket;
  PODSERVE_RETURN_IF_ERROR(prepare_attention(plan, attention));

  if (graphs_.workspace_generation != ws_.generation ||
      graphs_.backend_generation != backend_.graph_generation()) {
    graphs_.by_bucket.clear();
    graphs_.workspace_generation = ws_.generation;
    graphs_.backend_generation = backend_.graph_generation();
  }
  const auto step = [&]() -> Status {
    PODSERVE_RETURN_IF_ERROR(run_layers(bucket, {}));
    PODSERVE_ASSIGN_OR_RETURN(const TensorView logits, compute_logits({}, bucket));
    return sample(logits, bucket);
  };
  if (options_.graphs) {
    auto it = std::find_if(graphs_.by_bucket.begin(), graphs_.by_bucket.end(),
                           [&](const auto& entry) { return entry.first == bucket; });
    if (it == graphs_.by_bucket.end()) {
      // One eager run first (the step is idempotent: same KV writes, same draw), so that what
      // a backend settles on first use (e.g. its GEMM algorithm choice) is settled before the
      // capture records it.
      PODSERVE_RETURN_IF_ERROR(step());
      PODSERVE_ASSIGN_OR_RETURN(std::unique_ptr<BackendGraph> graph, backend_.capture(step));
      graphs_.by_bucket.emplace_back(bucket, std::move(graph));
      it = std::prev(graphs_.by_bucket.end());
    }
    PODSERVE_RETURN_IF_ERROR(it->second->launch());
    last_step_used_graph_ = true;
  } else {
    PODSERVE_RETURN_IF_ERROR(step());
    PODSERVE_ASSIGN_OR_RETURN(attention_seconds_, backend_.take_attention_seconds());
  }
  PODSERVE_ASSIGN_OR_RETURN(std::vector<TokenId> tokens, read_sampled(bucket));
  tokens.resize(static_cast<std::size_t>(batch));
  return tokens;
}

Result<std::vector<TokenId>> LlamaModel::forward(const BatchPlan& plan,
                                                 std::span<const SamplingRow> rows,
                                                 const LayerCallback& after_layer) {
  PODSERVE_RETURN_IF_ERROR(validate_plan(plan));
  attention_seconds_ = 0.0;
  last_step_used_graph_ = false;
  if (plan.total_new_tokens() == 0) return std::vector<TokenId>{};
  if (bucketed(plan, rows, after_layer)) return forward_bucketed(plan, rows);
  PODSERVE_ASSIGN_OR_RETURN(const TensorView logits, forward_eager(plan, rows, after_layer));
  std::vector<TokenId> tokens;
  if (!rows.empty()) {
    PODSERVE_RETURN_IF_ERROR(sample(logits, static_cast<std::int32_t>(rows.size())));
    PODSERVE_ASSIGN_OR_RETURN(tokens, read_sampled(static_cast<std::int32_t>(rows.size())));
  }
  PODSERVE_ASSIGN_OR_RETURN(attention_seconds_, backend_.take_attention_seconds());
  return tokens;
}

Result<std::vector<float>> LlamaModel::forward_logits(const BatchPlan& plan,
                                                      const LayerCallback& after_layer) {
  PODSERVE_RETURN_IF_ERROR(validate_plan(plan));
  attention_seconds_ = 0.0;
  last_step_used_graph_ = false;
  if (plan.total_new_tokens() == 0) return std::vector<float>{};
  PODSERVE_ASSIGN_OR_RETURN(const TensorView logits, forward_eager(plan, {}, after_layer));
  std::vector<float> host_logits;
  if (logits.data != nullptr) {
    std::vector<std::uint8_t> device_bytes(logits.bytes());
    PODSERVE_RETURN_IF_ERROR(
        backend_.copy_to_host(device_bytes.data(), logits.data, logits.bytes()));
    inputs_in_flight_ = false;
    host_logits.resize(static_cast<std::size_t>(logits.numel()));
    PODSERVE_RETURN_IF_ERROR(convert_to_f32(device_bytes.data(), dtype_, host_logits));
  }
  PODSERVE_ASSIGN_OR_RETURN(attention_seconds_, backend_.take_attention_seconds());
  return host_logits;
}

Status LlamaModel::run_layer(Layer& layer, std::int32_t num_tokens) {
  const std::int64_t t = num_tokens, h = config_.hidden_size, d = config_.head_dim;
  const std::size_t cap = static_cast<std::size_t>(ws_.token_capacity);
  const TensorView residual = view2(ws_.residual, dtype_, t, h);  // [T, H]
  const TensorView normed = view2(ws_.normed, dtype_, t, h);      // [T, H]
  const TensorView qkv =
      view2(ws_.qkv, dtype_, t, (local_heads_ + 2 * local_kv_heads_) * d);  // [T, (Hq+2Hkv) D]
  const TensorView q_heads = view3(ws_.q, dtype_, t, local_heads_, d);      // [T, Hq/tp, D]
  const TensorView attention_heads =
      view3(ws_.attention_out, dtype_, t, local_heads_, d);  // [T, Hq/tp, D]
  const TensorView attention_rows =
      view2(ws_.attention_out, dtype_, t, local_heads_ * d);  // [T, Hq/tp * D]
  const TensorView gate_up = view2(ws_.gate_up, dtype_, t, 2 * local_intermediate_);  // [T, 2F/tp]
  const TensorView activated = view2(ws_.activated, dtype_, t, local_intermediate_);  // [T, F/tp]
  const TensorView positions = int_view(cap * 4, t);                                  // [T]
  const TensorView slots = int_view(2 * cap * 4, t);                                  // [T]
  KvCacheView cache = kv_cache(0);
  cache.data = layer.kv_cache.data();

  // x += W_o . attention(rope(q), rope(k), v), summed over TP ranks. With TP 1 the GEMM adds
  // into the residual itself.
  const auto add_projection = [&](const TensorView& x, const Tensor& w) -> Status {
    if (tp_size_ == 1) return backend_.matmul_add(x, w.view, residual);
    const TensorView projected = view2(ws_.projected, dtype_, t, h);  // [T, H]
    PODSERVE_RETURN_IF_ERROR(backend_.matmul(x, w.view, projected));
    PODSERVE_RETURN_IF_ERROR(comm_.all_reduce_sum(projected));
    return backend_.add(residual, projected, residual);
  };
  PODSERVE_RETURN_IF_ERROR(
      backend_.rms_norm(residual, layer.input_norm.view, config_.rms_norm_eps, normed));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.qkv_proj.view, qkv));
  PODSERVE_RETURN_IF_ERROR(add_qkv_bias(layer, qkv));
  PODSERVE_RETURN_IF_ERROR(rope_append(qkv, positions, slots, cache, q_heads));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  PODSERVE_RETURN_IF_ERROR(
      backend_.run_prepared_attention(q_heads, cache, scale, options_.attention, attention_heads));
  PODSERVE_RETURN_IF_ERROR(add_projection(attention_rows, layer.o_proj));

  // x += W_down . (silu(W_gate x) * W_up x), summed over TP ranks.
  PODSERVE_RETURN_IF_ERROR(
      backend_.rms_norm(residual, layer.post_attention_norm.view, config_.rms_norm_eps, normed));
  PODSERVE_RETURN_IF_ERROR(backend_.matmul(normed, layer.gate_up_proj.view, gate_up));
  PODSERVE_RETURN_IF_ERROR(backend_.silu_mul(gate_up, activated));
  return add_projection(activated, layer.down_proj);
}

Status LlamaModel::load_extras(WeightSource& weights) {
  if (config_.attention_bias) {
    for (std::int32_t i = 0; i < config_.num_layers; ++i) {
      const LayerTensorNames names = layer_tensor_names(i);
      std::vector<TensorSpec> specs;
      for (const std::string* name : {&names.q_bias, &names.k_bias, &names.v_bias}) {
        PODSERVE_ASSIGN_OR_RETURN(TensorSpec spec, llama_tensor_spec(config_, *name));
        specs.push_back(std::move(spec));
      }
      // Stacked 1-D tensors come back as [rows, 1]: the right factor of a rank-1 update.
      PODSERVE_ASSIGN_OR_RETURN(layers_[static_cast<std::size_t>(i)].qkv_bias,
                                load_stacked(weights, specs));
    }
  }
  if (config_.rope_scaling.kind != RopeScalingKind::kNone) {
    const std::vector<double> table =
        rope_inverse_frequencies(config_.rope_theta, config_.rope_scaling, config_.head_dim);
    const std::vector<float> table_f32(table.begin(), table.end());
    PODSERVE_ASSIGN_OR_RETURN(rope_frequencies_,
                              backend_.allocate(table_f32.size() * sizeof(float)));
    PODSERVE_RETURN_IF_ERROR(backend_.copy_to_device(rope_frequencies_.data(), table_f32.data(),
                                                     table_f32.size() * sizeof(float)));
  }
  return Status::Ok();
}

Status LlamaModel::add_qkv_bias(const Layer& layer, const TensorView& qkv) {
  if (layer.qkv_bias.buffer.data() == nullptr) return Status::Ok();
  // qkv [T, N] += ones [T, 1] . bias [N, 1]^T: the bias as a rank-1 GEMM update, which every
  // backend's matmul_add runs (one rounding into qkv, as a fused bias add would do).
  return backend_.matmul_add(ws_.ones.view(dtype_, {qkv.shape[0], 1}), layer.qkv_bias.view, qkv);
}

Status LlamaModel::rope_append(const TensorView& qkv, const TensorView& positions,
                               const TensorView& slots, const KvCacheView& cache,
                               const TensorView& q_out) {
  if (rope_frequencies_.data() == nullptr) {
    return backend_.rope_append(qkv, positions, slots, config_.rope_theta, cache, q_out);
  }
  return backend_.rope_append_with_frequencies(
      qkv, positions, slots, rope_frequencies_.view(DType::kF32, {config_.head_dim / 2}), cache,
      q_out);
}

}  // namespace podserve
