// The backend interface: device memory and the tensor ops a Llama-family forward pass needs.
// Implemented in kernels/ (CPU always; CUDA when built). Nothing here includes a CUDA header:
// buffers and streams are opaque.
//
// Contract:
// - Every op validates shapes and dtypes and returns a Status; it never falls back silently.
// - Pointers in TensorView are device pointers of the backend that runs the op.
// - Ops run on the backend's stream in call order; synchronize() waits for all of them.
// - A Backend object is used by one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

enum class DType : std::uint8_t { kF32, kBF16, kF16, kI32 };
std::size_t dtype_size(DType dtype);
std::string_view to_string(DType dtype);

enum class BackendKind : std::uint8_t { kCpu, kCuda };
std::string_view to_string(BackendKind kind);

// A non-owning view of a dense row-major tensor of up to 4 dimensions.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::int32_t ndim = 0;
  std::array<std::int64_t, 4> shape{};

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (std::int32_t i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

TensorView make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape);

// An owning device allocation; freed by the backend that made it when destroyed.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* data, std::size_t bytes, void (*release)(void*))
      : data_(data, release), bytes_(bytes) {}
  void* data() const { return data_.get(); }
  std::size_t bytes() const { return bytes_; }
  TensorView view(DType dtype, std::initializer_list<std::int64_t> shape) const {
    return make_view(data(), dtype, shape);
  }

 private:
  std::unique_ptr<void, void (*)(void*)> data_{nullptr, [](void*) {}};
  std::size_t bytes_ = 0;
};

// One layer's paged KV cache.
// data: [num_pages, 2, page_size, num_kv_heads, head_dim]; index 0 of dim 1 is K, 1 is V.
struct KvCacheView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::int32_t num_pages = 0;
  std::int32_t page_size = 16;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;

  std::size_t page_elements() const {
    return static_cast<std::size_t>(2) * page_size * num_kv_heads * head_dim;
  }
};

// One sequence's part of a hybrid attention batch (host memory).
struct AttentionSequence {
  std::int32_t query_offset = 0;             // first row of this sequence in q / out
  std::int32_t num_new_tokens = 0;           // C (1 for decode)
  std::int32_t num_cached_tokens = 0;        // P: keys [0, P) are already cached before this step
  std::span<const std::int32_t> page_table;  // pages covering [0, P + C)
};

enum class AttentionKind : std::uint8_t { kCpu, kPod, kSerial, kStreams };
std::string_view to_string(AttentionKind kind);

// How prepare_attention() lays out one forward pass's attention batch.
struct AttentionBatchOptions {
  std::int32_t num_q_heads = 0;
  // 0: plan this batch exactly. Otherwise the batch is decode-only and its plan goes into
  // buffers laid out for up to `layout_seqs` sequences of at most `layout_pages` pages each,
  // at addresses that stay fixed from one prepare to the next (the launches of a captured graph
  // read them), with grids sized for `grid_seqs` sequences (grid_seqs <= layout_seqs and >= the
  // batch): work past the batch's own exits at once.
  std::int32_t layout_seqs = 0;
  std::int32_t layout_pages = 0;
  std::int32_t grid_seqs = 0;
};

// One sampled row's parameters as the sample() op reads them from device memory (24 bytes).
struct SamplingRow {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  std::int32_t generated_index = 0;
  std::int32_t unused = 0;
};
static_assert(sizeof(SamplingRow) == 24, "SamplingRow is read as 6 int32 words");

// A recorded sequence of a backend's ops, replayed by launch() with the same pointers (their
// contents may change between launches). Backend::capture() makes one.
class BackendGraph {
 public:
  virtual ~BackendGraph() = default;
  // Queues one replay on the backend's stream.
  virtual Status launch() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  virtual std::string name() const = 0;
  // The dtype weights, activations and KV pages use on this backend.
  virtual DType compute_dtype() const = 0;

  virtual Result<DeviceBuffer> allocate(std::size_t bytes) = 0;
  virtual Status copy_to_device(void* dst, const void* src_host, std::size_t bytes) = 0;
  virtual Status copy_to_host(void* dst_host, const void* src, std::size_t bytes) = 0;
  // Host memory the staged copies below may read or write asynchronously (page-locked on a GPU).
  virtual Result<DeviceBuffer> allocate_host(std::size_t bytes);
  // Asynchronous copies between host memory from allocate_host() and the device, in stream
  // order: the host side must stay untouched (to_device) or is valid (to_host) only once a later
  // synchronize() or copy_to_host() has returned. Synchronous on the CPU backend.
  virtual Status stage_to_device(void* dst, const void* src_staged, std::size_t bytes);
  virtual Status stage_to_host(void* dst_staged, const void* src, std::size_t bytes);
  // Converts fp32 host values into a device tensor of compute_dtype().
  virtual Status upload_f32(const TensorView& dst, std::span<const float> src_host) = 0;
  virtual Status synchronize() = 0;

