// CPU backend ops other than attention, each against a naive loop (fp64 where it rounds),
// plus memory ops, shape/dtype validation and the backend factory. Outputs are NaN-poisoned
// before each op. Tolerances: matmul |y - ref| <= 2e-5 * sum_k |x w| + 1e-6 (fp32 accumulation
// over K); rms_norm, silu_mul, rope 1e-5 * (1 + |ref|); embedding, add, kv_append, gather_rows
// and copies exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/backend_factory.h"
#include "kernels/cpu_backend.h"
#include "kernels/sampler.h"
#include "test_random.h"

namespace podserve {
namespace {

constexpr double kElementwiseTolerance = 1e-5;

class CpuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = testing::test_seed();
    rng_.seed(seed_);
  }
  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
};

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  double norm_sq = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << "element " << i;
    ASSERT_LE(std::abs(got[i] - want[i]), kElementwiseTolerance * (1.0 + std::abs(want[i])))
        << "element " << i << " got " << got[i] << " want " << want[i];
    norm_sq += static_cast<double>(got[i]) * got[i];
  }
  EXPECT_GT(norm_sq, 0.0) << "output is all zeros";
}

struct MatmulShape {
  std::int64_t m, k, n;
};

void PrintTo(const MatmulShape& s, std::ostream* os) {
  *os << "M=" << s.m << " K=" << s.k << " N=" << s.n;
}

class CpuMatmulTest : public CpuOpsTest, public ::testing::WithParamInterface<MatmulShape> {};

TEST_P(CpuMatmulTest, MatchesNaiveLoop) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const auto [m, k, n] = GetParam();
  const std::vector<float> x = testing::uniform_values(rng_, m * k);
  const std::vector<float> w = testing::uniform_values(rng_, n * k);
  std::vector<float> y = testing::nan_filled(m * n);
  const Status status =
      backend_->matmul(make_view(const_cast<float*>(x.data()), DType::kF32, {m, k}),
                       make_view(const_cast<float*>(w.data()), DType::kF32, {n, k}),
                       make_view(y.data(), DType::kF32, {m, n}));
  ASSERT_TRUE(status.ok()) << status.to_string();
  double norm_sq = 0.0;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double ref = 0.0;
      double abs_sum = 0.0;
      for (std::int64_t t = 0; t < k; ++t) {
        const double product = static_cast<double>(x[i * k + t]) * w[j * k + t];
        ref += product;
        abs_sum += std::abs(product);
      }
      const float got = y[i * n + j];
      ASSERT_FALSE(std::isnan(got)) << "y[" << i << ", " << j << "]";
      ASSERT_LE(std::abs(got - ref), 2e-5 * abs_sum + 1e-6)
          << "y[" << i << ", " << j << "] got " << got << " want " << ref;
      norm_sq += static_cast<double>(got) * got;
    }
  }
  EXPECT_GT(norm_sq, 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CpuMatmulTest,
    ::testing::Values(MatmulShape{1, 1, 1}, MatmulShape{3, 5, 7}, MatmulShape{1, 256, 688},
                      MatmulShape{17, 33, 9}, MatmulShape{64, 256, 688},
                      MatmulShape{5, 1100, 70},     // K spans three depth blocks
                      MatmulShape{130, 64, 1030}),  // N spans several cache panels
    [](const ::testing::TestParamInfo<MatmulShape>& info) {
      return "M" + std::to_string(info.param.m) + "_K" + std::to_string(info.param.k) + "_N" +
             std::to_string(info.param.n);
    });

