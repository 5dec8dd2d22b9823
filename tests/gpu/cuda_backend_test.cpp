// GPU tests of the CUDA backend (label gpu): every op against the fp32 CPU backend, on fresh
// random inputs (the seed is printed; PODSERVE_TEST_SEED=<n> replays a run). Every test skips
// with a reason when no CUDA device is present.
//
// Method: float inputs are rounded to bf16 on the host and the same values are uploaded to both
// backends with upload_f32, so a comparison measures only the op's own error (fp32 math on the
// CPU; bf16 outputs with fp32 accumulation on the GPU). Outputs are poisoned with NaN (bf16
// 0x7FC0, fp32 quiet NaN) before each op that does not write in place: a NaN or infinity never
// passes, and an output whose elements are all zero fails.
//
// Tolerances (got = CUDA output widened to fp32, want = CPU output):
//   upload_f32: bitwise round-to-nearest-even bf16 of the fp32 input;
//   embedding, gather_rows: bitwise equal (copies);
//   kv_append: the whole cache bitwise equal, slots nobody wrote keep their NaN poison;
//   rms_norm, add, silu_mul, rope: |got - want| <= 2e-2 + 2e-2 |want| per element;
//   matmul: ||got - want|| / ||want|| <= 1e-2, and per element
//           |got - want| <= 1e-2 |want| + 2e-3 sqrt(K) rms(x) rms(w);
//   attention (kPod, kSerial and kStreams each against kCpu): per element
//           |got - want| <= 2e-2 + 2e-2 |want| and ||got - want|| / ||want|| <= 1e-2 (as
//           attention_cuda_test.cpp); the three kinds agree to 1e-2 + 1e-2 |other| per element.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/test_random.h"
#include "kernels/cpu_backend.h"
#include "kernels/cuda/skinny_gemm.h"

namespace podserve {
namespace {

constexpr std::uint16_t kBf16Nan = 0x7FC0;
constexpr std::int32_t kPageSize = 16;

using Dims = std::pair<std::int64_t, std::int64_t>;

// fp32 -> bf16, round to nearest even (inputs are finite).
std::uint16_t to_bf16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
float from_bf16(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}
float round_to_bf16(float value) { return from_bf16(to_bf16(value)); }

bool have_cuda_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define ASSERT_STATUS_OK(expr)                                                       \
  do {                                                                               \
    const ::podserve::Status assert_status_ = (expr);                                \
    ASSERT_TRUE(assert_status_.ok()) << #expr << ": " << assert_status_.to_string(); \
  } while (false)

#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)                     \
  auto tmp = (expr);                                                  \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().to_string(); \
  lhs = std::move(tmp).value()
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(PODSERVE_CONCAT(assert_result_, __LINE__), lhs, expr)

TensorView view_of(void* data, DType dtype, const std::vector<std::int64_t>& shape) {
  TensorView view;
  view.data = data;
  view.dtype = dtype;
  view.ndim = static_cast<std::int32_t>(shape.size());
  std::copy(shape.begin(), shape.end(), view.shape.begin());
  return view;
}

std::size_t numel_of(const std::vector<std::int64_t>& shape) {
  return static_cast<std::size_t>(
      std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>()));
}

// One tensor on both backends: floats are fp32 on the CPU and bf16 on the GPU (holding the same
// bf16-representable values), int32 index tensors are int32 on both.
struct Mirrored {
  std::vector<std::int64_t> shape;
  DeviceBuffer cpu_buffer, cuda_buffer;
  TensorView cpu, cuda;
  std::size_t numel() const { return numel_of(shape); }
};

// Checks got against want element by element: |got - want| <= abs_tol + rel_tol * |want|, plus
// extra_abs (per-op slack, e.g. matmul's K-dependent term). Non-finite outputs fail, and so does
// an all-zero output.
void expect_close(std::span<const float> got, std::span<const float> want, double abs_tol,
                  double rel_tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t non_finite = 0, bad = 0, non_zero = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++non_finite;
      continue;
    }
    if (got[i] != 0.0f) ++non_zero;
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(diff <= abs_tol + rel_tol * std::fabs(want[i])) && bad++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(non_finite, 0u) << what << ": NaN or infinite outputs (unwritten elements keep the "
                            << "NaN poison)";
  EXPECT_EQ(bad, 0u) << what << ": elements outside |got - want| <= " << abs_tol << " + " << rel_tol
                     << " |want|";
  EXPECT_GT(non_zero, 0u) << what << ": the output is all zero";
}

double relative_l2_error(std::span<const float> got, std::span<const float> want) {
  double err2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = static_cast<double>(got[i]) - want[i];
    err2 += diff * diff;
    ref2 += static_cast<double>(want[i]) * want[i];
  }
  return ref2 > 0 ? std::sqrt(err2 / ref2) : std::numeric_limits<double>::infinity();
}

// Bitwise equality of the fp32 patterns (NaN poison compares equal to NaN poison).
void expect_bitwise_equal(std::span<const float> got, std::span<const float> want,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t bad = 0, non_zero = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isfinite(got[i]) && got[i] != 0.0f) ++non_zero;
    if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(want[i]) &&
        bad++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " (0x" << std::hex
                    << std::bit_cast<std::uint32_t>(got[i]) << ") want " << want[i] << " (0x"
                    << std::bit_cast<std::uint32_t>(want[i]) << std::dec << ")";
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": elements differ";
  EXPECT_GT(non_zero, 0u) << what << ": the output holds no finite non-zero element";
}

double rms(std::span<const float> values) {
  double sum = 0;
  for (float v : values) sum += static_cast<double>(v) * v;
  return std::sqrt(sum / static_cast<double>(std::max<std::size_t>(1, values.size())));
}

// One sequence of an attention batch: C new tokens after P cached ones (C == 1: a decode).
struct SequenceShape {
  std::int32_t new_tokens = 1;
  std::int32_t cached_tokens = 0;
};

// A hybrid attention batch on the host: bf16-representable q and cache values, page tables over
// randomly scattered pages (a few pages belong to nobody).
struct AttentionBatch {
  std::int32_t head_dim = 0, num_q_heads = 0, num_kv_heads = 0;
  std::int32_t num_pages = 0, total_tokens = 0;
  std::vector<SequenceShape> shapes;
  std::vector<std::int32_t> query_offsets;
  std::vector<std::vector<std::int32_t>> page_tables;
  std::vector<float> q;      // [T, Hq, D]
  std::vector<float> cache;  // [num_pages, 2, page_size, Hkv, D]

  std::vector<AttentionSequence> sequences() const {
    std::vector<AttentionSequence> out;
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      AttentionSequence seq;
      seq.query_offset = query_offsets[s];
      seq.num_new_tokens = shapes[s].new_tokens;
      seq.num_cached_tokens = shapes[s].cached_tokens;
      seq.page_table = page_tables[s];
      out.push_back(seq);
    }
    return out;
  }
  std::vector<std::int64_t> q_shape() const { return {total_tokens, num_q_heads, head_dim}; }
  KvCacheView cache_view(void* data, DType dtype) const {
    KvCacheView view;
    view.data = data;
    view.dtype = dtype;
    view.num_pages = num_pages;
    view.page_size = kPageSize;
    view.num_kv_heads = num_kv_heads;
    view.head_dim = head_dim;
    return view;
  }
};

std::vector<float> random_bf16(std::mt19937_64& rng, std::size_t n, float lo, float hi) {
  std::vector<float> values = podserve::testing::uniform_values(rng, n, lo, hi);
  for (float& v : values) v = round_to_bf16(v);
  return values;
}

