// LlamaModel: one tensor-parallel rank's share of a Llama-family decoder, executing batch plans
// (core/batch_plan.h) over a paged KV cache.
//
// Every rank of an instance constructs its model with the same config and weight source and
// calls forward() with the same plan, in the same order: forward() makes the same collective
// calls on every rank (an all-reduce after each attention and MLP block, an all-gather of the
// vocab-parallel logits; none when the communicator has size 1). Sharding: worker/weights.h.
//
// The model owns, on its backend: the rank's weight shards and one KV cache buffer per layer,
// layout [num_pages, 2, page_size, num_kv_heads / tp, head_dim] (core/backend.h KvCacheView),
// plus activation scratch that grows to the largest batch seen. Page ids in plans index this
// cache; the scheduler's block manager hands them out. The q/k/v and gate/up projections are
// concatenated at load (one GEMM each).
//
// Steps: the attention batch is planned once per forward pass; logits stay on the backend and
// are sampled there (only token ids come back). On backends with graphs (CUDA) and TP 1,
// decode-only steps whose every sequence samples run padded to a batch-size bucket (padding rows
// write no KV and are not returned) and replay a graph captured for that bucket, or, with
// options.graphs off, run the same padded shapes eagerly (so greedy outputs do not depend on
// the switch); other steps run eagerly. A graph step reports no attention time (0).
//
// Contract: not thread-safe (one iteration loop drives it); the Backend and Communicator must
// outlive the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/batch_plan.h"
#include "core/model_config.h"
#include "core/status.h"
#include "worker/weights.h"

namespace podserve {

struct ModelOptions {
  std::int32_t num_pages = 0;   // KV cache pages (every layer has this many)
  std::int32_t page_size = 16;  // tokens per page
  AttentionKind attention = AttentionKind::kCpu;
  // Allocates one layer's KV cache when set (e.g. memory a KV transport owns, so peers can
  // write pages into it in one copy); the allocation must outlive the model. Default: the
  // backend's allocate().
  std::function<Result<DeviceBuffer>(std::size_t bytes)> kv_cache_allocator;
  // Decode steps as graphs (where the backend has them and TP is 1). Decode batches larger than
  // max_graph_batch, and sequences longer than max_context tokens (0: the model's
  // max_position_embeddings), run eagerly.
  bool graphs = true;
  std::int32_t max_graph_batch = 256;
  // Backend::set_small_batch_kernels() at creation.
  bool small_batch_kernels = true;
  std::int32_t max_context = 0;
};

class LlamaModel {
 public:
  // Loads this rank's shards (tp size and rank come from `comm`) and allocates the KV cache.
  static Result<std::unique_ptr<LlamaModel>> create(const ModelConfig& config,
                                                    WeightSource& weights, Backend& backend,
                                                    Communicator& comm,
                                                    const ModelOptions& options);

  // Called after layer `layer` ran: its K/V of every token of the plan are in the cache (the
  // backend's work up to that point is complete), so they can be shipped while later layers
  // compute. An error Status stops the forward pass and is returned by forward().
  using LayerCallback = std::function<Status(std::int32_t layer)>;

  // Runs every layer for all new tokens of `plan`. `rows` holds one SamplingRow per sequence with
  // sample == true, in plan order: the tokens sampled for them come back in that order. A TP
  // peer passes no rows: it makes the same collective calls (the logits' all-gather included)
  // and gets no tokens. An empty plan returns no tokens, makes no collective call and calls no
  // callback.
  Result<std::vector<TokenId>> forward(const BatchPlan& plan, std::span<const SamplingRow> rows,
                                       const LayerCallback& after_layer = {});
  // The same pass (always eager), returning host fp32 logits [num_sampled, vocab_size] (the full
  // vocabulary), one row per sequence with sample == true, in plan order: for tests and
  // references.
  Result<std::vector<float>> forward_logits(const BatchPlan& plan,
                                            const LayerCallback& after_layer = {});