TEST_F(CpuOpsTest, EmbeddingCopiesRows) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t vocab = 50, hidden = 24;
  std::vector<float> table = testing::uniform_values(rng_, vocab * hidden);
  std::vector<std::int32_t> ids = {3, 0, 49, 3, 17};
  const auto tokens = static_cast<std::int64_t>(ids.size());
  std::vector<float> out = testing::nan_filled(tokens * hidden);
  const Status status = backend_->embedding(make_view(table.data(), DType::kF32, {vocab, hidden}),
                                            make_view(ids.data(), DType::kI32, {tokens}),
                                            make_view(out.data(), DType::kF32, {tokens, hidden}));
  ASSERT_TRUE(status.ok()) << status.to_string();
  for (std::int64_t t = 0; t < tokens; ++t) {
    EXPECT_EQ(0, std::memcmp(out.data() + t * hidden, table.data() + ids[t] * hidden,
                             hidden * sizeof(float)))
        << "row " << t;
  }
}

TEST_F(CpuOpsTest, EmbeddingRejectsOutOfVocabularyIds) {
  std::vector<float> table(10 * 4, 1.0f);
  std::vector<std::int32_t> ids = {2, 10};
  std::vector<float> out = testing::nan_filled(2 * 4);
  const Status status = backend_->embedding(make_view(table.data(), DType::kF32, {10, 4}),
                                            make_view(ids.data(), DType::kI32, {2}),
                                            make_view(out.data(), DType::kF32, {2, 4}));
  EXPECT_EQ(status.code(), StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("embedding"), std::string::npos);
  EXPECT_TRUE(std::isnan(out[0])) << "nothing is written before validation passes";
}

TEST_F(CpuOpsTest, RmsNormMatchesLlamaFormula) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t rows = 7, dim = 100;
  const float eps = 1e-5f;
  const std::vector<float> x = testing::uniform_values(rng_, rows * dim, -3.0f, 3.0f);
  std::vector<float> weight = testing::uniform_values(rng_, dim, 0.5f, 1.5f);
  std::vector<double> want(rows * dim);
  for (std::int64_t r = 0; r < rows; ++r) {
    double sum_sq = 0.0;
    for (std::int64_t c = 0; c < dim; ++c)
      sum_sq += static_cast<double>(x[r * dim + c]) * x[r * dim + c];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / dim + eps);
    for (std::int64_t c = 0; c < dim; ++c) want[r * dim + c] = x[r * dim + c] * inv_rms * weight[c];
  }
  std::vector<float> out = testing::nan_filled(rows * dim);
  ASSERT_TRUE(backend_
                  ->rms_norm(make_view(const_cast<float*>(x.data()), DType::kF32, {rows, dim}),
                             make_view(weight.data(), DType::kF32, {dim}), eps,
                             make_view(out.data(), DType::kF32, {rows, dim}))
                  .ok());
  expect_near_all(out, want);

  std::vector<float> in_place = x;  // out may alias x
  const TensorView view = make_view(in_place.data(), DType::kF32, {rows, dim});
  ASSERT_TRUE(
      backend_->rms_norm(view, make_view(weight.data(), DType::kF32, {dim}), eps, view).ok());
  EXPECT_EQ(in_place, out);
}

TEST_F(CpuOpsTest, AddIsElementwiseAndMayAliasA) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t rows = 5, cols = 33;
  std::vector<float> a = testing::uniform_values(rng_, rows * cols);
  std::vector<float> b = testing::uniform_values(rng_, rows * cols);
  std::vector<float> want(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
  std::vector<float> out = testing::nan_filled(a.size());
  ASSERT_TRUE(backend_
                  ->add(make_view(a.data(), DType::kF32, {rows, cols}),
                        make_view(b.data(), DType::kF32, {rows, cols}),
                        make_view(out.data(), DType::kF32, {rows, cols}))
                  .ok());
  EXPECT_EQ(out, want);
  const TensorView a_view = make_view(a.data(), DType::kF32, {rows, cols});
  ASSERT_TRUE(backend_->add(a_view, make_view(b.data(), DType::kF32, {rows, cols}), a_view).ok());
  EXPECT_EQ(a, want);
}