// Draws q ~ U(-2, 2) (so softmax is not flat) and K, V ~ U(-1, 1) over shuffled pages.
AttentionBatch make_attention_batch(std::int32_t head_dim, std::int32_t num_q_heads,
                                    std::int32_t num_kv_heads,
                                    const std::vector<SequenceShape>& shapes,
                                    std::mt19937_64& rng) {
  AttentionBatch b;
  b.head_dim = head_dim;
  b.num_q_heads = num_q_heads;
  b.num_kv_heads = num_kv_heads;
  b.shapes = shapes;
  std::vector<std::int32_t> pages_per_seq;
  for (const SequenceShape& s : shapes) {
    b.query_offsets.push_back(b.total_tokens);
    b.total_tokens += s.new_tokens;
    pages_per_seq.push_back((s.cached_tokens + s.new_tokens + kPageSize - 1) / kPageSize);
    b.num_pages += pages_per_seq.back();
  }
  b.num_pages += 5;  // pages nobody owns
  std::vector<std::int32_t> perm(static_cast<std::size_t>(b.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::size_t next = 0;
  for (std::int32_t count : pages_per_seq) {
    b.page_tables.emplace_back(perm.begin() + static_cast<std::ptrdiff_t>(next),
                               perm.begin() + static_cast<std::ptrdiff_t>(next + count));
    next += static_cast<std::size_t>(count);
  }
  b.q = random_bf16(rng, numel_of(b.q_shape()), -2.0f, 2.0f);
  b.cache = random_bf16(
      rng, static_cast<std::size_t>(b.num_pages) * 2 * kPageSize * num_kv_heads * head_dim, -1.0f,
      1.0f);
  return b;
}

// New q and cache values for the same batch description.
void redraw_values(AttentionBatch& b, std::mt19937_64& rng) {
  b.q = random_bf16(rng, b.q.size(), -2.0f, 2.0f);
  b.cache = random_bf16(rng, b.cache.size(), -1.0f, 1.0f);
}

// Other pages for every sequence, written into the existing page-table vectors (same addresses).
void reassign_pages_in_place(AttentionBatch& b, std::mt19937_64& rng) {
  std::vector<std::int32_t> perm(static_cast<std::size_t>(b.num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::size_t next = 0;
  for (std::vector<std::int32_t>& table : b.page_tables) {
    for (std::int32_t& page : table) page = perm[next++];
  }
}

// The CPU backend's kCpu attention of `b`: out [T, Hq, D].
Result<std::vector<float>> cpu_attention(Backend& cpu, const AttentionBatch& b) {
  const std::size_t q_elems = b.q.size();
  PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer q, cpu.allocate(q_elems * 4));
  PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer out, cpu.allocate(q_elems * 4));
  PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer cache, cpu.allocate(b.cache.size() * 4));
  PODSERVE_RETURN_IF_ERROR(cpu.copy_to_device(q.data(), b.q.data(), q_elems * 4));
  PODSERVE_RETURN_IF_ERROR(cpu.copy_to_device(cache.data(), b.cache.data(), b.cache.size() * 4));
  const std::vector<AttentionSequence> seqs = b.sequences();
  const float scale = 1.0f / std::sqrt(static_cast<float>(b.head_dim));
  PODSERVE_RETURN_IF_ERROR(cpu.attention(
      view_of(q.data(), DType::kF32, b.q_shape()), b.cache_view(cache.data(), DType::kF32), seqs,
      scale, AttentionKind::kCpu, view_of(out.data(), DType::kF32, b.q_shape())));
  std::vector<float> result(q_elems);
  PODSERVE_RETURN_IF_ERROR(cpu.copy_to_host(result.data(), out.data(), q_elems * 4));
  return result;
}

// Device buffers one attention call uses; reused across calls as a model does (same pointers).
struct CudaAttentionBuffers {
  DeviceBuffer q, cache, out;
};

Result<CudaAttentionBuffers> allocate_attention_buffers(Backend& cuda, std::size_t q_elems,
                                                        std::size_t cache_elems) {
  CudaAttentionBuffers buffers;
  PODSERVE_ASSIGN_OR_RETURN(buffers.q, cuda.allocate(q_elems * 2));
  PODSERVE_ASSIGN_OR_RETURN(buffers.out, cuda.allocate(q_elems * 2));
  PODSERVE_ASSIGN_OR_RETURN(buffers.cache, cuda.allocate(cache_elems * 2));
  return buffers;
}

// Uploads `b` into `buffers`, poisons out, runs attention of `kind` and returns out as fp32.
Result<std::vector<float>> cuda_attention(Backend& cuda, const AttentionBatch& b,
                                          AttentionKind kind, const CudaAttentionBuffers& buffers) {
  const TensorView q = view_of(buffers.q.data(), DType::kBF16, b.q_shape());
  const TensorView out = view_of(buffers.out.data(), DType::kBF16, b.q_shape());
  PODSERVE_RETURN_IF_ERROR(cuda.upload_f32(q, b.q));
  PODSERVE_RETURN_IF_ERROR(cuda.upload_f32(
      view_of(buffers.cache.data(), DType::kBF16, {static_cast<std::int64_t>(b.cache.size())}),
      b.cache));
  const std::vector<std::uint16_t> poison(b.q.size(), kBf16Nan);
  PODSERVE_RETURN_IF_ERROR(cuda.copy_to_device(out.data, poison.data(), poison.size() * 2));
  const std::vector<AttentionSequence> seqs = b.sequences();
  const float scale = 1.0f / std::sqrt(static_cast<float>(b.head_dim));
  PODSERVE_RETURN_IF_ERROR(
      cuda.attention(q, b.cache_view(buffers.cache.data(), DType::kBF16), seqs, scale, kind, out));
  PODSERVE_RETURN_IF_ERROR(cuda.synchronize());
  std::vector<std::uint16_t> bits(b.q.size());
  PODSERVE_RETURN_IF_ERROR(cuda.copy_to_host(bits.data(), out.data, bits.size() * 2));
  std::vector<float> result(bits.size());
  std::transform(bits.begin(), bits.end(), result.begin(), from_bf16);
  return result;
}

constexpr AttentionKind kCudaKinds[] = {AttentionKind::kPod, AttentionKind::kSerial,
                                        AttentionKind::kStreams};

void expect_attention_close(std::span<const float> got, std::span<const float> want,
                            const std::string& what) {
  expect_close(got, want, 2e-2, 2e-2, what);
  EXPECT_LE(relative_l2_error(got, want), 1e-2) << what;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
    auto backend = make_cuda_backend(0);
    ASSERT_TRUE(backend.ok()) << backend.status().to_string();
    cuda_ = std::move(backend).value();
    seed_ = podserve::testing::test_seed();
    trace_ = podserve::testing::seed_trace(seed_);
    rng_.seed(seed_);
  }

  std::vector<float> random_values(std::size_t n, float lo = -1.0f, float hi = 1.0f) {
    return random_bf16(rng_, n, lo, hi);
  }

  // GEMM operands on both backends: x [m, k] ~ U(-1, 1) and w [n, k] ~ U(-a, a) with
  // a = sqrt(3 / k) * sqrt(3) (outputs of about unit scale for any k); slack is the GEMM
  // tolerance's k-dependent term, 2e-3 sqrt(k) rms(x) rms(w) (the header's matmul tolerance).
  struct GemmOperands {
    Mirrored x, w;
    double slack = 0.0;
  };
  Result<GemmOperands> gemm_operands(std::int64_t m, std::int64_t n, std::int64_t k) {
    const float a = 3.0f / std::sqrt(static_cast<float>(k));
    const std::vector<float> x_values = random_values(numel_of({m, k}));
    const std::vector<float> w_values = random_values(numel_of({n, k}), -a, a);
    GemmOperands operands;
    PODSERVE_ASSIGN_OR_RETURN(operands.x, mirror({m, k}, x_values));
    PODSERVE_ASSIGN_OR_RETURN(operands.w, mirror({n, k}, w_values));
    operands.slack = 2e-3 * std::sqrt(static_cast<double>(k)) * rms(x_values) * rms(w_values);
    return operands;
  }

  // Allocates `shape` (float) on both backends and uploads `values` to both with upload_f32.
  Result<Mirrored> mirror(const std::vector<std::int64_t>& shape, std::span<const float> values) {
    Mirrored m;
    m.shape = shape;
    PODSERVE_ASSIGN_OR_RETURN(m.cpu_buffer, cpu_->allocate(m.numel() * 4));
    PODSERVE_ASSIGN_OR_RETURN(m.cuda_buffer, cuda_->allocate(m.numel() * 2));
    m.cpu = view_of(m.cpu_buffer.data(), DType::kF32, shape);
    m.cuda = view_of(m.cuda_buffer.data(), DType::kBF16, shape);
    if (!values.empty()) {
      PODSERVE_RETURN_IF_ERROR(cpu_->upload_f32(m.cpu, values));
      PODSERVE_RETURN_IF_ERROR(cuda_->upload_f32(m.cuda, values));
    }
    return m;
  }

  // An int32 index tensor [n] on both backends.
  Result<Mirrored> mirror_indices(std::span<const std::int32_t> values) {
    Mirrored m;
    m.shape = {static_cast<std::int64_t>(values.size())};
    PODSERVE_ASSIGN_OR_RETURN(m.cpu_buffer, cpu_->allocate(values.size() * 4));
    PODSERVE_ASSIGN_OR_RETURN(m.cuda_buffer, cuda_->allocate(values.size() * 4));
    m.cpu = view_of(m.cpu_buffer.data(), DType::kI32, m.shape);
    m.cuda = view_of(m.cuda_buffer.data(), DType::kI32, m.shape);
    PODSERVE_RETURN_IF_ERROR(cpu_->copy_to_device(m.cpu.data, values.data(), values.size() * 4));
    PODSERVE_RETURN_IF_ERROR(cuda_->copy_to_device(m.cuda.data, values.data(), values.size() * 4));
    return m;
  }

  // Fills a float tensor with NaN on both backends.
  Status poison(const Mirrored& m) {
    const std::vector<float> nan32(m.numel(), std::numeric_limits<float>::quiet_NaN());
    const std::vector<std::uint16_t> nan16(m.numel(), kBf16Nan);
    PODSERVE_RETURN_IF_ERROR(cpu_->copy_to_device(m.cpu.data, nan32.data(), nan32.size() * 4));
    return cuda_->copy_to_device(m.cuda.data, nan16.data(), nan16.size() * 2);
  }

  Result<std::vector<float>> read_cpu(const Mirrored& m) {
    std::vector<float> out(m.numel());
    PODSERVE_RETURN_IF_ERROR(cpu_->copy_to_host(out.data(), m.cpu.data, out.size() * 4));
    return out;
  }

  // The CUDA copy, bf16 widened to fp32 (waits for the backend's stream).
  Result<std::vector<float>> read_cuda(const Mirrored& m) {
    PODSERVE_RETURN_IF_ERROR(cuda_->synchronize());
    std::vector<std::uint16_t> bits(m.numel());
    PODSERVE_RETURN_IF_ERROR(cuda_->copy_to_host(bits.data(), m.cuda.data, bits.size() * 2));
    std::vector<float> out(bits.size());
    std::transform(bits.begin(), bits.end(), out.begin(), from_bf16);
    return out;
  }

  std::unique_ptr<Backend> cpu_ = make_cpu_backend();
  std::unique_ptr<Backend> cuda_;
  std::uint64_t seed_ = 0;
  std::string trace_;
  std::mt19937_64 rng_;
};

