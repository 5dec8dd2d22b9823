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
#include <memory>
#include <span>
#include <string>
#include <string_view>

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
  // out = a + b, elementwise, same shapes. out may alias a.
  virtual Status add(const TensorView& a, const TensorView& b, const TensorView& out) = 0;
  // out = silu(gate) * up.  gate, up, out [M, F]
  virtual Status silu_mul(const TensorView& gate, const TensorView& up, const TensorView& out) = 0;
  // Rotary embedding in place, Llama (rotate-half) convention.
  // q [T, Hq, D], k [T, Hkv, D], positions [T] (int32, device)
  virtual Status rope(const TensorView& q, const TensorView& k, const TensorView& positions,
                      float theta) = 0;
  // Writes new K/V rows into their cache slots. k, v [T, Hkv, D]; slots [T] (int32, device):
  // slot = page * page_size + offset.
  virtual Status kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                           const KvCacheView& cache) = 0;
  // Causal attention for a hybrid batch over the paged cache (the new tokens' K/V already
  // appended). q, out [T, Hq, D]; each sequence's chunk is aligned bottom-right: new token i
  // sees keys [0, P + i]. scale is usually 1/sqrt(D).
  virtual Status attention(const TensorView& q, const KvCacheView& cache,
                           std::span<const AttentionSequence> sequences, float scale,
                           AttentionKind kind, const TensorView& out) = 0;
  // Copies rows: out[i, :] = x[rows[i], :]. rows given on the host.
  virtual Status gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                             const TensorView& out) = 0;

  // Time spent in the attention() calls since the previous take, in seconds, once they have run
  // (waits for them): device time on a GPU (events around each call), wall time on the CPU. The
  // model reports it per forward pass without synchronizing after every layer.
  virtual Result<double> take_attention_seconds() = 0;
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