TEST_F(CpuOpsTest, SiluMulMatchesFormula) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t rows = 4, cols = 688;
  const std::vector<float> gate = testing::uniform_values(rng_, rows * cols, -8.0f, 8.0f);
  std::vector<float> up = testing::uniform_values(rng_, rows * cols);
  std::vector<float> gate_up;  // [rows, 2 * cols]: each row's gate, then its up
  std::vector<double> want(gate.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    gate_up.insert(gate_up.end(), gate.begin() + r * cols, gate.begin() + (r + 1) * cols);
    gate_up.insert(gate_up.end(), up.begin() + r * cols, up.begin() + (r + 1) * cols);
  }
  for (std::size_t i = 0; i < gate.size(); ++i) {
    want[i] = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i]))) * up[i];
  }
  std::vector<float> out = testing::nan_filled(gate.size());
  ASSERT_TRUE(backend_
                  ->silu_mul(make_view(gate_up.data(), DType::kF32, {rows, 2 * cols}),
                             make_view(out.data(), DType::kF32, {rows, cols}))
                  .ok());
  expect_near_all(out, want);
}

TEST_F(CpuOpsTest, MatmulAddAccumulatesIntoY) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t m = 5, k = 33, n = 17;
  std::vector<float> x = testing::uniform_values(rng_, m * k);
  std::vector<float> w = testing::uniform_values(rng_, n * k);
  std::vector<float> y = testing::uniform_values(rng_, m * n);
  std::vector<double> want(y.size());
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double dot = 0.0;
      for (std::int64_t e = 0; e < k; ++e) dot += static_cast<double>(x[i * k + e]) * w[j * k + e];
      want[i * n + j] = y[i * n + j] + dot;
    }
  }
  ASSERT_TRUE(backend_
                  ->matmul_add(make_view(x.data(), DType::kF32, {m, k}),
                               make_view(w.data(), DType::kF32, {n, k}),
                               make_view(y.data(), DType::kF32, {m, n}))
                  .ok());
  expect_near_all(y, want);
}

// rope_append = copy the q, k, v columns, rope(q, k), kv_append(k, v): checked against those
// ops run separately, bit for bit, with a padding row (slot -1) that writes no K/V.
TEST_F(CpuOpsTest, RopeAppendEqualsRopeThenKvAppend) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t tokens = 5, hq = 4, hkv = 2, d = 8;
  KvCacheView cache;
  cache.num_pages = 3;
  cache.page_size = 4;
  cache.num_kv_heads = hkv;
  cache.head_dim = d;
  std::vector<float> qkv = testing::uniform_values(rng_, tokens * (hq + 2 * hkv) * d);
  std::vector<std::int32_t> positions = {0, 7, 3, 11, 2};
  std::vector<std::int32_t> slots = {1, 6, -1, 11, 4};
  std::vector<float> q_want, k, v;
  for (std::int64_t t = 0; t < tokens; ++t) {
    const auto row = qkv.begin() + t * (hq + 2 * hkv) * d;
    q_want.insert(q_want.end(), row, row + hq * d);
    k.insert(k.end(), row + hq * d, row + (hq + hkv) * d);
    v.insert(v.end(), row + (hq + hkv) * d, row + (hq + 2 * hkv) * d);
  }
  std::vector<float> cache_want = testing::nan_filled(cache.page_elements() * cache.num_pages);
  std::vector<float> cache_got = cache_want;
  ASSERT_TRUE(backend_
                  ->rope(make_view(q_want.data(), DType::kF32, {tokens, hq, d}),
                         make_view(k.data(), DType::kF32, {tokens, hkv, d}),
                         make_view(positions.data(), DType::kI32, {tokens}), 10000.0f)
                  .ok());
  cache.data = cache_want.data();
  ASSERT_TRUE(backend_
                  ->kv_append(make_view(k.data(), DType::kF32, {tokens, hkv, d}),
                              make_view(v.data(), DType::kF32, {tokens, hkv, d}),
                              make_view(slots.data(), DType::kI32, {tokens}), cache)
                  .ok());
  std::vector<float> q_got = testing::nan_filled(q_want.size());
  cache.data = cache_got.data();
  ASSERT_TRUE(backend_
                  ->rope_append(make_view(qkv.data(), DType::kF32, {tokens, (hq + 2 * hkv) * d}),
                                make_view(positions.data(), DType::kI32, {tokens}),
                                make_view(slots.data(), DType::kI32, {tokens}), 10000.0f, cache,
                                make_view(q_got.data(), DType::kF32, {tokens, hq, d}))
                  .ok());
  EXPECT_EQ(0, std::memcmp(q_got.data(), q_want.data(), q_want.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(cache_got.data(), cache_want.data(), cache_want.size() * sizeof(float)));
}