TEST_F(CudaBackendTest, DescribesItselfAndItsDevice) {
  EXPECT_EQ(cuda_->kind(), BackendKind::kCuda);
  EXPECT_EQ(cuda_->compute_dtype(), DType::kBF16);
  EXPECT_FALSE(cuda_->name().empty());
  EXPECT_NE(cuda_backend_stream(*cuda_), nullptr) << "the backend owns its stream";
  EXPECT_EQ(cuda_backend_stream(*cpu_), nullptr);
  auto memory = cuda_device_memory(0);
  ASSERT_TRUE(memory.ok()) << memory.status().to_string();
  EXPECT_GT(memory->total_bytes, 0u);
  EXPECT_LE(memory->free_bytes, memory->total_bytes);
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  auto missing = make_cuda_backend(count);
  ASSERT_FALSE(missing.ok()) << "device " << count << " does not exist";
  EXPECT_EQ(missing.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(cuda_device_memory(count).ok());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess)
      << "a refused device must not leave an error for the next launch check to pick up";
}

TEST_F(CudaBackendTest, UploadRoundsToNearestEvenAndCopiesRoundTrip) {
  SCOPED_TRACE(trace_);
  std::vector<float> values = podserve::testing::uniform_values(rng_, 4099, -300.0f, 300.0f);
  // Ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3 * 2^-8 rounds up to 1 + 2^-6 (even).
  values[0] = 1.0f + 0x1p-8f;
  values[1] = 1.0f + 3 * 0x1p-8f;
  values[2] = -0.0f;
  values[3] = 1e-30f;
  ASSERT_OK_AND_ASSIGN(DeviceBuffer buffer, cuda_->allocate(values.size() * 2));
  const TensorView dst = view_of(buffer.data(), DType::kBF16, {1, 4099});
  ASSERT_STATUS_OK(cuda_->upload_f32(dst, values));
  std::vector<std::uint16_t> bits(values.size());
  ASSERT_STATUS_OK(cuda_->copy_to_host(bits.data(), buffer.data(), bits.size() * 2));
  for (std::size_t i = 0; i < values.size(); ++i)
    ASSERT_EQ(bits[i], to_bf16(values[i])) << "value " << values[i] << " at " << i;
  EXPECT_EQ(bits[0], 0x3F80);
  EXPECT_EQ(bits[1], 0x3F82);

  // Raw bytes survive copy_to_device / copy_to_host unchanged.
  std::vector<std::uint8_t> bytes(1000);
  for (auto& b : bytes) b = static_cast<std::uint8_t>(rng_());
  ASSERT_OK_AND_ASSIGN(DeviceBuffer raw, cuda_->allocate(bytes.size()));
  ASSERT_STATUS_OK(cuda_->copy_to_device(raw.data(), bytes.data(), bytes.size()));
  std::vector<std::uint8_t> back(bytes.size());
  ASSERT_STATUS_OK(cuda_->copy_to_host(back.data(), raw.data(), back.size()));
  EXPECT_EQ(back, bytes);

  // upload_f32 rejects a size mismatch and a non-bf16 destination.
  EXPECT_FALSE(cuda_->upload_f32(dst, std::span<const float>(values).first(10)).ok());
  EXPECT_FALSE(cuda_
                   ->upload_f32(view_of(buffer.data(), DType::kF32, {1000}),
                                std::span<const float>(values).first(1000))
                   .ok());
}

TEST_F(CudaBackendTest, EmbeddingCopiesTableRows) {
  SCOPED_TRACE(trace_);
  for (const auto& [vocab, hidden] : std::vector<Dims>{{777, 320}, {512, 4096}, {50, 64}}) {
    const std::string what =
        "embedding vocab " + std::to_string(vocab) + " hidden " + std::to_string(hidden);
    std::vector<std::int32_t> ids(45);
    for (auto& id : ids) id = static_cast<std::int32_t>(rng_() % static_cast<std::uint64_t>(vocab));
    ids[0] = 0;
    ids[1] = static_cast<std::int32_t>(vocab - 1);
    ids[2] = ids[3];  // a repeated id
    ASSERT_OK_AND_ASSIGN(Mirrored table,
                         mirror({vocab, hidden}, random_values(numel_of({vocab, hidden}), -2, 2)));
    ASSERT_OK_AND_ASSIGN(Mirrored d_ids, mirror_indices(ids));
    ASSERT_OK_AND_ASSIGN(Mirrored out, mirror({static_cast<std::int64_t>(ids.size()), hidden}, {}));
    ASSERT_STATUS_OK(poison(out));
    ASSERT_STATUS_OK(cpu_->embedding(table.cpu, d_ids.cpu, out.cpu));
    ASSERT_STATUS_OK(cuda_->embedding(table.cuda, d_ids.cuda, out.cuda));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(out));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(out));
    expect_bitwise_equal(got, want, what);
  }
}

TEST_F(CudaBackendTest, RmsNormMatchesCpuIncludingInPlace) {
  SCOPED_TRACE(trace_);
  for (const auto& [rows, dim] : std::vector<Dims>{
           {1, 128}, {7, 4096}, {64, 200}, {33, 64}, {300, 1024}, {5, 100}, {3, 8200}}) {
    const std::vector<float> x_values = random_values(numel_of({rows, dim}), -2, 2);
    const std::vector<float> w_values = random_values(static_cast<std::size_t>(dim), 0.5f, 1.5f);
    ASSERT_OK_AND_ASSIGN(Mirrored weight, mirror({dim}, w_values));
    for (bool in_place : {false, true}) {
      const std::string what = "rms_norm [" + std::to_string(rows) + ", " + std::to_string(dim) +
                               "]" + (in_place ? " in place" : "");
      ASSERT_OK_AND_ASSIGN(Mirrored x, mirror({rows, dim}, x_values));
      ASSERT_OK_AND_ASSIGN(Mirrored separate, mirror({rows, dim}, {}));
      const Mirrored& out = in_place ? x : separate;
      if (!in_place) ASSERT_STATUS_OK(poison(out));
      ASSERT_STATUS_OK(cpu_->rms_norm(x.cpu, weight.cpu, 1e-5f, out.cpu));
      ASSERT_STATUS_OK(cuda_->rms_norm(x.cuda, weight.cuda, 1e-5f, out.cuda));
      ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(out));
      ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(out));
      expect_close(got, want, 2e-2, 2e-2, what);
    }
  }
}