  // Device time of the attention calls of the last forward() (all layers; wall time on the CPU
  // backend); 0 after a graph step.
  double attention_seconds() const { return attention_seconds_; }
  // Whether the last forward() replayed a graph.
  bool last_step_used_graph() const { return last_step_used_graph_; }

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // A/B switches for benches: the attention kind and whether decode steps replay graphs, from
  // the next forward() on (graphs captured so far are kept).
  void set_attention(AttentionKind kind) { options_.attention = kind; }
  void set_graphs(bool graphs) { options_.graphs = graphs; }
  int tp_size() const { return tp_size_; }
  int tp_rank() const { return tp_rank_; }
  // Layer `layer`'s cache (device memory of the backend), e.g. for KV transfer.
  KvCacheView kv_cache(std::int32_t layer) const;

  // Bytes of one page across all layers for one rank.
  static std::size_t kv_page_bytes(const ModelConfig& config, int tp, int page_size, DType dtype);
  // KV pages of one rank that fit in `bytes`.
  static std::int32_t pages_that_fit(const ModelConfig& config, int tp, std::size_t bytes,
                                     int page_size, DType dtype);

 private:
  struct Tensor {
    DeviceBuffer buffer;
    TensorView view;
  };
  struct Layer {
    Tensor input_norm;           // [H]
    Tensor qkv_proj;             // [(Hq + 2 Hkv)/tp * D, H]: this rank's q, k, v rows
    Tensor qkv_bias;             // [(Hq + 2 Hkv)/tp * D, 1]; empty without attention_bias
    Tensor o_proj;               // [H, Hq/tp * D]
    Tensor post_attention_norm;  // [H]
    Tensor gate_up_proj;         // [2 F/tp, H]: this rank's gate rows, then its up rows
    Tensor down_proj;            // [H, F/tp]
    DeviceBuffer kv_cache;       // [num_pages, 2, page_size, Hkv/tp, D]
  };
  // Activation scratch sized for `token_capacity` new tokens and `sample_capacity` sampled rows;
  // `generation` changes whenever a buffer moves (captured graphs read them).
  struct Workspace {
    std::int32_t token_capacity = 0;
    std::int32_t sample_capacity = 0;
    std::uint64_t generation = 0;
    DeviceBuffer residual, normed, projected;  // [T, H]
    DeviceBuffer qkv;                          // [T, (Hq + 2 Hkv)/tp * D]
    DeviceBuffer q, attention_out;             // [T, Hq/tp, D]
    DeviceBuffer gate_up;                      // [T, 2 F/tp]
    DeviceBuffer activated;                    // [T, F/tp]
    DeviceBuffer ones;  // [T, 1] all ones (with attention_bias): qkv += ones . bias^T adds it
    // The step's inputs: int32 token ids [T], positions [T], slots [T] (T = token_capacity),
    // then SamplingRow [S]; written on the host into `inputs_staged`, copied in one piece.
    DeviceBuffer inputs, inputs_staged;
    DeviceBuffer sampled_hidden, sampled_normed;   // [S, H]
    DeviceBuffer local_logits, gathered_logits;    // [S, V/tp], [S, V]
    DeviceBuffer sampled_ids, sampled_ids_staged;  // int32 [S]
  };
  // One captured decode step per batch-size bucket.
  struct GraphSet {
    std::uint64_t workspace_generation = 0;
    std::uint64_t backend_generation = 0;
    std::vector<std::pair<std::int32_t, std::unique_ptr<BackendGraph>>> by_bucket;
  };