TEST_F(CpuOpsTest, SampleFollowsTheSamplerPerRow) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t rows = 6, vocab = 300;
  std::vector<float> logits = testing::uniform_values(rng_, rows * vocab, -4.0f, 4.0f);
  std::vector<SamplingRow> params(rows);
  for (std::int64_t r = 0; r < rows; ++r) {
    params[r].temperature = r == 0 ? 0.0f : 0.5f + 0.25f * static_cast<float>(r);
    params[r].top_p = r % 2 == 0 ? 1.0f : 0.8f;
    params[r].seed = 1000 + static_cast<std::uint64_t>(r);
    params[r].generated_index = static_cast<std::int32_t>(3 * r);
  }
  std::vector<std::int32_t> out(rows, -7);
  ASSERT_TRUE(backend_
                  ->sample(make_view(logits.data(), DType::kF32, {rows, vocab}),
                           make_view(params.data(), DType::kI32, {rows, 6}),
                           make_view(out.data(), DType::kI32, {rows}))
                  .ok());
  for (std::int64_t r = 0; r < rows; ++r) {
    SamplingParams sampling;
    sampling.temperature = params[r].temperature;
    sampling.top_p = params[r].top_p;
    sampling.seed = params[r].seed;
    EXPECT_EQ(out[r], sample_token(std::span<const float>(logits.data() + r * vocab, vocab),
                                   sampling, params[r].generated_index))
        << "row " << r;
  }
}

// Llama rotate-half: pairs (i, i + D/2) rotate by position * theta^(-2i/D).
std::vector<double> reference_rope(const std::vector<float>& x, std::int64_t tokens,
                                   std::int64_t heads, std::int64_t dim,
                                   const std::vector<std::int32_t>& positions, double theta) {
  std::vector<double> out(x.size());
  const std::int64_t half = dim / 2;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* row = x.data() + (t * heads + h) * dim;
      double* dst = out.data() + (t * heads + h) * dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = positions[t] * std::pow(theta, -2.0 * i / dim);
        dst[i] = row[i] * std::cos(angle) - row[i + half] * std::sin(angle);
        dst[i + half] = row[i + half] * std::cos(angle) + row[i] * std::sin(angle);
      }
    }
  }
  return out;
}

TEST_F(CpuOpsTest, RopeMatchesRotateHalfReference) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t tokens = 9, q_heads = 8, kv_heads = 2, dim = 32;
  for (const float theta : {10000.0f, 500000.0f}) {
    std::vector<float> q = testing::uniform_values(rng_, tokens * q_heads * dim);
    std::vector<float> k = testing::uniform_values(rng_, tokens * kv_heads * dim);
    std::vector<std::int32_t> positions(tokens);
    std::uniform_int_distribution<std::int32_t> pos_dist(0, 8191);
    for (auto& p : positions) p = pos_dist(rng_);
    positions[0] = 0;
    const std::vector<double> want_q = reference_rope(q, tokens, q_heads, dim, positions, theta);
    const std::vector<double> want_k = reference_rope(k, tokens, kv_heads, dim, positions, theta);
    ASSERT_TRUE(backend_
                    ->rope(make_view(q.data(), DType::kF32, {tokens, q_heads, dim}),
                           make_view(k.data(), DType::kF32, {tokens, kv_heads, dim}),
                           make_view(positions.data(), DType::kI32, {tokens}), theta)
                    .ok());
    expect_near_all(q, want_q);
    expect_near_all(k, want_k);
  }
}

