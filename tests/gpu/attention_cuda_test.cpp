// GPU tests of the CUDA hybrid attention (label gpu) against a naive fp64 CPU reference
// (materialized scores, plain softmax) on a parameter table.
//
// Tolerances (bf16 inputs and outputs, fp32 accumulation, P rounded to bf16 before P.V):
//   every checked element: |out - ref| <= 2e-2 + 2e-2 * |ref|;
//   over the checked rows: ||out - ref|| / ||ref|| <= 1e-2;
//   POD vs serial, every element: |pod - serial| <= 1e-2 + 1e-2 * |serial|.
// Every output element must be finite (outputs are poisoned with NaN before each run) and the
// output must not be trivially zero. Inputs are fresh random values each run (seeded from the
// clock; the seed is printed). Large cases are checked on a random subsample of rows.
#include "kernels/cuda/attention_cuda.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace podserve::cuda {
namespace {

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (inputs are finite)
  return static_cast<std::uint16_t>(u >> 16);
}
float from_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool have_cuda_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  std::size_t count = 0;
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr); }
  cudaError_t upload(const std::vector<T>& host) {
    count = host.size();
    cudaError_t e =
        cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<std::size_t>(1, count) * sizeof(T));
    if (e != cudaSuccess || host.empty()) return e;
    return cudaMemcpy(ptr, host.data(), count * sizeof(T), cudaMemcpyHostToDevice);
  }
};

struct Case {
  std::string name;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  std::vector<int> prefill_new;     // C per prefill sequence
  std::vector<int> prefill_cached;  // P per prefill sequence
  std::vector<int> decode_context;  // L per decode sequence (P = L - 1)
  int max_checked_rows = 400;       // (token, head) rows checked against fp64
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

std::vector<int> random_lengths(int count, int lo, int hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<int> v(count);
  for (int& x : v) x = dist(rng);
  return v;
}

std::vector<Case> cases() {
  std::vector<Case> t;
  t.push_back({"tiny_c1_l1_g4_d128", 128, 32, 8, {1}, {0}, {1}});
  t.push_back({"small_mixed_g1_d64",
               64,
               8,
               8,
               {17, 64, 100, 1},
               {0, 5, 37, 300},
               {1, 15, 16, 17, 33, 257}});
  t.push_back({"c2048_p0_b8_l4000_g8_d128", 128, 32, 4, {2048}, {0}, std::vector<int>(8, 4000)});
  t.push_back(
      {"c512_p16k_b16_l8191_g4_d128", 128, 32, 8, {512}, {16384}, std::vector<int>(16, 8191)});
  t.push_back({"decode_b256_random_g8_d64", 64, 32, 4, {}, {}, random_lengths(256, 1, 2000, 7)});
  t.push_back({"decode_l32k_g1_d128", 128, 8, 8, {}, {}, {32768, 30001}});
  t.push_back({"many_prefills_b64_g4_d64", 64, 16, 4, random_lengths(16, 1, 300, 3),
               random_lengths(16, 0, 3000, 4), random_lengths(64, 1, 5000, 5)});
  t.push_back({"prefill_only_c1000_p4000_g8_d64", 64, 32, 4, {1000}, {4000}, {}});
  t.push_back({"c1024_p4k_b32_l4k_g1_d128",
               128,
               16,
               16,
               {1024},
               {4096},
               random_lengths(32, 4000, 4100, 9)});
  t.push_back({"decode_b1_l1_g8_d128", 128, 8, 1, {}, {}, {1}});
  // 128-row prefill tiles (enough tiles to fill a wave) with a prefix and ragged chunks.
  t.push_back({"c1500_p3001_b4_g8_d64_128rows", 64, 64, 8, {1500}, {3001}, {100, 5000, 17, 1}});
  t.push_back({"c2000_p5000_b16_g4_d128_128rows",
               128,
               32,
               8,
               {2000, 33},
               {5000, 100},
               std::vector<int>(16, 2000)});
  return t;
}

// Host copy of one batch plus its device mirror.
struct Batch {
  Case spec;
  int total_tokens = 0;
  int num_pages = 0;
  std::vector<int> query_offsets, new_tokens, cached_tokens, pt_offsets, page_table;
  std::vector<std::uint16_t> q, kv;
  DeviceArray<std::uint16_t> d_q, d_kv, d_out;
  DeviceArray<int> d_query_offsets, d_new, d_cached, d_pt_offsets, d_page_table;