  LlamaModel(const ModelConfig& config, Backend& backend, Communicator& comm,
             const ModelOptions& options);
  Result<Tensor> load_tensor(WeightSource& weights, const TensorSpec& spec);
  // Loads the specs' shards and stacks them by rows (fused projections).
  Result<Tensor> load_stacked(WeightSource& weights, std::span<const TensorSpec> specs);
  Status ensure_workspace(std::int32_t num_tokens, std::int32_t num_sampled);
  Status validate_plan(const BatchPlan& plan) const;
  // Decode-only steps whose every sequence samples, on a backend with graphs and TP 1: padded to
  // a batch-size bucket, captured as a graph per bucket when options_.graphs (else run eagerly
  // on the same padded shapes, so graphs on and off compute the same kernels).
  bool bucketed(const BatchPlan& plan, std::span<const SamplingRow> rows,
                const LayerCallback& after_layer) const;
  std::int32_t graph_bucket(std::int32_t batch) const;
  std::int32_t graph_layout_pages() const;
  // Writes the plan's token ids, positions and slots (rows past the plan, up to padded_tokens:
  // token 0, position 0, slot -1) and the sampling rows (greedy padding up to padded_rows) into
  // the staged inputs, and copies them to the device.
  Status stage_inputs(const BatchPlan& plan, std::span<const SamplingRow> rows,
                      std::int32_t padded_tokens, std::int32_t padded_rows);
  Status prepare_attention(const BatchPlan& plan, const AttentionBatchOptions& options);
  // Embedding and every layer for num_tokens rows (after_layer: see LayerCallback).
  Status run_layers(std::int32_t num_tokens, const LayerCallback& after_layer);
  Status run_layer(Layer& layer, std::int32_t num_tokens);
  // The model's extras over plain Llama (q/k/v biases, scaled RoPE), loaded by create().
  Status load_extras(WeightSource& weights);
  // qkv [T, (Hq+2Hkv)/tp * D] += the layer's biases (when it has them).
  Status add_qkv_bias(const Layer& layer, const TensorView& qkv);
  // rope_append with the config's theta, or with the scaled table when there is one.
  Status rope_append(const TensorView& qkv, const TensorView& positions, const TensorView& slots,
                     const KvCacheView& cache, const TensorView& q_out);
  // Final norm and LM head of rows `sample_rows` of the residual (all of its first
  // `num_sampled` rows when sample_rows is empty); the logits [S, V] on the backend.
  Result<TensorView> compute_logits(std::span<const std::int32_t> sample_rows,
                                    std::int32_t num_sampled);
  Status sample(const TensorView& logits, std::int32_t num_rows);
  Result<std::vector<TokenId>> read_sampled(std::int32_t num_rows);
  // The eager pass: inputs staged (rows too, when given), layers, logits of the sampled rows
  // (an empty view when none samples).
  Result<TensorView> forward_eager(const BatchPlan& plan, std::span<const SamplingRow> rows,
                                   const LayerCallback& after_layer);
  Result<std::vector<TokenId>> forward_bucketed(const BatchPlan& plan,
                                                std::span<const SamplingRow> rows);
  TensorView int_view(std::size_t byte_offset, std::int64_t count) const;

  ModelConfig config_;
  Backend& backend_;
  Communicator& comm_;
  ModelOptions options_;
  int tp_size_ = 1;
  int tp_rank_ = 0;
  DType dtype_ = DType::kF32;
  std::int32_t local_heads_ = 0;         // Hq / tp
  std::int32_t local_kv_heads_ = 0;      // Hkv / tp
  std::int32_t local_intermediate_ = 0;  // F / tp
  std::int32_t local_vocab_ = 0;         // V / tp
  Tensor embedding_;                     // [V, H] replicated
  Tensor final_norm_;                    // [H]
  Tensor lm_head_;                       // [V/tp, H]
  // fp32 [D/2]: the scaled RoPE's inverse frequencies; empty without rope scaling.
  DeviceBuffer rope_frequencies_;
  std::vector<Layer> layers_;
  Workspace ws_;
  GraphSet graphs_;
  bool inputs_in_flight_ = false;  // the staged inputs' copy may not have landed yet
  bool last_step_used_graph_ = false;
  double attention_seconds_ = 0.0;
};

}  // namespace podserve