TEST_F(CpuOpsTest, KvAppendWritesExactlyTheAddressedSlots) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  KvCacheView cache;
  cache.num_pages = 6;
  cache.page_size = 8;
  cache.num_kv_heads = 2;
  cache.head_dim = 16;
  const std::int64_t row = cache.num_kv_heads * cache.head_dim;
  const std::int64_t num_slots = cache.num_pages * cache.page_size;
  std::vector<float> cache_data = testing::nan_filled(cache.page_elements() * cache.num_pages);
  cache.data = cache_data.data();

  std::vector<std::int32_t> slots(num_slots);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng_);
  slots.resize(21);
  const auto tokens = static_cast<std::int64_t>(slots.size());
  std::vector<float> k = testing::uniform_values(rng_, tokens * row);
  std::vector<float> v = testing::uniform_values(rng_, tokens * row);

  std::vector<float> want = cache_data;
  for (std::int64_t t = 0; t < tokens; ++t) {
    const std::int64_t page = slots[t] / cache.page_size, offset = slots[t] % cache.page_size;
    for (std::int64_t e = 0; e < row; ++e) {
      want[page * cache.page_elements() + offset * row + e] = k[t * row + e];
      want[page * cache.page_elements() + (cache.page_size + offset) * row + e] = v[t * row + e];
    }
  }
  const Status status = backend_->kv_append(
      make_view(k.data(), DType::kF32, {tokens, cache.num_kv_heads, cache.head_dim}),
      make_view(v.data(), DType::kF32, {tokens, cache.num_kv_heads, cache.head_dim}),
      make_view(slots.data(), DType::kI32, {tokens}), cache);
  ASSERT_TRUE(status.ok()) << status.to_string();
  // Bitwise: untouched slots keep their NaN poison, written ones hold exactly k and v.
  EXPECT_EQ(0, std::memcmp(cache_data.data(), want.data(), want.size() * sizeof(float)));
}

TEST_F(CpuOpsTest, KvAppendRejectsOutOfRangeSlotsBeforeWriting) {
  KvCacheView cache;
  cache.num_pages = 2;
  cache.page_size = 4;
  cache.num_kv_heads = 1;
  cache.head_dim = 8;
  std::vector<float> cache_data = testing::nan_filled(cache.page_elements() * cache.num_pages);
  cache.data = cache_data.data();
  std::vector<float> kv(2 * 8, 1.0f);
  for (const std::int32_t bad : {-2, 8}) {
    std::vector<std::int32_t> slots = {0, bad};
    const Status status = backend_->kv_append(make_view(kv.data(), DType::kF32, {2, 1, 8}),
                                              make_view(kv.data(), DType::kF32, {2, 1, 8}),
                                              make_view(slots.data(), DType::kI32, {2}), cache);
    EXPECT_EQ(status.code(), StatusCode::kOutOfRange) << "slot " << bad;
    EXPECT_TRUE(std::isnan(cache_data[0])) << "slot 0 was written before validation finished";
  }
}

TEST_F(CpuOpsTest, GatherRowsCopiesTheListedRows) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::int64_t rows = 12, cols = 40;
  std::vector<float> x = testing::uniform_values(rng_, rows * cols);
  const std::vector<std::int32_t> picked = {11, 0, 5, 5};
  std::vector<float> out = testing::nan_filled(picked.size() * cols);
  ASSERT_TRUE(backend_
                  ->gather_rows(make_view(x.data(), DType::kF32, {rows, cols}), picked,
                                make_view(out.data(), DType::kF32, {4, cols}))
                  .ok());
  for (std::size_t i = 0; i < picked.size(); ++i) {
    EXPECT_EQ(
        0, std::memcmp(out.data() + i * cols, x.data() + picked[i] * cols, cols * sizeof(float)));
  }
  const std::vector<std::int32_t> bad = {12};
  EXPECT_EQ(backend_
                ->gather_rows(make_view(x.data(), DType::kF32, {rows, cols}), bad,
                              make_view(out.data(), DType::kF32, {1, cols}))
                .code(),
            StatusCode::kOutOfRange);
}