struct MatmulShape {
  std::int64_t m, n, k;
};

std::string matmul_name(const MatmulShape& s) {
  std::string name = "m";
  name += std::to_string(s.m);
  name += "_n";
  name += std::to_string(s.n);
  name += "_k";
  name += std::to_string(s.k);
  return name;
}

void PrintTo(const MatmulShape& s, std::ostream* os) { *os << matmul_name(s); }

class CudaMatmulTest : public CudaBackendTest, public ::testing::WithParamInterface<MatmulShape> {};

TEST_P(CudaMatmulTest, MatchesCpu) {
  SCOPED_TRACE(trace_);
  const auto [m, n, k] = GetParam();
  ASSERT_OK_AND_ASSIGN(GemmOperands operands, gemm_operands(m, n, k));
  const Mirrored& x = operands.x;
  const Mirrored& w = operands.w;
  ASSERT_OK_AND_ASSIGN(Mirrored y, mirror({m, n}, {}));
  ASSERT_STATUS_OK(poison(y));
  ASSERT_STATUS_OK(cpu_->matmul(x.cpu, w.cpu, y.cpu));
  ASSERT_STATUS_OK(cuda_->matmul(x.cuda, w.cuda, y.cuda));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(y));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(y));
  expect_close(got, want, operands.slack, 1e-2, matmul_name(GetParam()));
  EXPECT_LE(relative_l2_error(got, want), 1e-2) << matmul_name(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaMatmulTest,
                         ::testing::Values(MatmulShape{1, 4096, 4096}, MatmulShape{1, 512, 256},
                                           MatmulShape{2, 1000, 128}, MatmulShape{37, 200, 64},
                                           MatmulShape{7, 33, 40}, MatmulShape{16, 1024, 512},
                                           MatmulShape{128, 384, 1024}, MatmulShape{513, 257, 96},
                                           MatmulShape{300, 512, 4096}),
                         [](const ::testing::TestParamInfo<MatmulShape>& info) {
                           return matmul_name(info.param);
                         });

TEST_F(CudaBackendTest, MatmulAddMatchesCpu) {
  SCOPED_TRACE(trace_);
  for (const MatmulShape& shape :
       {MatmulShape{1, 4096, 4096}, MatmulShape{37, 200, 64}, MatmulShape{128, 4096, 1024}}) {
    const auto [m, n, k] = shape;
    ASSERT_OK_AND_ASSIGN(GemmOperands operands, gemm_operands(m, n, k));
    const Mirrored& x = operands.x;
    const Mirrored& w = operands.w;
    ASSERT_OK_AND_ASSIGN(Mirrored y, mirror({m, n}, random_values(numel_of({m, n}), -4, 4)));
    ASSERT_STATUS_OK(cpu_->matmul_add(x.cpu, w.cpu, y.cpu));
    ASSERT_STATUS_OK(cuda_->matmul_add(x.cuda, w.cuda, y.cuda));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(y));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(y));
    expect_close(got, want, operands.slack + 4e-2, 1e-2, "matmul_add " + matmul_name(shape));
  }
}

// The few-rows kernel (kernels/cuda/skinny_gemm.h) called directly, since the backend picks it
// or cuBLASLt by timing: random shapes (seeded) over every tile count (m 1-32), widths that are
// not multiples of its 16-row CTAs, k from one 32-wide slice to uneven shares per warp, beta 0
// and 1; and the Llama-3-8B decode shapes.
TEST_F(CudaBackendTest, SkinnyGemmMatchesCpu) {
  SCOPED_TRACE(trace_);
  std::vector<std::pair<MatmulShape, float>> cases = {
      {{1, 6144, 4096}, 0.0f},   {{1, 4096, 4096}, 1.0f},   {{8, 28672, 4096}, 0.0f},
      {{16, 4096, 14336}, 1.0f}, {{32, 4096, 14336}, 1.0f}, {{32, 1000, 4096}, 0.0f},
      {{3, 7, 32}, 1.0f}};
  for (int i = 0; i < 24; ++i) {
    const auto m = static_cast<std::int64_t>(1 + rng_() % cuda::kSkinnyGemmMaxRows);
    const auto n = static_cast<std::int64_t>(1 + rng_() % 700);
    const auto k = static_cast<std::int64_t>(32 * (1 + rng_() % 100));
    cases.push_back({{m, n, k}, static_cast<float>(rng_() % 2)});
  }
  for (const auto& [shape, beta] : cases) {
    const auto [m, n, k] = shape;
    const std::string what = "skinny " + matmul_name(shape) + (beta != 0.0f ? " + y" : "");
    ASSERT_OK_AND_ASSIGN(GemmOperands operands, gemm_operands(m, n, k));
    const Mirrored& x = operands.x;
    const Mirrored& w = operands.w;
    ASSERT_OK_AND_ASSIGN(Mirrored y, mirror({m, n}, random_values(numel_of({m, n}), -4, 4)));
    if (beta == 0.0f) {
      ASSERT_STATUS_OK(poison(y));
      ASSERT_STATUS_OK(cpu_->matmul(x.cpu, w.cpu, y.cpu));
    } else {
      ASSERT_STATUS_OK(cpu_->matmul_add(x.cpu, w.cpu, y.cpu));
    }
    const cuda::SkinnyGemmParams params{
        x.cuda.data,         w.cuda.data,         y.cuda.data, static_cast<int>(m),
        static_cast<int>(n), static_cast<int>(k), beta};
    ASSERT_TRUE(cuda::skinny_gemm_supports(params)) << what;
    ASSERT_STATUS_OK(cuda::launch_skinny_gemm(params, cuda_backend_stream(*cuda_)));
    ASSERT_STATUS_OK(cuda_->synchronize());
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(y));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(y));
    expect_close(got, want, operands.slack + (beta != 0.0f ? 4e-2 : 0.0), 1e-2, what);
  }
  // What it refuses: k not a multiple of 32, more rows than its tiles, a misaligned operand.
  ASSERT_OK_AND_ASSIGN(DeviceBuffer buffer, cuda_->allocate(1 << 16));
  auto* base = static_cast<char*>(buffer.data());
  EXPECT_FALSE(cuda::skinny_gemm_supports({base, base, base, 1, 16, 48, 0.0f}));
  EXPECT_FALSE(cuda::skinny_gemm_supports({base, base, base, 33, 16, 64, 0.0f}));
  EXPECT_FALSE(cuda::skinny_gemm_supports({base + 2, base, base, 1, 16, 64, 0.0f}));
  EXPECT_FALSE(cuda::launch_skinny_gemm({base, base, base, 0, 16, 64, 0.0f}, nullptr).ok());
}

// engine.small_batch_kernels off (cuBLASLt only) and on (timed choice) give the same GEMM within
// the matmul tolerance, shape by shape.
TEST_F(CudaBackendTest, SmallBatchKernelsSwitchKeepsResults) {
  SCOPED_TRACE(trace_);
  for (const MatmulShape& shape : {MatmulShape{1, 4096, 4096}, MatmulShape{12, 1536, 1024}}) {
    const auto [m, n, k] = shape;
    ASSERT_OK_AND_ASSIGN(GemmOperands operands, gemm_operands(m, n, k));
    const Mirrored& x = operands.x;
    const Mirrored& w = operands.w;
    ASSERT_OK_AND_ASSIGN(Mirrored y, mirror({m, n}, {}));
    ASSERT_STATUS_OK(cpu_->matmul(x.cpu, w.cpu, y.cpu));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(y));
    for (const bool allowed : {false, true, false}) {
      const std::string what =
          matmul_name(shape) + (allowed ? " small-batch kernels" : " cuBLASLt only");
      cuda_->set_small_batch_kernels(allowed);
      ASSERT_STATUS_OK(poison(y));
      ASSERT_STATUS_OK(cuda_->matmul(x.cuda, w.cuda, y.cuda));
      ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(y));
      expect_close(got, want, operands.slack, 1e-2, what);
    }
  }
  cuda_->set_small_batch_kernels(true);
}