  int num_seqs() const { return static_cast<int>(new_tokens.size()); }
  int num_prefill() const { return static_cast<int>(spec.prefill_new.size()); }
  // Key `key` of sequence s, head h, element e; kv = 0 for K, 1 for V.
  float kv_at(int s, int key, int h, int e, int which) const {
    const std::int64_t page = page_table[pt_offsets[s] + key / 16];
    const std::int64_t idx =
        (((page * 2 + which) * 16 + key % 16) * spec.num_kv_heads + h) * spec.head_dim + e;
    return from_bf16(kv[idx]);
  }
};

void build_batch(Batch& b, std::mt19937_64& rng) {
  const Case& c = b.spec;
  for (std::size_t i = 0; i < c.prefill_new.size(); ++i) {
    b.new_tokens.push_back(c.prefill_new[i]);
    b.cached_tokens.push_back(c.prefill_cached[i]);
  }
  for (int l : c.decode_context) {
    b.new_tokens.push_back(1);
    b.cached_tokens.push_back(l - 1);
  }
  std::vector<int> pages_per_seq;
  for (int s = 0; s < b.num_seqs(); ++s) {
    b.query_offsets.push_back(b.total_tokens);
    b.total_tokens += b.new_tokens[s];
    const int keys = b.new_tokens[s] + b.cached_tokens[s];
    pages_per_seq.push_back((keys + 15) / 16);
    b.num_pages += pages_per_seq.back();
  }
  b.num_pages += 3;  // a few pages nobody owns
  std::vector<int> perm(b.num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  int next = 0;
  for (int s = 0; s < b.num_seqs(); ++s) {
    b.pt_offsets.push_back(static_cast<int>(b.page_table.size()));
    for (int i = 0; i < pages_per_seq[s]; ++i) b.page_table.push_back(perm[next++]);
  }
  // Fresh random values: q ~ U(-2, 2) so softmax is not flat, K and V ~ U(-1, 1).
  std::uniform_real_distribution<float> uq(-2.0f, 2.0f), ukv(-1.0f, 1.0f);
  b.q.resize(static_cast<std::size_t>(b.total_tokens) * c.num_q_heads * c.head_dim);
  for (auto& x : b.q) x = to_bf16(uq(rng));
  b.kv.resize(static_cast<std::size_t>(b.num_pages) * 2 * 16 * c.num_kv_heads * c.head_dim);
  std::uint64_t state = rng() | 1u;
  for (auto& x : b.kv) {  // xorshift: fast enough for hundreds of millions of values
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    x = to_bf16(static_cast<float>(static_cast<std::int64_t>(state >> 40) - (1 << 23)) /
                static_cast<float>(1 << 23));
  }
}

struct RowRef {
  int seq, token, head;
  std::vector<double> out;
};

// Naive fp64 attention of one (sequence, token, head) row: materialized scores, plain softmax.
std::vector<double> reference_row(const Batch& b, int s, int token, int head, double scale) {
  const Case& c = b.spec;
  const int group = c.num_q_heads / c.num_kv_heads;
  const int kvh = head / group;
  const int keys = b.cached_tokens[s] + token + 1;
  const std::size_t q_base =
      (static_cast<std::size_t>(b.query_offsets[s] + token) * c.num_q_heads + head) * c.head_dim;
  std::vector<double> scores(keys);
  double max_score = -1e300;
  for (int k = 0; k < keys; ++k) {
    double dot = 0;
    for (int e = 0; e < c.head_dim; ++e)
      dot += static_cast<double>(from_bf16(b.q[q_base + e])) * b.kv_at(s, k, kvh, e, 0);
    scores[k] = dot * scale;
    max_score = std::max(max_score, scores[k]);
  }
  double sum = 0;
  for (double& x : scores) sum += (x = std::exp(x - max_score));
  std::vector<double> out(c.head_dim, 0.0);
  for (int k = 0; k < keys; ++k)
    for (int e = 0; e < c.head_dim; ++e) out[e] += scores[k] / sum * b.kv_at(s, k, kvh, e, 1);
  return out;
}

std::vector<RowRef> reference_rows(const Batch& b, std::mt19937_64& rng, double scale) {
  const Case& c = b.spec;
  std::vector<RowRef> rows;
  // Always: first and last token of every sequence (one random head each), then random rows.
  std::uniform_int_distribution<int> head_dist(0, c.num_q_heads - 1);
  for (int s = 0; s < b.num_seqs() && static_cast<int>(rows.size()) < c.max_checked_rows / 2; ++s) {
    rows.push_back({s, b.new_tokens[s] - 1, head_dist(rng), {}});
    if (b.new_tokens[s] > 1) rows.push_back({s, 0, head_dist(rng), {}});
  }
  std::uniform_int_distribution<int> token_dist(0, b.total_tokens - 1);
  while (static_cast<int>(rows.size()) < c.max_checked_rows) {
    const int t = token_dist(rng);
    const int s =
        static_cast<int>(std::upper_bound(b.query_offsets.begin(), b.query_offsets.end(), t) -
                         b.query_offsets.begin()) -
        1;
    rows.push_back({s, t - b.query_offsets[s], head_dist(rng), {}});
  }
  const unsigned workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (std::size_t i = w; i < rows.size(); i += workers)
        rows[i].out = reference_row(b, rows[i].seq, rows[i].token, rows[i].head, scale);
    });
  }
  for (auto& th : pool) th.join();
  return rows;
}