TEST_F(CpuOpsTest, AllocateCopyAndUploadRoundTrip) {
  SCOPED_TRACE(testing::seed_trace(seed_));
  const std::vector<float> host = testing::uniform_values(rng_, 1001);
  Result<DeviceBuffer> buffer = backend_->allocate(host.size() * sizeof(float));
  ASSERT_TRUE(buffer.ok()) << buffer.status().to_string();
  EXPECT_EQ(buffer->bytes(), host.size() * sizeof(float));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer->data()) % 64, 0u);

  ASSERT_TRUE(backend_->copy_to_device(buffer->data(), host.data(), buffer->bytes()).ok());
  std::vector<float> back = testing::nan_filled(host.size());
  ASSERT_TRUE(backend_->copy_to_host(back.data(), buffer->data(), buffer->bytes()).ok());
  EXPECT_EQ(back, host);

  const std::vector<float> other = testing::uniform_values(rng_, host.size());
  const TensorView view = buffer->view(DType::kF32, {7, 143});
  ASSERT_TRUE(backend_->upload_f32(view, other).ok());
  ASSERT_TRUE(backend_->synchronize().ok());
  EXPECT_EQ(0, std::memcmp(buffer->data(), other.data(), buffer->bytes()));
  EXPECT_EQ(backend_->upload_f32(buffer->view(DType::kF32, {7, 142}), other).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_->upload_f32(buffer->view(DType::kBF16, {7, 143}), other).code(),
            StatusCode::kInvalidArgument);
}

// Each op, called with one fp32 operand relabelled bf16, must fail with kInvalidArgument and a
// message naming the op and the dtype.
TEST_F(CpuOpsTest, RejectsNonF32DtypesNamingOpAndDtype) {
  std::vector<float> buf(4096, 0.0f);
  std::vector<std::int32_t> ints(64, 0);
  const auto f32 = [&](std::initializer_list<std::int64_t> shape) {
    return make_view(buf.data(), DType::kF32, shape);
  };
  const auto bf16 = [&](std::initializer_list<std::int64_t> shape) {
    return make_view(buf.data(), DType::kBF16, shape);
  };
  const TensorView ids = make_view(ints.data(), DType::kI32, {4});
  KvCacheView cache;
  cache.data = buf.data();
  cache.num_pages = 2;
  cache.page_size = 4;
  cache.num_kv_heads = 2;
  cache.head_dim = 8;
  KvCacheView bf16_cache = cache;
  bf16_cache.dtype = DType::kBF16;
  const std::vector<std::int32_t> pages = {0, 1};
  std::vector<AttentionSequence> seqs(1);
  seqs[0].num_new_tokens = 4;
  seqs[0].page_table = pages;

  const std::vector<std::pair<std::string, Status>> calls = {
      {"embedding", backend_->embedding(bf16({16, 8}), ids, f32({4, 8}))},
      {"rms_norm", backend_->rms_norm(f32({4, 8}), bf16({8}), 1e-5f, f32({4, 8}))},
      {"matmul", backend_->matmul(f32({4, 8}), f32({3, 8}), bf16({4, 3}))},
      {"add", backend_->add(f32({4, 8}), bf16({4, 8}), f32({4, 8}))},
      {"silu_mul", backend_->silu_mul(bf16({4, 16}), f32({4, 8}))},
      {"rope", backend_->rope(bf16({4, 4, 8}), f32({4, 2, 8}), ids, 10000.0f)},
      {"kv_append", backend_->kv_append(f32({4, 2, 8}), f32({4, 2, 8}), ids, bf16_cache)},
      {"attention", backend_->attention(bf16({4, 4, 8}), cache, seqs, 0.35f, AttentionKind::kCpu,
                                        f32({4, 4, 8}))},
      {"gather_rows", backend_->gather_rows(f32({4, 8}), pages, bf16({2, 8}))},
  };
  for (const auto& [op, status] : calls) {
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << op << ": " << status.to_string();
    EXPECT_NE(status.message().find(op), std::string::npos) << status.message();
    EXPECT_NE(status.message().find("bf16"), std::string::npos) << status.message();
  }
}