TEST_F(CudaBackendTest, AddMatchesCpuWithAndWithoutAliasing) {
  SCOPED_TRACE(trace_);
  const std::vector<std::vector<std::int64_t>> shapes = {{37, 4096}, {3, 8, 64}, {1001}};
  enum class Alias { kNone, kA, kB };
  for (const auto& shape : shapes) {
    const std::vector<float> a_values = random_values(numel_of(shape), -4, 4);
    const std::vector<float> b_values = random_values(numel_of(shape), -4, 4);
    for (Alias alias : {Alias::kNone, Alias::kA, Alias::kB}) {
      const std::string what = "add of " + std::to_string(numel_of(shape)) + " elements" +
                               (alias == Alias::kA   ? ", out = a"
                                : alias == Alias::kB ? ", out = b"
                                                     : "");
      ASSERT_OK_AND_ASSIGN(Mirrored a, mirror(shape, a_values));
      ASSERT_OK_AND_ASSIGN(Mirrored b, mirror(shape, b_values));
      ASSERT_OK_AND_ASSIGN(Mirrored separate, mirror(shape, {}));
      const Mirrored& out = alias == Alias::kA ? a : alias == Alias::kB ? b : separate;
      if (alias == Alias::kNone) ASSERT_STATUS_OK(poison(out));
      ASSERT_STATUS_OK(cpu_->add(a.cpu, b.cpu, out.cpu));
      ASSERT_STATUS_OK(cuda_->add(a.cuda, b.cuda, out.cuda));
      ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(out));
      ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(out));
      expect_close(got, want, 2e-2, 2e-2, what);
    }
  }
}

TEST_F(CudaBackendTest, SiluMulMatchesCpu) {
  SCOPED_TRACE(trace_);
  for (const auto& [rows, cols] : std::vector<Dims>{{1, 1024}, {45, 1000}, {37, 2752}, {3, 7}}) {
    const std::string what =
        "silu_mul [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
    ASSERT_OK_AND_ASSIGN(
        Mirrored gate_up,
        mirror({rows, 2 * cols}, random_values(numel_of({rows, 2 * cols}), -8, 8)));
    ASSERT_OK_AND_ASSIGN(Mirrored out, mirror({rows, cols}, {}));
    ASSERT_STATUS_OK(poison(out));
    ASSERT_STATUS_OK(cpu_->silu_mul(gate_up.cpu, out.cpu));
    ASSERT_STATUS_OK(cuda_->silu_mul(gate_up.cuda, out.cuda));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(out));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(out));
    expect_close(got, want, 2e-2, 2e-2, what);
  }
}

struct RopeCase {
  std::string name;
  std::int64_t head_dim, num_q_heads, num_kv_heads;
  float theta;
};

void PrintTo(const RopeCase& c, std::ostream* os) { *os << c.name; }

class CudaRopeTest : public CudaBackendTest, public ::testing::WithParamInterface<RopeCase> {};

TEST_P(CudaRopeTest, MatchesCpuAtPositionsUpTo16K) {
  SCOPED_TRACE(trace_);
  const RopeCase& c = GetParam();
  constexpr std::int64_t kTokens = 50;
  std::vector<std::int32_t> positions(kTokens);
  for (auto& p : positions) p = static_cast<std::int32_t>(rng_() % 16384);
  positions[0] = 0;
  positions[1] = 1;
  positions[2] = 16383;
  positions[3] = 16384;
  const std::vector<std::int64_t> q_shape = {kTokens, c.num_q_heads, c.head_dim};
  const std::vector<std::int64_t> k_shape = {kTokens, c.num_kv_heads, c.head_dim};
  ASSERT_OK_AND_ASSIGN(Mirrored q, mirror(q_shape, random_values(numel_of(q_shape))));
  ASSERT_OK_AND_ASSIGN(Mirrored k, mirror(k_shape, random_values(numel_of(k_shape))));
  ASSERT_OK_AND_ASSIGN(Mirrored pos, mirror_indices(positions));
  ASSERT_STATUS_OK(cpu_->rope(q.cpu, k.cpu, pos.cpu, c.theta));
  ASSERT_STATUS_OK(cuda_->rope(q.cuda, k.cuda, pos.cuda, c.theta));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want_q, read_cpu(q));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got_q, read_cuda(q));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want_k, read_cpu(k));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got_k, read_cuda(k));
  expect_close(got_q, want_q, 2e-2, 2e-2, c.name + " q");
  expect_close(got_k, want_k, 2e-2, 2e-2, c.name + " k");
}

// The fused q/k/v step: q rotated out of the fused rows, k rotated and v copied into the cache
// slots; a padding row (slot -1) writes no K/V.
TEST_P(CudaRopeTest, RopeAppendMatchesCpu) {
  SCOPED_TRACE(trace_);
  const RopeCase& c = GetParam();
  constexpr std::int64_t kTokens = 40;
  constexpr std::int32_t kPages = 8;
  std::vector<std::int32_t> positions(kTokens), slots(kTokens);
  std::vector<std::int32_t> free_slots(kPages * kPageSize);
  std::iota(free_slots.begin(), free_slots.end(), 0);
  std::shuffle(free_slots.begin(), free_slots.end(), rng_);
  for (std::int64_t t = 0; t < kTokens; ++t) {
    positions[t] = static_cast<std::int32_t>(rng_() % 16384);
    slots[t] = t % 7 == 3 ? -1 : free_slots[static_cast<std::size_t>(t)];
  }
  const std::int64_t width = (c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim;
  ASSERT_OK_AND_ASSIGN(Mirrored qkv, mirror({kTokens, width}, random_values(kTokens * width)));
  ASSERT_OK_AND_ASSIGN(Mirrored q, mirror({kTokens, c.num_q_heads, c.head_dim}, {}));
  ASSERT_OK_AND_ASSIGN(Mirrored cache,
                       mirror({kPages, 2, kPageSize, c.num_kv_heads, c.head_dim}, {}));
  ASSERT_STATUS_OK(poison(q));
  ASSERT_STATUS_OK(poison(cache));
  ASSERT_OK_AND_ASSIGN(Mirrored pos, mirror_indices(positions));
  ASSERT_OK_AND_ASSIGN(Mirrored slot, mirror_indices(slots));
  KvCacheView cpu_cache{cache.cpu.data,
                        DType::kF32,
                        kPages,
                        kPageSize,
                        static_cast<std::int32_t>(c.num_kv_heads),
                        static_cast<std::int32_t>(c.head_dim)};
  KvCacheView cuda_cache = cpu_cache;
  cuda_cache.data = cache.cuda.data;
  cuda_cache.dtype = DType::kBF16;
  ASSERT_STATUS_OK(cpu_->rope_append(qkv.cpu, pos.cpu, slot.cpu, c.theta, cpu_cache, q.cpu));
  ASSERT_STATUS_OK(cuda_->rope_append(qkv.cuda, pos.cuda, slot.cuda, c.theta, cuda_cache, q.cuda));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want_q, read_cpu(q));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got_q, read_cuda(q));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want_cache, read_cpu(cache));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got_cache, read_cuda(cache));
  expect_close(got_q, want_q, 2e-2, 2e-2, c.name + " q");
  // NaN poison must stay exactly where the reference left it (padding rows, unused slots); the
  // written elements must match.
  std::vector<float> got_written, want_written;
  for (std::size_t i = 0; i < want_cache.size(); ++i) {
    ASSERT_EQ(std::isnan(got_cache[i]), std::isnan(want_cache[i])) << c.name << " cache " << i;
    if (std::isnan(want_cache[i])) continue;
    got_written.push_back(got_cache[i]);
    want_written.push_back(want_cache[i]);
  }
  ASSERT_FALSE(want_written.empty());
  expect_close(got_written, want_written, 2e-2, 2e-2, c.name + " cache");

  // Scaled RoPE: the same step with an explicit inverse-frequency table (the low frequencies
  // divided by 8, as llama3 and linear scaling do to part of it), fp32 on both backends.
  std::vector<float> inv_freq(static_cast<std::size_t>(c.head_dim / 2));
  for (std::size_t i = 0; i < inv_freq.size(); ++i) {
    const double base = std::pow(static_cast<double>(c.theta),
                                 -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim));
    inv_freq[i] = static_cast<float>(i >= inv_freq.size() / 2 ? base / 8.0 : base);
  }
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  ASSERT_OK_AND_ASSIGN(DeviceBuffer cuda_freq, cuda_->allocate(inv_freq.size() * 4));
  ASSERT_STATUS_OK(cuda_->copy_to_device(cuda_freq.data(), inv_freq.data(), inv_freq.size() * 4));
  ASSERT_STATUS_OK(poison(q));
  ASSERT_STATUS_OK(cpu_->rope_append_with_frequencies(
      qkv.cpu, pos.cpu, slot.cpu, make_view(inv_freq.data(), DType::kF32, {half}), cpu_cache,
      q.cpu));
  ASSERT_STATUS_OK(cuda_->rope_append_with_frequencies(
      qkv.cuda, pos.cuda, slot.cuda, cuda_freq.view(DType::kF32, {half}), cuda_cache, q.cuda));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want_scaled, read_cpu(q));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got_scaled, read_cuda(q));
  expect_close(got_scaled, want_scaled, 2e-2, 2e-2, c.name + " q, scaled frequencies");
  EXPECT_NE(want_scaled, want_q) << "the scaled table must change the rotation";
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRopeTest,
                         ::testing::Values(RopeCase{"d64_hq8_hkv2_theta1e4", 64, 8, 2, 1e4f},
                                           RopeCase{"d128_hq32_hkv8_theta5e5", 128, 32, 8, 5e5f},
                                           RopeCase{"d128_hq8_hkv8_theta1e4", 128, 8, 8, 1e4f},
                                           RopeCase{"d64_hq16_hkv1_theta1e6", 64, 16, 1, 1e6f}),
                         [](const ::testing::TestParamInfo<RopeCase>& info) {
                           return info.param.name;
                         });