  // out[t, :] = table[ids[t], :].  table [vocab, hidden], ids [T] (int32, device), out [T, hidden]
  virtual Status embedding(const TensorView& table, const TensorView& ids,
                           const TensorView& out) = 0;
  // out = x / rms(x) * weight, per row.  x, out [M, D]; weight [D]
  virtual Status rms_norm(const TensorView& x, const TensorView& weight, float eps,
                          const TensorView& out) = 0;
  // y = x @ w^T.  x [M, K]; w [N, K] (Hugging Face [out, in] layout); y [M, N]
  virtual Status matmul(const TensorView& x, const TensorView& w, const TensorView& y) = 0;
  // y += x @ w^T (y read and written in the compute dtype, fp32 accumulation). Shapes as matmul.
  virtual Status matmul_add(const TensorView& x, const TensorView& w, const TensorView& y) = 0;
  // out = a + b, elementwise, same shapes. out may alias a.
  virtual Status add(const TensorView& a, const TensorView& b, const TensorView& out) = 0;
  // out = silu(gate) * up with gate = gate_up[:, :F], up = gate_up[:, F:] (a fused gate/up
  // projection's output).  gate_up [M, 2F]; out [M, F]
  virtual Status silu_mul(const TensorView& gate_up, const TensorView& out) = 0;
  // Rotary embedding in place, Llama (rotate-half) convention.
  // q [T, Hq, D], k [T, Hkv, D], positions [T] (int32, device)
  virtual Status rope(const TensorView& q, const TensorView& k, const TensorView& positions,
                      float theta) = 0;
  // Writes new K/V rows into their cache slots. k, v [T, Hkv, D]; slots [T] (int32, device):
  // slot = page * page_size + offset; slot -1 marks a padding row (nothing written).
  virtual Status kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                           const KvCacheView& cache) = 0;
  // rope + kv_append for a fused QKV projection: qkv [T, (Hq + 2 Hkv) * D] holds each token's q,
  // k and v heads in that order. Writes rotated q to q_out [T, Hq, D], rotated k and v into the
  // cache slots (slot -1: a padding row, its K/V are not written). positions, slots [T] (int32).
  virtual Status rope_append(const TensorView& qkv, const TensorView& positions,
                             const TensorView& slots, float theta, const KvCacheView& cache,
                             const TensorView& q_out) = 0;
  // rope_append with the rotary inverse frequencies given instead of derived from a theta
  // (scaled RoPE: core/model_config.h rope_inverse_frequencies). inv_freq [D/2] fp32 (device).
  // The default returns kUnimplemented naming the backend.
  virtual Status rope_append_with_frequencies(const TensorView& qkv, const TensorView& positions,
                                              const TensorView& slots, const TensorView& inv_freq,
                                              const KvCacheView& cache, const TensorView& q_out);
  // Causal attention for a hybrid batch over the paged cache (the new tokens' K/V already
  // appended). q, out [T, Hq, D]; each sequence's chunk is aligned bottom-right: new token i
  // sees keys [0, P + i]. scale is usually 1/sqrt(D).
  virtual Status attention(const TensorView& q, const KvCacheView& cache,
                           std::span<const AttentionSequence> sequences, float scale,
                           AttentionKind kind, const TensorView& out) = 0;
  // The same attention as a batch prepared once per forward pass: prepare_attention() takes the
  // batch (and plans it where the backend plans), run_prepared_attention() runs it for one
  // layer's q and cache (same geometry as `cache_shape`, whose data pointer is not used). The
  // default keeps a copy of the batch and calls attention().
  virtual Status prepare_attention(std::span<const AttentionSequence> sequences,
                                   const KvCacheView& cache_shape,
                                   const AttentionBatchOptions& options);
  virtual Status run_prepared_attention(const TensorView& q, const KvCacheView& cache, float scale,
                                        AttentionKind kind, const TensorView& out);
  // Samples one token per row of logits by the contract of kernels/sampler.h (greedy,
  // temperature, top-p; the draw a pure function of (seed, generated_index)). logits [S, V];
  // rows [S, 6] int32 viewing SamplingRow (device); out [S] int32 (device): the token, or -1 for
  // a row with no token (all NaN).
  virtual Status sample(const TensorView& logits, const TensorView& rows,
                        const TensorView& out) = 0;
  // Copies rows: out[i, :] = x[rows[i], :]. rows given on the host.
  virtual Status gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                             const TensorView& out) = 0;

  // Time spent in the attention() calls since the previous take, in seconds, once they have run
  // (waits for them): device time on a GPU (events around each call), wall time on the CPU. The
  // model reports it per forward pass without synchronizing after every layer.
  virtual Result<double> take_attention_seconds() = 0;

  // CUDA graphs. supports_graphs(): whether capture() works here. capture() records the ops
  // `body` issues (nothing runs; body must not synchronize or copy to the host, and attention
  // timing is off) into a graph; the graph reads the buffers those ops named, so they must
  // outlive it and keep their addresses. graph_generation() changes whenever the backend moved
  // a buffer that captured work reads (its own attention and GEMM scratch): graphs captured
  // before are stale then and must be captured again.
  virtual bool supports_graphs() const { return false; }
  // Whether GEMMs of few rows (decode steps) may run on the backend's own kernels where they time
  // faster than the vendor library's on the device (true, the default), or on the vendor
  // library's only (the baseline of an A/B). Changing it makes captured graphs stale. Backends
  // without such kernels ignore it.
  virtual void set_small_batch_kernels(bool /*allowed*/) {}
  // The stream the ops run on as an opaque handle (a cudaStream_t on CUDA; nullptr on the CPU),
  // for components that queue their own device work in order with the backend's.
  virtual void* native_stream() { return nullptr; }
  virtual Result<std::unique_ptr<BackendGraph>> capture(const std::function<Status()>& body);
  virtual std::uint64_t graph_generation() const { return 0; }

 private:
  // The default prepare_attention(): the batch, its page tables copied.
  std::vector<AttentionSequence> prepared_sequences_;
  std::vector<std::vector<std::int32_t>> prepared_page_tables_;
};

// Tensor-parallel collectives over one instance's ranks (MPI on CPU, NCCL on CUDA).
// Blocking; every rank of the group calls in the same order.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over the group. data: device pointer of the calling rank's backend.
  virtual Status all_reduce_sum(const TensorView& data) = 0;
  // Every rank contributes `send` [rows, cols]; `recv` [rows, size * cols] receives the
  // concatenation along the last dimension in rank order.
  virtual Status all_gather_last_dim(const TensorView& send, const TensorView& recv) = 0;
};

}  // namespace podserve