TEST_F(CpuOpsTest, RejectsShapeMismatches) {
  std::vector<float> buf(4096, 0.0f);
  std::vector<std::int32_t> ints(64, 0);
  const auto f32 = [&](std::initializer_list<std::int64_t> shape) {
    return make_view(buf.data(), DType::kF32, shape);
  };
  const auto i32 = [&](std::initializer_list<std::int64_t> shape) {
    return make_view(ints.data(), DType::kI32, shape);
  };
  KvCacheView cache;
  cache.data = buf.data();
  cache.num_pages = 2;
  cache.page_size = 4;
  cache.num_kv_heads = 2;
  cache.head_dim = 8;

  const std::vector<std::pair<std::string, Status>> calls = {
      {"embedding", backend_->embedding(f32({16, 8}), i32({4}), f32({4, 9}))},
      {"embedding", backend_->embedding(f32({16, 8}), i32({4, 1}), f32({4, 8}))},
      {"rms_norm", backend_->rms_norm(f32({4, 8}), f32({7}), 1e-5f, f32({4, 8}))},
      {"matmul", backend_->matmul(f32({4, 8}), f32({3, 9}), f32({4, 3}))},
      {"matmul", backend_->matmul(f32({4, 8}), f32({3, 8}), f32({4, 4}))},
      {"matmul", backend_->matmul(f32({4, 8, 1}), f32({3, 8}), f32({4, 3}))},
      {"add", backend_->add(f32({4, 8}), f32({8, 4}), f32({4, 8}))},
      {"silu_mul", backend_->silu_mul(f32({4, 16}), f32({4, 7}))},
      {"silu_mul", backend_->silu_mul(f32({4, 16}), f32({3, 8}))},
      {"rope", backend_->rope(f32({4, 4, 7}), f32({4, 2, 7}), i32({4}), 10000.0f)},
      {"rope", backend_->rope(f32({4, 4, 8}), f32({4, 2, 8}), i32({3}), 10000.0f)},
      {"kv_append", backend_->kv_append(f32({4, 3, 8}), f32({4, 3, 8}), i32({4}), cache)},
      {"kv_append", backend_->kv_append(f32({4, 2, 8}), f32({4, 2, 8}), i32({5}), cache)},
      {"attention",
       backend_->attention(f32({4, 3, 8}), cache, {}, 0.35f, AttentionKind::kCpu, f32({4, 3, 8}))},
      {"attention", backend_->attention(f32({4, 4, 16}), cache, {}, 0.35f, AttentionKind::kCpu,
                                        f32({4, 4, 16}))},
      {"gather_rows",
       backend_->gather_rows(f32({4, 8}), std::vector<std::int32_t>{0}, f32({2, 8}))},
  };
  for (const auto& [op, status] : calls) {
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << op << ": " << status.to_string();
    EXPECT_NE(status.message().find(op), std::string::npos) << status.message();
  }
}

