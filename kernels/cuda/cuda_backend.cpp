#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/float_convert.h"
#include "core/parallel.h"
#include "kernels/cuda/attention_cuda.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_scratch.h"
#include "kernels/cuda/gemm_tuner.h"
#include "kernels/tensor_checks.h"

namespace podserve {

namespace {

void cuda_release(void* data) { cudaFree(data); }

// An instantiated graph, replayed on the backend's stream.
class CudaGraph final : public BackendGraph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, int device)
      : exec_(exec), stream_(stream), device_(device) {}
  ~CudaGraph() override {
    if (cudaSetDevice(device_) == cudaSuccess) cudaGraphExecDestroy(exec_);
  }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  Status launch() override {
    PODSERVE_CHECK(cudaSetDevice(device_));
    PODSERVE_CHECK(cudaGraphLaunch(exec_, stream_));
    return Status::Ok();
  }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  int device_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}

  ~CudaBackend() override {
    if (cudaSetDevice(device_) != cudaSuccess) return;
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (side_stream_ != nullptr) cudaStreamSynchronize(side_stream_);
    for (const TimingEvents& events : timing_events_) {
      cudaEventDestroy(events.start);
      cudaEventDestroy(events.stop);
    }
    if (staging_done_ != nullptr) cudaEventDestroy(staging_done_);
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (side_stream_ != nullptr) cudaStreamDestroy(side_stream_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status init() {
    PODSERVE_CHECK(cudaSetDevice(device_));
    PODSERVE_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    PODSERVE_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
    PODSERVE_CHECK(cublasCreate(&cublas_));
    PODSERVE_CHECK(cublasSetStream(cublas_, stream_));
    // A workspace of our own, so cuBLAS allocates nothing while a graph is captured.
    PODSERVE_RETURN_IF_ERROR(cublas_workspace_.reserve(kCublasWorkspaceBytes));
    PODSERVE_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.data(), kCublasWorkspaceBytes));
    PODSERVE_ASSIGN_OR_RETURN(
        gemm_tuner_,
        cuda::GemmTuner::create(stream_, cublas_workspace_.data(), kCublasWorkspaceBytes));
    PODSERVE_CHECK(cudaEventCreateWithFlags(&staging_done_, cudaEventDisableTiming));
    int sms = 0;
    PODSERVE_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_));
    device_shape_.num_sms = sms;
    cudaDeviceProp properties{};
    PODSERVE_CHECK(cudaGetDeviceProperties(&properties, device_));
    name_ = fmt::format("cuda:{} ({})", device_, properties.name);
    return Status::Ok();
  }

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  std::vector<std::string> gemm_report() const { return gemm_tuner_->report(); }

  BackendKind kind() const override { return BackendKind::kCuda; }
  std::string name() const override { return name_; }
  DType compute_dtype() const override { return DType::kBF16; }

  Result<DeviceBuffer> allocate(std::size_t bytes) override {
    PODSERVE_RETURN_IF_ERROR(enter());
    void* data = nullptr;
    if (const cudaError_t error = cudaMalloc(&data, std::max<std::size_t>(bytes, 1));
        error != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it
      return resource_exhausted(fmt::format("allocate: cannot allocate {} bytes on {}: {}", bytes,
                                            name_, cudaGetErrorString(error)));
    }
    return DeviceBuffer(data, bytes, &cuda_release);
  }

  Status copy_to_device(void* dst, const void* src_host, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(check_copy("copy_to_device", dst, src_host, bytes));
    PODSERVE_RETURN_IF_ERROR(enter());
    // From pageable memory the call returns once the source is staged: the caller may reuse it.
    PODSERVE_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, stream_));
    return Status::Ok();
  }

  Status copy_to_host(void* dst_host, const void* src, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(check_copy("copy_to_host", dst_host, src, bytes));
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PODSERVE_CHECK(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

  Result<DeviceBuffer> allocate_host(std::size_t bytes) override {
    PODSERVE_RETURN_IF_ERROR(enter());
    void* data = nullptr;
    if (const cudaError_t error = cudaMallocHost(&data, std::max<std::size_t>(bytes, 1));
        error != cudaSuccess) {
      cudaGetLastError();
      return resource_exhausted(
          fmt::format("allocate_host: cannot pin {} bytes: {}", bytes, cudaGetErrorString(error)));
    }
    return DeviceBuffer(data, bytes, [](void* p) { cudaFreeHost(p); });
  }

  Status stage_to_device(void* dst, const void* src_staged, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(check_copy("stage_to_device", dst, src_staged, bytes));
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_CHECK(cudaMemcpyAsync(dst, src_staged, bytes, cudaMemcpyHostToDevice, stream_));
    return Status::Ok();
  }

  Status stage_to_host(void* dst_staged, const void* src, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(check_copy("stage_to_host", dst_staged, src, bytes));
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_CHECK(cudaMemcpyAsync(dst_staged, src, bytes, cudaMemcpyDeviceToHost, stream_));
    return Status::Ok();
  }

  Status upload_f32(const TensorView& dst, std::span<const float> src_host) override {
    PODSERVE_RETURN_IF_ERROR(check_upload(dst, src_host.size(), DType::kBF16));
    std::vector<std::uint16_t> bits(src_host.size());
    parallel_for(static_cast<std::int64_t>(bits.size()), 1 << 20,
                 [&](std::int64_t begin, std::int64_t end) {
                   std::transform(src_host.begin() + begin, src_host.begin() + end,
                                  bits.begin() + begin, f32_to_bf16);
                 });
    return copy_to_device(dst.data, bits.data(), bits.size() * sizeof(std::uint16_t));
  }

  Status synchronize() override {
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_CHECK(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }

  Status embedding(const TensorView& table, const TensorView& ids, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_embedding(table, ids, out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_embedding(table.data, ids.as<const std::int32_t>(), out.data, ids.shape[0],
                                  table.shape[1], stream_);
  }

  Status rms_norm(const TensorView& x, const TensorView& weight, float eps,
                  const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_rms_norm(x, weight, eps, out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_rms_norm(x.data, weight.data, out.data, x.shape[0], x.shape[1], eps,
                                 stream_);
  }

  Status matmul(const TensorView& x, const TensorView& w, const TensorView& y) override {
    return gemm("matmul", x, w, y, 0.0f);
  }

  Status matmul_add(const TensorView& x, const TensorView& w, const TensorView& y) override {
    return gemm("matmul_add", x, w, y, 1.0f);
  }

  Status add(const TensorView& a, const TensorView& b, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_add(a, b, out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_add(a.data, b.data, out.data, a.numel(), stream_);
  }

  Status silu_mul(const TensorView& gate_up, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_silu_mul(gate_up, out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_silu_mul(gate_up.data, out.data, out.shape[0], out.shape[1], stream_);
  }

  Status rope_append(const TensorView& qkv, const TensorView& positions, const TensorView& slots,
                     float theta, const KvCacheView& cache, const TensorView& q_out) override {
    PODSERVE_RETURN_IF_ERROR(
        check_rope_append(qkv, positions, slots, theta, cache, q_out, DType::kBF16));
    return launch_rope_append("rope_append", qkv, positions, slots, theta, nullptr, cache, q_out);
  }

  Status rope_append_with_frequencies(const TensorView& qkv, const TensorView& positions,
                                      const TensorView& slots, const TensorView& inv_freq,
                                      const KvCacheView& cache, const TensorView& q_out) override {
    constexpr std::string_view op = "rope_append_with_frequencies";
    PODSERVE_RETURN_IF_ERROR(
        check_rope_append(qkv, positions, slots, 1.0f, cache, q_out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(check_tensor(op, "inv_freq", inv_freq, DType::kF32, 1));
    PODSERVE_RETURN_IF_ERROR(
        check_dim(op, "inv_freq", inv_freq, 0, cache.head_dim / 2, "head_dim / 2"));
    return launch_rope_append(op, qkv, positions, slots, 1.0f, inv_freq.as<const float>(), cache,
                              q_out);
  }

  Status rope(const TensorView& q, const TensorView& k, const TensorView& positions,
              float theta) override {
    PODSERVE_RETURN_IF_ERROR(check_rope(q, k, positions, theta, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(check_rope_head_dim("rope", q.shape[2]));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_rope(q.data, k.data, positions.as<const std::int32_t>(), q.shape[0],
                             static_cast<int>(q.shape[1]), static_cast<int>(k.shape[1]),
                             static_cast<int>(q.shape[2]), static_cast<double>(theta), stream_);
  }

  Status kv_append(const TensorView& k, const TensorView& v, const TensorView& slots,
                   const KvCacheView& cache) override {
    PODSERVE_RETURN_IF_ERROR(check_kv_append(k, v, slots, cache, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    const std::int64_t row = static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim;
    return cuda::launch_kv_append(k.data, v.data, slots.as<const std::int32_t>(), cache.data,
                                  k.shape[0], row, cache.page_size, stream_);
  }

  Status attention(const TensorView& q, const KvCacheView& cache,
                   std::span<const AttentionSequence> sequences, float scale, AttentionKind kind,
                   const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_cache("attention", cache, DType::kBF16));
    AttentionBatchOptions options;
    options.num_q_heads = q.ndim == 3 ? static_cast<std::int32_t>(q.shape[1]) : 0;
    PODSERVE_RETURN_IF_ERROR(prepare_attention(sequences, cache, options));
    return run_prepared_attention(q, cache, scale, kind, out);
  }

  // Flattens and plans the batch once per forward pass and uploads both through pinned staging:
  // O(pages of the batch) host work per pass, none per layer.
  Status prepare_attention(std::span<const AttentionSequence> sequences,
                           const KvCacheView& cache_shape,
                           const AttentionBatchOptions& options) override {
    constexpr std::string_view op = "attention";
    prepared_ = false;
    PODSERVE_RETURN_IF_ERROR(check_cache(op, cache_shape, DType::kBF16));
    PODSERVE_ASSIGN_OR_RETURN(prepared_extent_,
                              check_attention_sequences(op, cache_shape, sequences));
    const bool fixed = options.layout_seqs != 0;
    if (fixed && (options.layout_pages < 1 || options.grid_seqs < 1 ||
                  options.grid_seqs > options.layout_seqs)) {
      return invalid_argument(fmt::format(
          "attention: a fixed layout needs layout_pages >= 1 and 1 <= grid_seqs <= layout_seqs, "
          "got {}, {}, {}",
          options.layout_pages, options.grid_seqs, options.layout_seqs));
    }
    PODSERVE_RETURN_IF_ERROR(enter());
    batch_ = cuda::flatten_attention_batch(sequences, cache_shape.page_size,
                                           fixed ? options.layout_seqs : 0);
    cuda::HybridAttentionShape shape = batch_.shape(options.num_q_heads, cache_shape.num_kv_heads,
                                                    cache_shape.head_dim, cache_shape.page_size);
    shape.layout_decode_seqs = options.layout_seqs;
    shape.grid_decode_seqs = options.grid_seqs;
    PODSERVE_ASSIGN_OR_RETURN(plan_, cuda::plan_hybrid_attention(shape, device_shape_));
    const std::size_t table_entries =
        batch_.arrays.size() - 4 * static_cast<std::size_t>(batch_.stride);
    if (fixed &&
        table_entries > static_cast<std::size_t>(options.layout_seqs) * options.layout_pages) {
      return invalid_argument(
          fmt::format("attention: the batch's {} pages exceed the layout's {}", table_entries,
                      std::int64_t{options.layout_seqs} * options.layout_pages));
    }
    const std::size_t array_capacity = fixed
                                           ? (4 + static_cast<std::size_t>(options.layout_pages)) *
                                                 options.layout_seqs * sizeof(std::int32_t)
                                           : batch_.arrays.size() * sizeof(std::int32_t);
    PODSERVE_RETURN_IF_ERROR(reserve_graph_scratch(workspace_, plan_.workspace_bytes));
    PODSERVE_RETURN_IF_ERROR(reserve_graph_scratch(batch_arrays_, array_capacity));

    // One staging area for both uploads; the previous uploads must have left it.
    const std::size_t image_bytes = plan_.static_image.size();
    const std::size_t array_bytes = batch_.arrays.size() * sizeof(std::int32_t);
    PODSERVE_CHECK(cudaEventSynchronize(staging_done_));
    if (staging_.bytes() < image_bytes + array_bytes) {
      PODSERVE_ASSIGN_OR_RETURN(staging_, allocate_host(2 * (image_bytes + array_bytes)));
    }
    auto* staged = static_cast<std::byte*>(staging_.data());
    if (image_bytes > 0) std::memcpy(staged, plan_.static_image.data(), image_bytes);
    if (array_bytes > 0) std::memcpy(staged + image_bytes, batch_.arrays.data(), array_bytes);
    if (image_bytes > 0) {
      PODSERVE_CHECK(cudaMemcpyAsync(static_cast<char*>(workspace_.data()) + plan_.counters_bytes,
                                     staged, image_bytes, cudaMemcpyHostToDevice, stream_));
    }
    if (array_bytes > 0) {
      PODSERVE_CHECK(cudaMemcpyAsync(batch_arrays_.data(), staged + image_bytes, array_bytes,
                                     cudaMemcpyHostToDevice, stream_));
    }
    PODSERVE_CHECK(cudaEventRecord(staging_done_, stream_));
    prepared_q_heads_ = options.num_q_heads;
    prepared_kv_heads_ = cache_shape.num_kv_heads;
    prepared_head_dim_ = cache_shape.head_dim;
    prepared_ = true;
    return Status::Ok();
  }

  Status run_prepared_attention(const TensorView& q, const KvCacheView& cache, float scale,
                                AttentionKind kind, const TensorView& out) override {
    constexpr std::string_view op = "attention";
    switch (kind) {
      case AttentionKind::kPod:
      case AttentionKind::kSerial:
      case AttentionKind::kStreams: break;
      case AttentionKind::kCpu:
        return invalid_argument("attention: the cpu kind runs on the CPU backend only");
    }
    if (!prepared_) return invalid_argument("attention: no batch prepared");
    PODSERVE_RETURN_IF_ERROR(
        check_attention_tensors(op, q, cache, scale, out, DType::kBF16, prepared_extent_));
    const auto num_q_heads = static_cast<std::int32_t>(q.shape[1]);
    if (num_q_heads != prepared_q_heads_ || cache.num_kv_heads != prepared_kv_heads_ ||
        cache.head_dim != prepared_head_dim_) {
      return invalid_argument(fmt::format(
          "attention: heads {}/{} and head_dim {} differ from the prepared batch's {}/{} and {}",
          num_q_heads, cache.num_kv_heads, cache.head_dim, prepared_q_heads_, prepared_kv_heads_,
          prepared_head_dim_));
    }
    if (batch_.num_prefill + batch_.num_decode == 0) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(enter());
    cuda::HybridAttentionParams params;
    params.q = q.data;
    params.out = out.data;
    params.kv = cache.data;
    params.num_pages = cache.num_pages;
    params.page_size = cache.page_size;
    params.num_q_heads = num_q_heads;
    params.num_kv_heads = cache.num_kv_heads;
    params.head_dim = cache.head_dim;
    cuda::point_at_flat_arrays(params, static_cast<const std::int32_t*>(batch_arrays_.data()),
                               batch_.num_prefill, batch_.num_decode, batch_.stride);
    params.scale = scale;
    const bool timed = !capturing_;
    TimingEvents events;
    if (timed) {
      PODSERVE_ASSIGN_OR_RETURN(events, next_timing_events());
      PODSERVE_CHECK(cudaEventRecord(events.start, stream_));
    }
    Status launched = invalid_argument("attention: unsupported kind");
    if (batch_.num_prefill == 0) {
      // Decode-only: every kind is the standalone decode kernel. POD's fused launch has nothing
      // to overlap here, and its CTAs carry the prefill tile's shared memory (fewer per SM).
      launched = cuda::run_decode(params, plan_, workspace_.data(), stream_);
    } else {
      switch (kind) {
        case AttentionKind::kPod:
          launched = cuda::run_pod(params, plan_, workspace_.data(), stream_);
          break;
        case AttentionKind::kSerial:
          launched = cuda::run_serial(params, plan_, workspace_.data(), stream_);
          break;
        case AttentionKind::kStreams:
          launched = cuda::run_streams(params, plan_, workspace_.data(), stream_, side_stream_);
          break;
        case AttentionKind::kCpu: break;
      }
    }
    PODSERVE_RETURN_IF_ERROR(launched);
    if (timed) {
      PODSERVE_CHECK(cudaEventRecord(events.stop, stream_));
      ++timed_calls_;
    }
    return Status::Ok();
  }

  Status sample(const TensorView& logits, const TensorView& rows, const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_sample(logits, rows, out, DType::kBF16));
    PODSERVE_RETURN_IF_ERROR(enter());
    const std::int64_t count = logits.shape[0], vocab = logits.shape[1];
    PODSERVE_RETURN_IF_ERROR(reserve_graph_scratch(
        sample_workspace_, cuda::sample_workspace_bytes(count, vocab, device_shape_.num_sms)));
    return cuda::launch_sample(logits.data, count, vocab, rows.data, out.as<std::int32_t>(),
                               sample_workspace_.data(), device_shape_.num_sms, stream_);
  }

  bool supports_graphs() const override { return true; }
  void set_small_batch_kernels(bool allowed) override {
    if (gemm_tuner_->allow_skinny() == allowed) return;
    gemm_tuner_->set_allow_skinny(allowed);
    ++graph_generation_;
  }
  void* native_stream() override { return stream_; }

  Result<std::unique_ptr<BackendGraph>> capture(const std::function<Status()>& body) override {
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    const Status recorded = body();
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    PODSERVE_RETURN_IF_ERROR(recorded);
    PODSERVE_CHECK(ended);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    PODSERVE_CHECK(instantiated);
    return std::unique_ptr<BackendGraph>(std::make_unique<CudaGraph>(exec, stream_, device_));
  }

  std::uint64_t graph_generation() const override { return graph_generation_; }

  Result<double> take_attention_seconds() override {
    PODSERVE_RETURN_IF_ERROR(enter());
    double seconds = 0.0;
    for (std::size_t i = 0; i < timed_calls_; ++i) {
      PODSERVE_CHECK(cudaEventSynchronize(timing_events_[i].stop));
      float milliseconds = 0.0f;
      PODSERVE_CHECK(
          cudaEventElapsedTime(&milliseconds, timing_events_[i].start, timing_events_[i].stop));
      seconds += milliseconds * 1e-3;
    }
    timed_calls_ = 0;
    return seconds;
  }

  Status gather_rows(const TensorView& x, std::span<const std::int32_t> rows,
                     const TensorView& out) override {
    PODSERVE_RETURN_IF_ERROR(check_gather_rows(x, rows, out, DType::kBF16));
    if (rows.empty()) return Status::Ok();
    PODSERVE_RETURN_IF_ERROR(enter());
    PODSERVE_RETURN_IF_ERROR(gather_rows_.reserve(rows.size_bytes()));
    PODSERVE_CHECK(cudaMemcpyAsync(gather_rows_.data(), rows.data(), rows.size_bytes(),
                                   cudaMemcpyHostToDevice, stream_));
    return cuda::launch_gather_rows(x.data, static_cast<const std::int32_t*>(gather_rows_.data()),
                                    out.data, static_cast<std::int64_t>(rows.size()), x.shape[1],
                                    stream_);
  }

 private:
  struct TimingEvents {
    cudaEvent_t start = nullptr;
    cudaEvent_t stop = nullptr;
  };

  // The event pair for the next attention call since the last take (created on first use, kept).
  Result<TimingEvents> next_timing_events() {
    if (timed_calls_ == timing_events_.size()) {
      TimingEvents events;
      PODSERVE_CHECK(cudaEventCreate(&events.start));
      if (const cudaError_t error = cudaEventCreate(&events.stop); error != cudaSuccess) {
        cudaEventDestroy(events.start);
        PODSERVE_CHECK(error);
      }
      timing_events_.push_back(events);
    }
    return timing_events_[timed_calls_];
  }

  Status enter() const {
    PODSERVE_CHECK(cudaSetDevice(device_));
    return Status::Ok();
  }

  // The rope+append kernel for checked arguments: inverse frequencies from theta, or inv_freq
  // [D/2] (fp32, device) when not null.
  Status launch_rope_append(std::string_view op, const TensorView& qkv, const TensorView& positions,
                            const TensorView& slots, float theta, const float* inv_freq,
                            const KvCacheView& cache, const TensorView& q_out) {
    PODSERVE_RETURN_IF_ERROR(check_rope_head_dim(op, cache.head_dim));
    PODSERVE_RETURN_IF_ERROR(enter());
    return cuda::launch_rope_append(
        qkv.data, positions.as<const std::int32_t>(), slots.as<const std::int32_t>(), cache.data,
        q_out.data, qkv.shape[0], static_cast<int>(q_out.shape[1]), cache.num_kv_heads,
        cache.head_dim, cache.page_size, static_cast<double>(theta), inv_freq, stream_);
  }

  // The rope kernels keep a head's cos/sin table in shared memory: head dims up to 512.
  static Status check_rope_head_dim(std::string_view op, std::int64_t head_dim) {
    if (head_dim <= 512) return Status::Ok();
    return invalid_argument(
        fmt::format("{}: head_dim {} exceeds the CUDA kernels' 512", op, head_dim));
  }

  // y = x @ w^T + beta * y through cuBLAS (bf16 in and out, fp32 accumulation).
  Status gemm(std::string_view op, const TensorView& x, const TensorView& w, const TensorView& y,
              float beta) {
    PODSERVE_RETURN_IF_ERROR(check_matmul(x, w, y, DType::kBF16));
    const std::int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
    if (m == 0 || n == 0) return Status::Ok();
    if (std::max({m, n, k}) > INT32_MAX) {
      return invalid_argument(
          fmt::format("{}: {} x {} x {} exceeds cuBLAS's int extents", op, m, n, k));
    }
    PODSERVE_RETURN_IF_ERROR(enter());
    // Few rows (decode): the tuned cuBLASLt algorithm of the shape.
    PODSERVE_ASSIGN_OR_RETURN(
        const bool tuned,
        gemm_tuner_->run(x.data, w.data, y.data, static_cast<int>(m), static_cast<int>(n),
                         static_cast<int>(k), beta, !capturing_));
    if (tuned) return Status::Ok();
    // Row-major y [M, N] = x [M, K] . w^T is column-major y^T [N, M] = w^T(col-major: w [K, N]
    // transposed) . x^T: op(A) = A^T with A = w as a column-major [K, N] matrix.
    const float alpha = 1.0f;
    PODSERVE_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                static_cast<int>(m), static_cast<int>(k), &alpha, w.data,
                                CUDA_R_16BF, static_cast<int>(k), x.data, CUDA_R_16BF,
                                static_cast<int>(k), &beta, y.data, CUDA_R_16BF,
                                static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return Status::Ok();
  }

  // Grows scratch that captured graphs read; moving it makes those graphs stale.
  Status reserve_graph_scratch(DeviceScratch& scratch, std::size_t bytes) {
    const void* before = scratch.data();
    PODSERVE_RETURN_IF_ERROR(scratch.reserve(bytes));
    if (before != nullptr && scratch.data() != before) ++graph_generation_;
    return Status::Ok();
  }

  static constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;

  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t side_stream_ = nullptr;  // attention kind kStreams: the decode side
  cublasHandle_t cublas_ = nullptr;
  std::unique_ptr<cuda::GemmTuner> gemm_tuner_;  // GEMMs of up to 256 rows
  cuda::DeviceShape device_shape_;
  // The prepared attention batch: planned and uploaded once, run by every layer of a forward pass.
  cuda::FlatAttentionBatch batch_;
  bool prepared_ = false;
  std::int64_t prepared_extent_ = 0;  // rows of q the batch reaches
  std::int32_t prepared_q_heads_ = 0, prepared_kv_heads_ = 0, prepared_head_dim_ = 0;
  cuda::HybridAttentionPlan plan_;
  DeviceBuffer staging_;                // pinned: the plan image, then the batch arrays
  cudaEvent_t staging_done_ = nullptr;  // the uploads from staging_ have been read
  DeviceScratch cublas_workspace_;
  bool capturing_ = false;  // inside capture(): no timing events
  std::uint64_t graph_generation_ = 0;
  DeviceScratch workspace_;         // plan_.workspace_bytes
  DeviceScratch batch_arrays_;      // batch_.arrays
  DeviceScratch gather_rows_;       // gather_rows: the row indices
  DeviceScratch sample_workspace_;  // sample: the per-slice partial results
  // Attention timing: one event pair per attention() call since the last take.
  std::vector<TimingEvents> timing_events_;
  std::size_t timed_calls_ = 0;
};

}  // namespace

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return unavailable("CUDA backend: no CUDA device is visible");
  }
  if (device_index < 0 || device_index >= count) {
    return unavailable(
        fmt::format("CUDA backend: device {} requested, {} visible (a rank's device "
                    "is its node-local rank: start at most one rank per GPU)",
                    device_index, count));
  }
  auto backend = std::make_unique<CudaBackend>(device_index);
  PODSERVE_RETURN_IF_ERROR(backend->init());
  return std::unique_ptr<Backend>(std::move(backend));
}

void* cuda_backend_stream(Backend& backend) {
  auto* cuda_backend = dynamic_cast<CudaBackend*>(&backend);
  return cuda_backend == nullptr ? nullptr : cuda_backend->stream();
}

std::vector<std::string> cuda_gemm_tuning_report(const Backend& backend) {
  const auto* cuda_backend = dynamic_cast<const CudaBackend*>(&backend);
  return cuda_backend == nullptr ? std::vector<std::string>{} : cuda_backend->gemm_report();
}

int cuda_backend_device(const Backend& backend) {
  const auto* cuda_backend = dynamic_cast<const CudaBackend*>(&backend);
  return cuda_backend == nullptr ? -1 : cuda_backend->device();
}

Result<CudaMemoryInfo> cuda_device_memory(int device_index) {
  int count = 0;
  PODSERVE_CHECK(cudaGetDeviceCount(&count));
  if (device_index < 0 || device_index >= count) {
    return unavailable(
        fmt::format("device memory: device {} requested, {} visible", device_index, count));
  }
  int current = 0;
  PODSERVE_CHECK(cudaGetDevice(&current));
  PODSERVE_CHECK(cudaSetDevice(device_index));
  CudaMemoryInfo info;
  const cudaError_t queried = cudaMemGetInfo(&info.free_bytes, &info.total_bytes);
  PODSERVE_CHECK(cudaSetDevice(current));
  PODSERVE_CHECK(queried);
  return info;
}

}  // namespace podserve
