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
// cache; the scheduler's block manager hands them out.
//
// Contract: not thread-safe (one iteration loop drives it); the Backend and Communicator must
// outlive the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
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

  // Runs every layer for all new tokens of `plan` and returns host fp32 logits
  // [num_sampled, vocab_size] (the full vocabulary on every rank), one row per sequence with
  // sample == true, in plan order. An empty plan returns no rows, makes no collective call and
  // calls no callback.
  Result<std::vector<float>> forward(const BatchPlan& plan, const LayerCallback& after_layer = {});

  // Host wall time of the attention calls of the last forward() (all layers). On the CPU
  // backend ops are synchronous, so this is the attention's own time.
  double attention_seconds() const { return attention_seconds_; }

  const ModelConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
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
    Tensor q_proj;               // [Hq/tp * D, H]
    Tensor k_proj, v_proj;       // [Hkv/tp * D, H]
    Tensor o_proj;               // [H, Hq/tp * D]
    Tensor post_attention_norm;  // [H]
    Tensor gate_proj, up_proj;   // [F/tp, H]
    Tensor down_proj;            // [H, F/tp]
    DeviceBuffer kv_cache;       // [num_pages, 2, page_size, Hkv/tp, D]
  };
  // Activation scratch sized for `token_capacity` new tokens and `sample_capacity` sampled rows.
  struct Workspace {
    std::int32_t token_capacity = 0;
    std::int32_t sample_capacity = 0;
    DeviceBuffer residual, normed, q, k, v, attention_out, projected, gate, up, activated;
    DeviceBuffer token_ids, positions, slots;     // int32 [T]
    DeviceBuffer sampled_hidden, sampled_normed;  // [S, H]
    DeviceBuffer local_logits, gathered_logits;   // [S, V/tp], [S, V]
  };

  LlamaModel(const ModelConfig& config, Backend& backend, Communicator& comm,
             const ModelOptions& options);
  Result<Tensor> load_tensor(WeightSource& weights, const TensorSpec& spec);
  Status ensure_workspace(std::int32_t num_tokens, std::int32_t num_sampled);
  Status validate_plan(const BatchPlan& plan) const;
  Status run_layer(Layer& layer, std::int32_t num_tokens,
                   std::span<const AttentionSequence> attention_sequences);

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
  std::vector<Layer> layers_;
  Workspace ws_;
  double attention_seconds_ = 0.0;
};

}  // namespace podserve