TEST_F(CudaBackendTest, KvAppendWritesExactlyItsSlots) {
  SCOPED_TRACE(trace_);
  struct CacheShape {
    std::int32_t num_pages, num_kv_heads, head_dim;
  };
  for (const CacheShape& shape :
       {CacheShape{6, 2, 128}, CacheShape{4, 8, 64}, CacheShape{3, 1, 64}}) {
    const std::string what = "kv_append pages " + std::to_string(shape.num_pages) + " Hkv " +
                             std::to_string(shape.num_kv_heads) + " D " +
                             std::to_string(shape.head_dim);
    const std::int64_t num_slots = std::int64_t{shape.num_pages} * kPageSize;
    const std::vector<std::int64_t> cache_shape = {shape.num_pages, 2, kPageSize,
                                                   shape.num_kv_heads, shape.head_dim};
    ASSERT_OK_AND_ASSIGN(Mirrored cache, mirror(cache_shape, {}));
    ASSERT_STATUS_OK(poison(cache));
    KvCacheView cpu_cache{cache.cpu.data, DType::kF32,        shape.num_pages,
                          kPageSize,      shape.num_kv_heads, shape.head_dim};
    KvCacheView cuda_cache = cpu_cache;
    cuda_cache.data = cache.cuda.data;
    cuda_cache.dtype = DType::kBF16;

    std::vector<std::int32_t> all_slots(static_cast<std::size_t>(num_slots));
    std::iota(all_slots.begin(), all_slots.end(), 0);
    std::shuffle(all_slots.begin(), all_slots.end(), rng_);
    // Two appends into distinct random slots; about a third of the slots stay untouched.
    const std::int64_t first = num_slots / 3, second = num_slots / 3;
    for (const auto& [begin, count] : std::vector<Dims>{{0, first}, {first, second}}) {
      const std::vector<std::int32_t> slots(all_slots.begin() + begin,
                                            all_slots.begin() + begin + count);
      const std::vector<std::int64_t> row_shape = {count, shape.num_kv_heads, shape.head_dim};
      ASSERT_OK_AND_ASSIGN(Mirrored k, mirror(row_shape, random_values(numel_of(row_shape))));
      ASSERT_OK_AND_ASSIGN(Mirrored v, mirror(row_shape, random_values(numel_of(row_shape))));
      ASSERT_OK_AND_ASSIGN(Mirrored d_slots, mirror_indices(slots));
      ASSERT_STATUS_OK(cpu_->kv_append(k.cpu, v.cpu, d_slots.cpu, cpu_cache));
      ASSERT_STATUS_OK(cuda_->kv_append(k.cuda, v.cuda, d_slots.cuda, cuda_cache));
    }
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(cache));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(cache));
    const auto poisoned = static_cast<std::size_t>(
        std::count_if(want.begin(), want.end(), [](float v) { return std::isnan(v); }));
    ASSERT_EQ(poisoned, static_cast<std::size_t>(num_slots - first - second) * 2 *
                            shape.num_kv_heads * shape.head_dim)
        << what << ": the reference left the wrong number of slots untouched";
    expect_bitwise_equal(got, want, what);
  }
}

// sample(): the CUDA kernel against the CPU sampler (kernels/sampler.h) on identical logits.
class CudaSampleTest : public CudaBackendTest {
 protected:
  struct Sampled {
    std::vector<std::int32_t> cpu, cuda;
  };
  Result<Sampled> sample_both(const Mirrored& logits, const std::vector<SamplingRow>& rows) {
    const auto n = static_cast<std::int64_t>(rows.size());
    const std::size_t row_bytes = rows.size() * sizeof(SamplingRow);
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer cpu_rows, cpu_->allocate(row_bytes));
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer cuda_rows, cuda_->allocate(row_bytes));
    PODSERVE_RETURN_IF_ERROR(cpu_->copy_to_device(cpu_rows.data(), rows.data(), row_bytes));
    PODSERVE_RETURN_IF_ERROR(cuda_->copy_to_device(cuda_rows.data(), rows.data(), row_bytes));
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer cpu_out, cpu_->allocate(rows.size() * 4));
    PODSERVE_ASSIGN_OR_RETURN(DeviceBuffer cuda_out, cuda_->allocate(rows.size() * 4));
    PODSERVE_RETURN_IF_ERROR(cpu_->sample(logits.cpu, cpu_rows.view(DType::kI32, {n, 6}),
                                          cpu_out.view(DType::kI32, {n})));
    PODSERVE_RETURN_IF_ERROR(cuda_->sample(logits.cuda, cuda_rows.view(DType::kI32, {n, 6}),
                                           cuda_out.view(DType::kI32, {n})));
    Sampled out{std::vector<std::int32_t>(rows.size()), std::vector<std::int32_t>(rows.size())};
    PODSERVE_RETURN_IF_ERROR(cpu_->copy_to_host(out.cpu.data(), cpu_out.data(), rows.size() * 4));
    PODSERVE_RETURN_IF_ERROR(
        cuda_->copy_to_host(out.cuda.data(), cuda_out.data(), rows.size() * 4));
    return out;
  }
};

TEST_F(CudaSampleTest, GreedyMatchesCpuExactlyWithTiesAndNaN) {
  SCOPED_TRACE(trace_);
  constexpr std::int64_t kRows = 24;
  for (const std::int64_t vocab : {std::int64_t{128256}, std::int64_t{128257}, std::int64_t{32000},
                                   std::int64_t{1000}, std::int64_t{7}}) {
    // bf16 values in [-8, 8]: a large vocabulary has many ties at its maximum.
    std::vector<float> values = random_values(kRows * vocab, -8, 8);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (std::int64_t r = 0; r < kRows; r += 3) values[r * vocab + rng_() % vocab] = nan;
    for (std::int64_t i = 0; i < vocab; ++i) values[(kRows - 1) * vocab + i] = nan;  // no token
    values[(kRows - 2) * vocab + vocab - 1] = 100.0f;  // the last id wins alone
    ASSERT_OK_AND_ASSIGN(Mirrored logits, mirror({kRows, vocab}, values));
    std::vector<SamplingRow> rows(kRows);  // temperature 0: greedy
    ASSERT_OK_AND_ASSIGN(const Sampled got, sample_both(logits, rows));
    EXPECT_EQ(got.cuda, got.cpu) << "vocab " << vocab;
    EXPECT_EQ(got.cuda[kRows - 1], -1);
    EXPECT_EQ(got.cuda[kRows - 2], vocab - 1);
  }
}