enum class Strategy { kSerial, kStreams, kPod, kPodSlots, kPodPrefillFirst, kPod4, kSerial64Rows };
const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::kSerial: return "serial";
    case Strategy::kStreams: return "streams";
    case Strategy::kPod: return "pod";
    case Strategy::kPodSlots: return "pod_slots";
    case Strategy::kPodPrefillFirst: return "pod_prefill_first";
    case Strategy::kPod4: return "pod4";
    case Strategy::kSerial64Rows: return "serial_64_row_tiles";
  }
  return "?";
}

class HybridAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(HybridAttentionTest, MatchesFp64ReferenceAndPodMatchesSerial) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const std::uint64_t seed =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Batch b;
  b.spec = GetParam();
  const Case& c = b.spec;
  build_batch(b, rng);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  ASSERT_CUDA(b.d_q.upload(b.q));
  ASSERT_CUDA(b.d_kv.upload(b.kv));
  ASSERT_CUDA(b.d_out.upload(std::vector<std::uint16_t>(b.q.size())));
  ASSERT_CUDA(b.d_query_offsets.upload(b.query_offsets));
  ASSERT_CUDA(b.d_new.upload(b.new_tokens));
  ASSERT_CUDA(b.d_cached.upload(b.cached_tokens));
  ASSERT_CUDA(b.d_pt_offsets.upload(b.pt_offsets));
  ASSERT_CUDA(b.d_page_table.upload(b.page_table));

  HybridAttentionParams params;
  params.q = b.d_q.ptr;
  params.out = b.d_out.ptr;
  params.kv = b.d_kv.ptr;
  params.num_pages = b.num_pages;
  params.page_size = 16;
  params.num_q_heads = c.num_q_heads;
  params.num_kv_heads = c.num_kv_heads;
  params.head_dim = c.head_dim;
  params.query_offsets = b.d_query_offsets.ptr;
  params.num_new_tokens = b.d_new.ptr;
  params.num_cached_tokens = b.d_cached.ptr;
  params.page_table_offsets = b.d_pt_offsets.ptr;
  params.page_table = b.d_page_table.ptr;
  params.num_prefill_seqs = b.num_prefill();
  params.num_decode_seqs = static_cast<int>(c.decode_context.size());
  params.scale = static_cast<float>(scale);

  std::vector<int> decode_cached(b.cached_tokens.begin() + b.num_prefill(), b.cached_tokens.end());
  HybridAttentionShape shape;
  shape.num_q_heads = c.num_q_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.prefill_new_tokens = c.prefill_new;
  shape.prefill_cached_tokens = c.prefill_cached;
  shape.decode_cached_tokens = decode_cached;
  cudaDeviceProp prop{};
  ASSERT_CUDA(cudaGetDeviceProperties(&prop, 0));

  const std::vector<RowRef> ref = reference_rows(b, rng, scale);
  cudaStream_t stream = nullptr, side = nullptr;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  ASSERT_CUDA(cudaStreamCreate(&side));

  std::vector<float> serial_out;
  for (Strategy strategy :
       {Strategy::kSerial, Strategy::kStreams, Strategy::kPod, Strategy::kPodSlots,
        Strategy::kPodPrefillFirst, Strategy::kPod4, Strategy::kSerial64Rows}) {
    SCOPED_TRACE(strategy_name(strategy));
    const int force = strategy == Strategy::kPod4 || strategy == Strategy::kSerial64Rows ? 4 : 0;
    const PodPolicy policy = strategy == Strategy::kPodSlots          ? PodPolicy::kSlots
                             : strategy == Strategy::kPodPrefillFirst ? PodPolicy::kPrefillFirst
                                                                      : PodPolicy::kAuto;
    auto plan = plan_hybrid_attention(shape, {prop.multiProcessorCount}, force, policy);
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    void* workspace = nullptr;
    ASSERT_CUDA(cudaMalloc(&workspace, plan->workspace_bytes));
    ASSERT_TRUE(upload_plan(*plan, workspace, stream).ok());
    ASSERT_CUDA(cudaMemsetAsync(b.d_out.ptr, 0xff, b.q.size() * 2, stream));  // NaN poison
    Status st;
    switch (strategy) {
      case Strategy::kSerial:
      case Strategy::kSerial64Rows: st = run_serial(params, *plan, workspace, stream); break;
      case Strategy::kStreams: st = run_streams(params, *plan, workspace, stream, side); break;
      case Strategy::kPod:
      case Strategy::kPodSlots:
      case Strategy::kPodPrefillFirst:
      case Strategy::kPod4: st = run_pod(params, *plan, workspace, stream); break;
    }
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_CUDA(cudaFree(workspace));
    std::vector<std::uint16_t> out_bits(b.q.size());
    ASSERT_CUDA(
        cudaMemcpy(out_bits.data(), b.d_out.ptr, out_bits.size() * 2, cudaMemcpyDeviceToHost));
    std::vector<float> out(out_bits.size());
    std::size_t non_finite = 0;
    double abs_sum = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      out[i] = from_bf16(out_bits[i]);
      if (!std::isfinite(out[i])) ++non_finite;
      abs_sum += std::fabs(out[i]);
    }
    ASSERT_EQ(non_finite, 0u) << "unwritten or NaN outputs";
    ASSERT_GT(abs_sum, 0.0) << "trivially zero output";

    double err2 = 0, ref2 = 0;
    int bad = 0;
    for (const RowRef& r : ref) {
      const std::size_t base =
          (static_cast<std::size_t>(b.query_offsets[r.seq] + r.token) * c.num_q_heads + r.head) *
          c.head_dim;
      for (int e = 0; e < c.head_dim; ++e) {
        const double diff = out[base + e] - r.out[e];
        err2 += diff * diff;
        ref2 += r.out[e] * r.out[e];
        if (std::fabs(diff) > 2e-2 + 2e-2 * std::fabs(r.out[e]) && bad++ < 5) {
          ADD_FAILURE() << "seq " << r.seq << " token " << r.token << " head " << r.head << " elem "
                        << e << ": got " << out[base + e] << " want " << r.out[e];
        }
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_LE(std::sqrt(err2 / ref2), 1e-2);

    if (strategy == Strategy::kSerial) {
      serial_out = out;
    } else {
      int mismatches = 0;
      for (std::size_t i = 0; i < out.size(); ++i) {
        if (std::fabs(out[i] - serial_out[i]) > 1e-2 + 1e-2 * std::fabs(serial_out[i]) &&
            mismatches++ < 5)
          ADD_FAILURE() << "differs from serial at " << i << ": " << out[i] << " vs "
                        << serial_out[i];
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
  cudaStreamDestroy(stream);
  cudaStreamDestroy(side);
}

INSTANTIATE_TEST_SUITE_P(Table, HybridAttentionTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(HybridAttentionErrors, RejectsParamsThatDisagreeWithThePlan) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const std::vector<int> c{4}, p{0}, dec{3};
  HybridAttentionShape shape;
  shape.num_q_heads = 8;
  shape.num_kv_heads = 8;
  shape.head_dim = 128;
  shape.prefill_new_tokens = c;
  shape.prefill_cached_tokens = p;
  shape.decode_cached_tokens = dec;
  auto plan = plan_hybrid_attention(shape, {132});
  ASSERT_TRUE(plan.ok());
  HybridAttentionParams params;
  params.num_q_heads = 8;
  params.num_kv_heads = 8;
  params.head_dim = 64;
  int dummy = 0;
  EXPECT_EQ(run_pod(params, *plan, &dummy, nullptr).code(), StatusCode::kInvalidArgument);
  params.head_dim = 128;
  params.num_prefill_seqs = 1;
  EXPECT_EQ(run_serial(params, *plan, &dummy, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podserve::cuda