TEST_F(CpuOpsTest, AttentionValidatesSequencesAndKinds) {
  std::vector<float> buf(4096, 0.0f);
  KvCacheView cache;
  cache.data = buf.data();
  cache.num_pages = 2;
  cache.page_size = 4;
  cache.num_kv_heads = 2;
  cache.head_dim = 8;
  const TensorView q = make_view(buf.data(), DType::kF32, {4, 4, 8});
  std::vector<float> out_buf(4 * 4 * 8);
  const TensorView out = make_view(out_buf.data(), DType::kF32, {4, 4, 8});
  const std::vector<std::int32_t> good_pages = {0, 1};
  const std::vector<std::int32_t> bad_pages = {0, 2};
  const std::vector<std::int32_t> short_table = {0};

  const auto run = [&](std::int32_t offset, std::int32_t c, std::int32_t p,
                       std::span<const std::int32_t> pages, AttentionKind kind) {
    AttentionSequence seq;
    seq.query_offset = offset;
    seq.num_new_tokens = c;
    seq.num_cached_tokens = p;
    seq.page_table = pages;
    return backend_->attention(q, cache, std::span<const AttentionSequence>(&seq, 1), 0.35f, kind,
                               out);
  };
  EXPECT_TRUE(run(0, 4, 4, good_pages, AttentionKind::kCpu).ok());
  EXPECT_EQ(run(1, 4, 0, good_pages, AttentionKind::kCpu).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run(0, 0, 0, good_pages, AttentionKind::kCpu).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run(0, 4, 1, short_table, AttentionKind::kCpu).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run(0, 4, 4, bad_pages, AttentionKind::kCpu).code(), StatusCode::kOutOfRange);
  for (const AttentionKind kind :
       {AttentionKind::kPod, AttentionKind::kSerial, AttentionKind::kStreams}) {
    const Status status = run(0, 4, 4, good_pages, kind);
    EXPECT_EQ(status.code(), StatusCode::kUnimplemented);
    EXPECT_NE(status.message().find("CUDA backend"), std::string::npos) << status.message();
  }
}

TEST(BackendFactoryTest, CpuBackendIsAlwaysAvailable) {
  Result<std::unique_ptr<Backend>> backend = make_backend(BackendKind::kCpu, 0);
  ASSERT_TRUE(backend.ok()) << backend.status().to_string();
  EXPECT_EQ((*backend)->kind(), BackendKind::kCpu);
  EXPECT_EQ((*backend)->name(), "cpu");
  EXPECT_EQ((*backend)->compute_dtype(), DType::kF32);
}

// The capability check `backend: auto` asks: the CPU takes any shape; CUDA (when built) takes the
// attention kernels' shapes only (head dim 64 or 128, page size 16, GQA group <= 16).
TEST(BackendFactoryTest, AttentionShapeSupportFollowsTheKernels) {
  EXPECT_TRUE(backend_supports_attention(BackendKind::kCpu, 8, 2, 32, 7).ok());
  const Status llama = backend_supports_attention(BackendKind::kCuda, 32, 8, 128, 16);
  if (llama.code() == StatusCode::kUnimplemented) {
    GTEST_SKIP() << "this build has no CUDA backend: " << llama.message();
  }
  EXPECT_TRUE(llama.ok()) << llama.to_string();
  EXPECT_TRUE(backend_supports_attention(BackendKind::kCuda, 8, 8, 64, 16).ok());
  EXPECT_EQ(backend_supports_attention(BackendKind::kCuda, 8, 2, 32, 16).code(),
            StatusCode::kInvalidArgument);  // the tiny preset's head dim
  EXPECT_EQ(backend_supports_attention(BackendKind::kCuda, 32, 8, 128, 32).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(backend_supports_attention(BackendKind::kCuda, 64, 2, 128, 16).code(),
            StatusCode::kInvalidArgument);  // group 32
}

TEST(BackendFactoryTest, CpuCollectivesAreMpisNotTheFactorys) {
  EXPECT_EQ(make_collective_id(BackendKind::kCpu).status().code(), StatusCode::kUnimplemented);
  auto cpu = make_backend(BackendKind::kCpu, 0);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(make_collective_communicator({}, 1, 0, **cpu).status().code(),
            StatusCode::kUnimplemented);
  EXPECT_EQ(device_free_memory(**cpu).status().code(), StatusCode::kUnimplemented);
}

TEST(BackendFactoryTest, CudaWithoutDeviceIsAnError) {
  if (cuda_device_available()) GTEST_SKIP() << "a CUDA device is present";
  const Result<std::unique_ptr<Backend>> backend = make_backend(BackendKind::kCuda, 0);
  EXPECT_FALSE(backend.ok());
}

}  // namespace
}  // namespace podserve