// Same contract, same logits: the draws agree except where the two libm's last bits decide a
// near-tie (rare: both compute exp/log in fp32 to within an ulp or two).
// Shapes: many rows of a 32 K vocabulary (one CTA per row), and few rows of a 128 K one whose
// rows are not 16-byte aligned (several CTAs per row, an unaligned head and a tail).
TEST_F(CudaSampleTest, TemperatureAndTopPAgreeWithCpu) {
  SCOPED_TRACE(trace_);
  for (const auto& [num_rows, vocab] : std::vector<Dims>{{96, 32000}, {6, 128257}}) {
    ASSERT_OK_AND_ASSIGN(Mirrored logits,
                         mirror({num_rows, vocab}, random_values(num_rows * vocab, -6, 6)));
    int agree = 0, total = 0;
    for (const float temperature : {0.5f, 1.0f, 1.7f}) {
      for (const float top_p : {1.0f, 0.95f, 0.6f, 0.05f}) {
        std::vector<SamplingRow> rows(static_cast<std::size_t>(num_rows));
        for (SamplingRow& row : rows) {
          row.temperature = temperature;
          row.top_p = top_p;
          row.seed = rng_();
          row.generated_index = static_cast<std::int32_t>(rng_() % 4096);
        }
        ASSERT_OK_AND_ASSIGN(const Sampled got, sample_both(logits, rows));
        for (std::int64_t r = 0; r < num_rows; ++r) {
          ASSERT_GE(got.cuda[r], 0);
          ASSERT_LT(got.cuda[r], vocab);
          agree += got.cuda[r] == got.cpu[r];
          ++total;
        }
      }
    }
    EXPECT_GE(agree, total * 95 / 100)
        << agree << " of " << total << " draws agree (vocab " << vocab << ")";
  }
}

// The GPU draws follow softmax(logits / T) over the nucleus: Pearson's chi-square over 40,000
// rows that differ only in generated_index (4 or 1 degrees of freedom; bound past the 1e-6 tail).
TEST_F(CudaSampleTest, DrawsFollowTheNucleusDistribution) {
  SCOPED_TRACE(trace_);
  constexpr std::int64_t kDraws = 40000;
  struct Case {
    std::vector<double> probs;
    float temperature, top_p;
    std::size_t kept;  // tokens in the nucleus (ids 0 .. kept-1, probabilities falling)
  };
  for (const Case& c : {Case{{0.5, 0.2, 0.15, 0.1, 0.05}, 1.0f, 1.0f, 5},
                        Case{{0.5, 0.2, 0.15, 0.1, 0.05}, 0.7f, 1.0f, 5},
                        Case{{0.4, 0.3, 0.2, 0.1}, 1.0f, 0.6f, 2}}) {
    const auto vocab = static_cast<std::int64_t>(c.probs.size());
    std::vector<float> row;
    for (const double p : c.probs) row.push_back(round_to_bf16(static_cast<float>(std::log(p))));
    std::vector<double> expected(c.kept);
    double total = 0.0;
    for (std::size_t i = 0; i < c.kept; ++i)
      total += expected[i] = std::exp(row[i] / c.temperature);
    for (double& e : expected) e /= total;
    std::vector<float> values;
    for (std::int64_t r = 0; r < kDraws; ++r) values.insert(values.end(), row.begin(), row.end());
    ASSERT_OK_AND_ASSIGN(Mirrored logits, mirror({kDraws, vocab}, values));
    std::vector<SamplingRow> rows(kDraws);
    for (std::int64_t r = 0; r < kDraws; ++r) {
      rows[r].temperature = c.temperature;
      rows[r].top_p = c.top_p;
      rows[r].seed = 77;
      rows[r].generated_index = static_cast<std::int32_t>(r);
    }
    ASSERT_OK_AND_ASSIGN(const Sampled got, sample_both(logits, rows));
    std::vector<int> counts(c.kept, 0);
    for (const std::int32_t token : got.cuda) {
      ASSERT_GE(token, 0);
      ASSERT_LT(token, static_cast<std::int32_t>(c.kept)) << "a token outside the nucleus";
      ++counts[static_cast<std::size_t>(token)];
    }
    double chi_square = 0.0;
    for (std::size_t i = 0; i < c.kept; ++i) {
      const double e = expected[i] * kDraws;
      chi_square += (counts[i] - e) * (counts[i] - e) / e;
    }
    EXPECT_LT(chi_square, 40.0) << "T " << c.temperature << " top_p " << c.top_p;
  }
}

TEST_F(CudaBackendTest, GatherRowsCopiesRows) {
  SCOPED_TRACE(trace_);
  ASSERT_OK_AND_ASSIGN(Mirrored x, mirror({50, 300}, random_values(50 * 300, -3, 3)));
  std::vector<std::int32_t> reversed(50);
  std::iota(reversed.rbegin(), reversed.rend(), 0);
  for (const std::vector<std::int32_t>& rows :
       {std::vector<std::int32_t>{49, 0, 7, 7, 23, 1}, std::vector<std::int32_t>{12}, reversed}) {
    const std::string what = "gather_rows of " + std::to_string(rows.size()) + " rows";
    ASSERT_OK_AND_ASSIGN(Mirrored out, mirror({static_cast<std::int64_t>(rows.size()), 300}, {}));
    ASSERT_STATUS_OK(poison(out));
    ASSERT_STATUS_OK(cpu_->gather_rows(x.cpu, rows, out.cpu));
    ASSERT_STATUS_OK(cuda_->gather_rows(x.cuda, rows, out.cuda));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, read_cpu(out));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got, read_cuda(out));
    expect_bitwise_equal(got, want, what);
  }
}

struct AttentionCase {
  std::string name;
  std::int32_t head_dim, num_q_heads, num_kv_heads;
  std::vector<SequenceShape> sequences;  // batch order: decodes (C == 1) and prefill chunks
};

void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

class CudaAttentionTest : public CudaBackendTest,
                          public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(CudaAttentionTest, EveryKindMatchesCpu) {
  SCOPED_TRACE(trace_);
  const AttentionCase& c = GetParam();
  const AttentionBatch batch =
      make_attention_batch(c.head_dim, c.num_q_heads, c.num_kv_heads, c.sequences, rng_);
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want, cpu_attention(*cpu_, batch));
  ASSERT_OK_AND_ASSIGN(const CudaAttentionBuffers buffers,
                       allocate_attention_buffers(*cuda_, batch.q.size(), batch.cache.size()));
  std::vector<std::vector<float>> outputs;
  for (AttentionKind kind : kCudaKinds) {
    ASSERT_OK_AND_ASSIGN(std::vector<float> got, cuda_attention(*cuda_, batch, kind, buffers));
    expect_attention_close(got, want, c.name + " " + std::string(to_string(kind)));
    outputs.push_back(std::move(got));
  }
  for (std::size_t i = 1; i < outputs.size(); ++i) {
    expect_close(
        outputs[i], outputs[0], 1e-2, 1e-2,
        std::string(to_string(kCudaKinds[i])) + " vs " + std::string(to_string(kCudaKinds[0])));
  }
}

