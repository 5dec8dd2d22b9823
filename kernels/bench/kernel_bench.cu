// podserve-kernel-bench: times the CUDA hybrid attention (prefill alone, decode alone, serial,
// two streams, POD) over a sweep of hybrid batches, beside the roofline bound measured on the
// card in the same run (kernels/bench/roofline.h: read-only bandwidth, cuBLAS bf16 GEMM rate).
// Writes a CSV and prints a short table with geometric means.
//
// Method: CUDA events around each run, warm-up runs first, the median of --runs runs; the L2 is
// flushed (a 256 MiB write) before every timed run so the KV never starts in L2. Inputs are
// random (a hash of the index), never zeros. Pages are scattered by a random permutation.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/bench/roofline.h"
#include "kernels/cuda/attention_cuda.h"

namespace {

using namespace podserve::cuda;

#define BENCH_CUDA(expr)                                                                     \
  do {                                                                                       \
    cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__, #expr);                                                         \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)
#define BENCH_OK(expr)                                                                   \
  do {                                                                                   \
    podserve::Status s_ = (expr);                                                        \
    if (!s_.ok()) {                                                                      \
      std::fprintf(stderr, "%s at %s:%d\n", s_.to_string().c_str(), __FILE__, __LINE__); \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

void fill(void* ptr, std::size_t n, std::uint32_t seed) {
  podserve::bench::fill_random_bf16(ptr, n, seed, nullptr);
}

using podserve::bench::parse_list;

struct Heads {
  int hq, hkv, d;
};

struct Options {
  std::vector<Heads> heads{{32, 8, 128}, {16, 4, 128}, {32, 32, 128}};
  std::vector<int> chunks{512, 1024, 2048};
  std::vector<int> prefixes{0, 4096, 12288};
  std::vector<int> batches{32, 64, 128};
  std::vector<int> contexts{4096, 16384};
  int runs = 50;
  int warmup = 5;
  int pod_ctas = 0;
  std::string csv = "kernel_bench.csv";
};

void usage() {
  std::puts(
      "podserve-kernel-bench [--quick] [--heads 32:8:128,16:4:128] [--chunks 512,1024] [--prefixes "
      "0,4K]\n"
      "  [--batches 32,64] [--contexts 4K,16K] [--runs 50] [--warmup 5] [--pod-ctas 0|2|4] [--csv "
      "FILE]");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--quick") {
      o.heads = {{32, 8, 128}};
      o.chunks = {512, 2048};
      o.prefixes = {0, 12288};
      o.batches = {32, 128};
      o.contexts = {4096, 16384};
      o.runs = 20;
    } else if (a == "--heads") {
      o.heads.clear();
      std::stringstream ss(next());
      std::string item;
      while (std::getline(ss, item, ',')) {
        Heads h{};
        if (std::sscanf(item.c_str(), "%d:%d:%d", &h.hq, &h.hkv, &h.d) != 3) {
          usage();
          std::exit(2);
        }
        o.heads.push_back(h);
      }
    } else if (a == "--chunks") {
      o.chunks = parse_list(next());
    } else if (a == "--prefixes") {
      o.prefixes = parse_list(next());
    } else if (a == "--batches") {
      o.batches = parse_list(next());
    } else if (a == "--contexts") {
      o.contexts = parse_list(next());
    } else if (a == "--runs") {
      o.runs = std::atoi(next().c_str());
    } else if (a == "--warmup") {
      o.warmup = std::atoi(next().c_str());
    } else if (a == "--pod-ctas") {
      o.pod_ctas = std::atoi(next().c_str());
    } else if (a == "--csv") {
      o.csv = next();
    } else {
      usage();
      std::exit(a == "--help" ? 0 : 2);
    }
  }
  return o;
}

struct Row {
  Heads heads;
  int c, p, b, l, pod_ctas;
  double prefill_ms, decode_ms, serial_ms, streams_ms, pod_ms, bound_ms;
  double pod_slots_ms;  // the plan's CTAs per SM, PodPolicy::kSlots
  double pod_4cta_ms;   // 4 CTAs per SM, the plan's policy
};

double geomean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += std::log(x);
  return v.empty() ? 0.0 : std::exp(s / static_cast<double>(v.size()));
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream, side;
  BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  BENCH_CUDA(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  const podserve::bench::Roofline roofline = podserve::bench::measure_roofline(0, stream);
  std::printf("card: %s\n", roofline.describe().c_str());
  const std::size_t flush_bytes = std::size_t{256} << 20;

  FILE* csv = std::fopen(opt.csv.c_str(), "w");
  if (csv == nullptr) {
    std::perror(opt.csv.c_str());
    return 1;
  }
  std::fprintf(
      csv,
      "card,read_tbps,gemm_tflops,hq,hkv,d,C,P,B,L,pod_ctas_per_sm,prefill_ms,decode_ms,serial_ms,"
      "streams_ms,pod_ms,pod_speedup_vs_serial,pod_speedup_vs_streams,prefill_tflops,decode_tbps,"
      "bound_ms,pod_over_bound,serial_over_bound,streams_over_bound,pod_slots_ms,pod_4cta_ms\n");
  std::vector<Row> rows;
  std::mt19937 rng(42);

  for (const Heads& h : opt.heads) {
    for (int c : opt.chunks)
      for (int p : opt.prefixes)
        for (int b : opt.batches)
          for (int l : opt.contexts) {
            // Batch: sequence 0 = prefill chunk (C after P), sequences 1..B = decodes of context L.
            const int num_seqs = 1 + b;
            std::vector<int> query_offsets(num_seqs), new_tokens(num_seqs), cached(num_seqs),
                pt_offsets(num_seqs);
            std::vector<int> pages_per_seq(num_seqs);
            int tokens = 0, pages = 0;
            for (int s = 0; s < num_seqs; ++s) {
              new_tokens[s] = s == 0 ? c : 1;
              cached[s] = s == 0 ? p : l - 1;
              query_offsets[s] = tokens;
              tokens += new_tokens[s];
              pages_per_seq[s] = (new_tokens[s] + cached[s] + 15) / 16;
              pages += pages_per_seq[s];
            }
            std::vector<int> perm(pages);
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            std::vector<int> page_table;
            for (int s = 0, next = 0; s < num_seqs; ++s) {
              pt_offsets[s] = static_cast<int>(page_table.size());
              for (int i = 0; i < pages_per_seq[s]; ++i) page_table.push_back(perm[next++]);
            }
            const std::size_t q_elems = static_cast<std::size_t>(tokens) * h.hq * h.d;
            const std::size_t kv_elems = static_cast<std::size_t>(pages) * 2 * 16 * h.hkv * h.d;
            void *q, *out, *kv, *workspace;
            int* d_meta;
            BENCH_CUDA(cudaMalloc(&q, q_elems * 2));
            BENCH_CUDA(cudaMalloc(&out, q_elems * 2));
            BENCH_CUDA(cudaMalloc(&kv, kv_elems * 2));
            fill(q, q_elems, 11);
            fill(kv, kv_elems, 12);
            std::vector<int> meta;
            for (auto* v : {&query_offsets, &new_tokens, &cached, &pt_offsets, &page_table})
              meta.insert(meta.end(), v->begin(), v->end());
            BENCH_CUDA(cudaMalloc(&d_meta, meta.size() * sizeof(int)));
            BENCH_CUDA(
                cudaMemcpy(d_meta, meta.data(), meta.size() * sizeof(int), cudaMemcpyHostToDevice));

            HybridAttentionParams params;
            params.q = q;
            params.out = out;
            params.kv = kv;
            params.num_pages = pages;
            params.num_q_heads = h.hq;
            params.num_kv_heads = h.hkv;
            params.head_dim = h.d;
            point_at_flat_arrays(params, d_meta, 1, b, 1 + b);
            params.scale = 1.0f / std::sqrt(static_cast<float>(h.d));

            const std::vector<int> pc{c}, pp{p}, dec(cached.begin() + 1, cached.end());
            HybridAttentionShape shape;
            shape.num_q_heads = h.hq;
            shape.num_kv_heads = h.hkv;
            shape.head_dim = h.d;
            shape.prefill_new_tokens = pc;
            shape.prefill_cached_tokens = pp;
            shape.decode_cached_tokens = dec;
            auto plan = plan_hybrid_attention(shape, {prop.multiProcessorCount}, opt.pod_ctas);
            BENCH_OK(plan.status());
            BENCH_CUDA(cudaMalloc(&workspace, plan->workspace_bytes));
            BENCH_OK(upload_plan(*plan, workspace, stream));
            // The other policy and the 4-CTAs-per-SM variant, timed beside the plan's choice to
            // judge it.
            auto slots_plan = plan_hybrid_attention(shape, {prop.multiProcessorCount},
                                                    plan->pod_ctas_per_sm, PodPolicy::kSlots);
            BENCH_OK(slots_plan.status());
            auto plan_4cta = plan_hybrid_attention(shape, {prop.multiProcessorCount}, 4);
            BENCH_OK(plan_4cta.status());
            void* alt_workspace = nullptr;
            void* workspace_4cta = nullptr;
            BENCH_CUDA(cudaMalloc(&alt_workspace, slots_plan->workspace_bytes));
            BENCH_CUDA(cudaMalloc(&workspace_4cta, plan_4cta->workspace_bytes));
            BENCH_OK(upload_plan(*slots_plan, alt_workspace, stream));
            BENCH_OK(upload_plan(*plan_4cta, workspace_4cta, stream));

            auto time = [&](auto&& fn) {
              return podserve::bench::median_ms(fn, stream, opt.warmup, opt.runs, flush_bytes);
            };
            Row r{h, c, p, b, l, plan->pod_ctas_per_sm, 0, 0, 0, 0, 0, 0, 0, 0};
            r.prefill_ms = time([&] { BENCH_OK(run_prefill(params, *plan, workspace, stream)); });
            r.decode_ms = time([&] { BENCH_OK(run_decode(params, *plan, workspace, stream)); });
            r.serial_ms = time([&] { BENCH_OK(run_serial(params, *plan, workspace, stream)); });
            r.streams_ms =
                time([&] { BENCH_OK(run_streams(params, *plan, workspace, stream, side)); });
            r.pod_ms = time([&] { BENCH_OK(run_pod(params, *plan, workspace, stream)); });
            r.pod_slots_ms =
                time([&] { BENCH_OK(run_pod(params, *slots_plan, alt_workspace, stream)); });
            r.pod_4cta_ms =
                time([&] { BENCH_OK(run_pod(params, *plan_4cta, workspace_4cta, stream)); });

            // Roofline: FLOPs of prefill + decode over the GEMM rate; the fewest bytes (all KV read
            // once, Q read and O written once) over the read bandwidth.
            const double decode_flops = 4.0 * h.d * h.hq * static_cast<double>(l) * b;
            const double prefill_kv_bytes = 2.0 * h.hkv * h.d * static_cast<double>(p + c) * 2;
            const double bytes = plan->decode_kv_bytes + prefill_kv_bytes + 2.0 * q_elems * 2;
            r.bound_ms = roofline.bound_ms(plan->prefill_flops + decode_flops, bytes);
            rows.push_back(r);
            std::fprintf(
                csv,
                "\"%s\",%.3f,%.1f,%d,%d,%d,%d,%d,%d,%d,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%."
                "4f,%.1f,%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n",
                prop.name, roofline.read_bytes_per_s / 1e12, roofline.gemm_flops_per_s / 1e12, h.hq,
                h.hkv, h.d, c, p, b, l, r.pod_ctas, r.prefill_ms, r.decode_ms, r.serial_ms,
                r.streams_ms, r.pod_ms, r.serial_ms / r.pod_ms, r.streams_ms / r.pod_ms,
                plan->prefill_flops / (r.prefill_ms * 1e9),
                plan->decode_kv_bytes / (r.decode_ms * 1e9), r.bound_ms, r.pod_ms / r.bound_ms,
                r.serial_ms / r.bound_ms, r.streams_ms / r.bound_ms, r.pod_slots_ms, r.pod_4cta_ms);
            std::fflush(csv);
            std::printf(
                "%2d/%2d/%3d C=%4d P=%5d B=%3d L=%5d ctas=%d | prefill %.3f (%.0f TF/s) decode "
                "%.3f (%.2f TB/s) "
                "serial %.3f streams %.3f pod %.3f | x%.2f vs serial x%.2f vs streams | bound %.3f "
                "pod/bound %.2f | "
                "slots %.3f 4cta %.3f\n",
                h.hq, h.hkv, h.d, c, p, b, l, r.pod_ctas, r.prefill_ms,
                plan->prefill_flops / (r.prefill_ms * 1e9), r.decode_ms,
                plan->decode_kv_bytes / (r.decode_ms * 1e9), r.serial_ms, r.streams_ms, r.pod_ms,
                r.serial_ms / r.pod_ms, r.streams_ms / r.pod_ms, r.bound_ms, r.pod_ms / r.bound_ms,
                r.pod_slots_ms, r.pod_4cta_ms);
            std::fflush(stdout);
            cudaFree(q);
            cudaFree(out);
            cudaFree(kv);
            cudaFree(d_meta);
            cudaFree(workspace);
            cudaFree(alt_workspace);
            cudaFree(workspace_4cta);
          }
  }
  std::fclose(csv);

  std::printf("\nsummary (geometric means; %s)\n", prop.name);
  std::printf("%-12s %6s %12s %13s %10s %12s %13s %16s %13s\n", "heads", "rows", "pod/serial",
              "pod/streams", "pod/bound", "serial/bound", "streams/bound", "slots/serial",
              "4cta/serial");
  auto summarize = [&](const char* label, auto pred) {
    std::vector<double> sp, st, pb, sb, tb, ts, fs;
    for (const Row& r : rows) {
      if (!pred(r)) continue;
      sp.push_back(r.serial_ms / r.pod_ms);
      st.push_back(r.streams_ms / r.pod_ms);
      pb.push_back(r.pod_ms / r.bound_ms);
      sb.push_back(r.serial_ms / r.bound_ms);
      tb.push_back(r.streams_ms / r.bound_ms);
      ts.push_back(r.serial_ms / r.pod_slots_ms);
      fs.push_back(r.serial_ms / r.pod_4cta_ms);
    }
    std::printf("%-12s %6zu %11.3fx %12.3fx %10.3f %12.3f %13.3f %15.3fx %12.3fx\n", label,
                sp.size(), geomean(sp), geomean(st), geomean(pb), geomean(sb), geomean(tb),
                geomean(ts), geomean(fs));
  };
  for (const Heads& h : opt.heads) {
    char label[32];
    std::snprintf(label, sizeof(label), "%d/%d/%d", h.hq, h.hkv, h.d);
    summarize(label, [&](const Row& r) {
      return r.heads.hq == h.hq && r.heads.hkv == h.hkv && r.heads.d == h.d;
    });
  }
  summarize("all", [](const Row&) { return true; });
  if (!rows.empty()) {
    const Row& worst = *std::min_element(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      return a.serial_ms / a.pod_ms < b.serial_ms / b.pod_ms;
    });
    std::printf(
        "worst POD vs serial: %d/%d/%d C=%d P=%d B=%d L=%d: x%.3f (pod %.3f ms, serial %.3f ms)\n",
        worst.heads.hq, worst.heads.hkv, worst.heads.d, worst.c, worst.p, worst.b, worst.l,
        worst.serial_ms / worst.pod_ms, worst.pod_ms, worst.serial_ms);
    double worst_slots = 1e30;
    for (const Row& r : rows) worst_slots = std::min(worst_slots, r.serial_ms / r.pod_slots_ms);
    std::printf("worst POD (slots policy) vs serial: x%.3f\n", worst_slots);
  }
  std::printf("csv: %s\n", opt.csv.c_str());
  return 0;
}