std::vector<AttentionCase> attention_cases() {
  using S = SequenceShape;
  return {
      {"decode_only_g4_d128",
       128,
       16,
       4,
       {S{1, 0}, S{1, 15}, S{1, 16}, S{1, 99}, S{1, 1000}, S{1, 2047}}},
      {"decode_only_g1_d64", 64, 8, 8, {S{1, 4}, S{1, 31}, S{1, 511}}},
      {"prefill_only_g1_d64", 64, 8, 8, {S{37, 0}, S{200, 0}, S{16, 0}, S{2, 0}}},
      {"prefill_only_g8_d128", 128, 32, 4, {S{129, 0}, S{64, 0}}},
      {"mixed_interleaved_g4_d128",
       128,
       16,
       4,
       {S{1, 40}, S{100, 0}, S{1, 999}, S{33, 300}, S{1, 16}, S{64, 17}, S{1, 0}}},
      {"mixed_interleaved_g8_d64", 64, 32, 4, {S{50, 0}, S{1, 77}, S{1, 3}, S{17, 200}, S{1, 500}}},
      {"chunk_after_prefix_g4_d64", 64, 16, 4, {S{128, 512}, S{77, 1000}, S{1, 1500}}},
      {"chunk_after_long_prefix_g8_d128", 128, 16, 2, {S{128, 3000}, S{1, 4000}, S{1, 4095}}},
      {"contexts_not_multiple_of_16_g4_d128",
       128,
       8,
       2,
       {S{5, 3}, S{1, 30}, S{19, 13}, S{1, 47}, S{3, 0}, S{1, 1}}},
      {"group16_d64", 64, 16, 1, {S{1, 100}, S{40, 60}}},
      {"group16_d128", 128, 32, 2, {S{30, 10}, S{1, 300}}},
      {"single_decode_context1_g4_d64", 64, 8, 2, {S{1, 0}}},
      {"large_mixed_g4_d128",
       128,
       16,
       4,
       {S{1, 2999}, S{384, 1500}, S{1, 1}, S{1, 700}, S{100, 0}, S{1, 2048}, S{1, 64}, S{1, 1234},
        S{1, 17}, S{1, 333}}},
  };
}

INSTANTIATE_TEST_SUITE_P(Batches, CudaAttentionTest, ::testing::ValuesIn(attention_cases()),
                         [](const ::testing::TestParamInfo<AttentionCase>& info) {
                           return info.param.name;
                         });

// A cached plan must never leak into a later call. Per kind: batch A; A again with new q and
// cache values; A with its page tables rewritten in place (same host addresses, other pages); A's
// sequences in reverse order; a different batch B; A once more. Every call against the CPU; the
// device buffers are reused (same pointers), as a model reuses them layer after layer.
TEST_F(CudaBackendTest, AttentionPlanCacheNeverReturnsStaleResults) {
  SCOPED_TRACE(trace_);
  using S = SequenceShape;
  const std::vector<S> batch_a = {S{1, 50}, S{40, 0}, S{1, 300}, S{20, 100}};
  const std::vector<S> reversed(batch_a.rbegin(), batch_a.rend());
  const std::vector<S> batch_b = {S{1, 10}, S{1, 700}, S{64, 33}};
  const std::size_t max_q = 256 * 16 * 128, max_cache = 128 * 2 * 16 * 4 * 128;
  ASSERT_OK_AND_ASSIGN(const CudaAttentionBuffers buffers,
                       allocate_attention_buffers(*cuda_, max_q, max_cache));
  const auto check = [&](const AttentionBatch& batch, AttentionKind kind, const std::string& step) {
    const std::string what = std::string(to_string(kind)) + ", " + step;
    ASSERT_LE(batch.q.size(), max_q);
    ASSERT_LE(batch.cache.size(), max_cache);
    ASSERT_OK_AND_ASSIGN(const std::vector<float> want, cpu_attention(*cpu_, batch));
    ASSERT_OK_AND_ASSIGN(const std::vector<float> got,
                         cuda_attention(*cuda_, batch, kind, buffers));
    expect_attention_close(got, want, what);
  };
  for (AttentionKind kind : kCudaKinds) {
    AttentionBatch batch = make_attention_batch(128, 16, 4, batch_a, rng_);
    check(batch, kind, "batch A");
    redraw_values(batch, rng_);
    check(batch, kind, "batch A again, new values");
    reassign_pages_in_place(batch, rng_);
    check(batch, kind, "batch A, page tables rewritten in place");
    check(make_attention_batch(128, 16, 4, reversed, rng_), kind, "batch A reversed");
    check(make_attention_batch(128, 16, 4, batch_b, rng_), kind, "batch B");
    check(make_attention_batch(128, 16, 4, batch_a, rng_), kind, "batch A once more");
  }
}

TEST_F(CudaBackendTest, RejectsUnsupportedInputsWithAStatus) {
  SCOPED_TRACE(trace_);
  using S = SequenceShape;
  const AttentionBatch batch = make_attention_batch(64, 8, 2, {S{1, 5}, S{4, 0}}, rng_);
  ASSERT_OK_AND_ASSIGN(const CudaAttentionBuffers buffers,
                       allocate_attention_buffers(*cuda_, 1 << 16, 1 << 16));
  const std::vector<AttentionSequence> seqs = batch.sequences();
  const TensorView q = view_of(buffers.q.data(), DType::kBF16, batch.q_shape());
  const TensorView out = view_of(buffers.out.data(), DType::kBF16, batch.q_shape());
  const KvCacheView cache = batch.cache_view(buffers.cache.data(), DType::kBF16);
  const float scale = 0.125f;

  const Status cpu_kind = cuda_->attention(q, cache, seqs, scale, AttentionKind::kCpu, out);
  EXPECT_EQ(cpu_kind.code(), StatusCode::kInvalidArgument) << cpu_kind.to_string();
  TensorView q_f32 = q;
  q_f32.dtype = DType::kF32;
  EXPECT_FALSE(cuda_->attention(q_f32, cache, seqs, scale, AttentionKind::kPod, out).ok())
      << "fp32 q";
  KvCacheView cache_f32 = cache;
  cache_f32.dtype = DType::kF32;
  EXPECT_FALSE(cuda_->attention(q, cache_f32, seqs, scale, AttentionKind::kPod, out).ok())
      << "fp32 cache";
  const std::int64_t tokens = batch.total_tokens;
  KvCacheView cache_d32 = cache;
  cache_d32.head_dim = 32;
  for (AttentionKind kind : kCudaKinds) {
    EXPECT_FALSE(cuda_
                     ->attention(view_of(q.data, DType::kBF16, {tokens, 8, 32}), cache_d32, seqs,
                                 scale, kind, view_of(out.data, DType::kBF16, {tokens, 8, 32}))
                     .ok())
        << "head_dim 32, " << std::string(to_string(kind));
  }
  KvCacheView cache_one_head = cache;
  cache_one_head.num_kv_heads = 1;
  EXPECT_FALSE(cuda_
                   ->attention(view_of(q.data, DType::kBF16, {tokens, 32, 64}), cache_one_head,
                               seqs, scale, AttentionKind::kPod,
                               view_of(out.data, DType::kBF16, {tokens, 32, 64}))
                   .ok())
      << "group 32";
  KvCacheView cache_page8 = cache;
  cache_page8.page_size = 8;
  cache_page8.num_pages = cache.num_pages * 2;
  EXPECT_FALSE(cuda_->attention(q, cache_page8, seqs, scale, AttentionKind::kPod, out).ok())
      << "page size 8";

  // Other ops: a wrong dtype or shape is rejected too.
  ASSERT_OK_AND_ASSIGN(DeviceBuffer scratch, cuda_->allocate(1 << 16));
  const TensorView x = view_of(scratch.data(), DType::kBF16, {4, 64});
  const TensorView w = view_of(static_cast<char*>(scratch.data()) + 4096, DType::kBF16, {32, 64});
  const TensorView y = view_of(static_cast<char*>(scratch.data()) + 16384, DType::kBF16, {4, 32});
  TensorView x_f32 = x;
  x_f32.dtype = DType::kF32;
  EXPECT_FALSE(cuda_->matmul(x_f32, w, y).ok()) << "fp32 x";
  EXPECT_FALSE(cuda_->matmul(x, view_of(w.data, DType::kBF16, {32, 48}), y).ok()) << "K mismatch";
  EXPECT_FALSE(cuda_->embedding(w, view_of(x.data, DType::kBF16, {4}), x).ok()) << "bf16 ids";
  EXPECT_FALSE(cuda_
                   ->rms_norm(x, view_of(w.data, DType::kBF16, {64}), 1e-5f,
                              view_of(y.data, DType::kBF16, {4, 32}))
                   .ok())
      << "rms_norm shape mismatch";
  EXPECT_FALSE(cuda_->add(x, view_of(w.data, DType::kBF16, {4, 63}), x).ok()) << "add shapes";

  // Nothing was launched: the backend still computes a valid call correctly.
  ASSERT_OK_AND_ASSIGN(const std::vector<float> want, cpu_attention(*cpu_, batch));
  ASSERT_OK_AND_ASSIGN(const std::vector<float> got,
                       cuda_attention(*cuda_, batch, AttentionKind::kPod, buffers));
  expect_attention_close(got, want, "valid call after rejections");
}

}  // namespace
}  // namespace podserve
