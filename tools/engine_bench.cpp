// podserve-engine-bench: the model's forward pass alone on the CUDA backend (no HTTP, no MPI),
// timed per step beside its roofline bound measured in the same run (kernels/bench/roofline.h).
//
// Rows: decode steps (B sequences of context L, one new token each), prefill chunks (C new
// tokens after P cached), hybrid steps (a chunk of C plus B decodes of context L). Decode rows run
// in the --decode-variants: with CUDA graphs (graph), eagerly (eager), and with CUDA graphs on
// cuBLASLt's GEMMs only (cublas: engine.small_batch_kernels false, the baseline of the few-rows
// kernel); hybrid rows with POD and serial attention. Every row: the median
// over --runs steps of the wall time of LlamaModel::forward (inputs staged, GPU work, sampled ids
// back) and of its GPU span (events on the backend's stream around the call), and the bound
//   max(FLOPs / GEMM rate, bytes read / read bandwidth)
// with FLOPs = 2 x (weights read) x tokens + attention FLOPs, bytes = weights read once + KV read
// (docs/perf.md). Weights are random (seed 1), the KV cache random bf16 (never zeros), page
// tables a random permutation of the cache. Rows whose KV does not fit the card are skipped.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "kernels/backend_factory.h"
#include "kernels/bench/roofline.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/model.h"
#include "worker/weights.h"

namespace podserve {
namespace {

#define ENGINE_BENCH_OK(expr)                                               \
  do {                                                                      \
    const ::podserve::Status status_ = (expr);                              \
    if (!status_.ok()) {                                                    \
      std::fprintf(stderr, "%s: %s\n", #expr, status_.to_string().c_str()); \
      std::exit(1);                                                         \
    }                                                                       \
  } while (0)

template <typename T>
T value_or_exit(Result<T> result, const char* what) {
  if (!result.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, result.status().to_string().c_str());
    std::exit(1);
  }
  return std::move(result).value();
}

struct Options {
  std::string model = "llama3-8b";
  std::int32_t layers = 0;  // 0: the preset's
  std::vector<int> batches = {1, 8, 32, 64, 128, 256};
  std::vector<int> contexts = {512, 2048, 8192};
  std::vector<int> chunks = {512, 2048};
  std::vector<int> hybrid_batches = {32, 128};
  int runs = 20, warmup = 3;
  float temperature = 0.7f, top_p = 0.9f;
  std::string csv = "engine_bench.csv";
  std::vector<std::string> rows = {"decode", "prefill", "hybrid"};
  std::vector<std::string> decode_variants = {"graph", "eager", "cublas"};
};

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> names;
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ',');) names.push_back(item);
  return names;
}

using bench::parse_list;

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model")
      o.model = next();
    else if (a == "--layers")
      o.layers = std::stoi(next());
    else if (a == "--batches")
      o.batches = parse_list(next());
    else if (a == "--contexts")
      o.contexts = parse_list(next());
    else if (a == "--chunks")
      o.chunks = parse_list(next());
    else if (a == "--hybrid-batches")
      o.hybrid_batches = parse_list(next());
    else if (a == "--runs")
      o.runs = std::stoi(next());
    else if (a == "--warmup")
      o.warmup = std::stoi(next());
    else if (a == "--temperature")
      o.temperature = std::stof(next());
    else if (a == "--top-p")
      o.top_p = std::stof(next());
    else if (a == "--csv")
      o.csv = next();
    else if (a == "--rows")
      o.rows = split_names(next());
    else if (a == "--decode-variants")
      o.decode_variants = split_names(next());
    else {
      std::printf(
          "usage: podserve-engine-bench [--model llama3-8b] [--layers N] [--batches 1,8,32]\n"
          "  [--contexts 512,2K,8K] [--chunks 512,2048] [--hybrid-batches 32,128] [--runs 20]\n"
          "  [--warmup 3] [--temperature 0.7] [--top-p 0.9] [--csv engine_bench.csv]\n"
          "  [--rows decode,prefill,hybrid] [--decode-variants graph,eager,cublas]\n"
          "Decode rows for every batch x context, prefill chunks after 0 and after 8K cached\n"
          "tokens, hybrid rows (a chunk of the first size plus B decodes at 2K context).\n");
      std::exit(a == "--help" || a == "-h" ? 0 : 2);
    }
  }
  for (const std::string& name : o.decode_variants) {
    if (name != "graph" && name != "eager" && name != "cublas") {
      std::fprintf(stderr, "--decode-variants: unknown variant %s (graph, eager, cublas)\n",
                   name.c_str());
      std::exit(2);
    }
  }
  if (o.runs < 1 || o.warmup < 0 || o.batches.empty() || o.contexts.empty() || o.chunks.empty()) {
    std::fprintf(stderr, "--runs must be >= 1, --warmup >= 0, and the lists not empty\n");
    std::exit(2);
  }
  return o;
}

// One sequence of a step: C new tokens after P cached ones.
struct SeqShape {
  std::int32_t cached = 0, new_tokens = 1;
};

// The bound's ingredients for one step.
struct StepCost {
  double flops = 0, bytes = 0;
};

StepCost step_cost(const ModelConfig& m, std::span<const SeqShape> seqs) {
  const double h = m.hidden_size, d = m.head_dim;
  const double layer_params = h * d * (m.num_heads + 2.0 * m.num_kv_heads) + d * m.num_heads * h +
                              3.0 * h * m.intermediate_size;
  const double lm_head = static_cast<double>(m.vocab_size) * h;
  StepCost cost;
  cost.bytes = 2.0 * (m.num_layers * layer_params + lm_head);  // bf16 weights, read once
  for (const SeqShape& s : seqs) {
    const double c = s.new_tokens, p = s.cached;
    cost.flops += 2.0 * m.num_layers * layer_params * c + 2.0 * lm_head;  // one sampled row
    cost.flops += m.num_layers * 4.0 * d * m.num_heads * (c * p + c * (c + 1) / 2);
    cost.bytes += m.num_layers * 2.0 * m.num_kv_heads * d * (p + c) * 2.0;  // K and V, bf16
  }
  return cost;
}

struct Bench {
  Options options;
  ModelConfig config;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<LlamaModel> model;
  void* stream = nullptr;
  bench::Roofline roofline;
  std::vector<std::int32_t> page_order;  // a random permutation of the cache's pages
  std::mt19937_64 rng{7};
  FILE* csv = nullptr;

  // The plan of one step over `seqs`, pages taken in page_order; sampling rows for each.
  BatchPlan make_plan(std::span<const SeqShape> seqs, std::vector<SamplingRow>& rows) {
    BatchPlan plan;
    std::size_t next_page = 0;
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      SequenceWork work;
      work.seq_id = static_cast<RequestId>(i + 1);
      work.num_cached_tokens = seqs[i].cached;
      work.new_tokens.resize(static_cast<std::size_t>(seqs[i].new_tokens));
      for (TokenId& t : work.new_tokens)
        t = static_cast<TokenId>(rng() % static_cast<std::uint64_t>(config.vocab_size));
      const std::int32_t pages = (work.context_length() + 15) / 16;
      work.page_table.assign(page_order.begin() + static_cast<std::ptrdiff_t>(next_page),
                             page_order.begin() + static_cast<std::ptrdiff_t>(next_page + pages));
      next_page += static_cast<std::size_t>(pages);
      work.is_prefill = seqs[i].new_tokens > 1;
      work.sample = true;
      plan.sequences.push_back(std::move(work));
      SamplingRow row;
      row.temperature = options.temperature;
      row.top_p = options.top_p;
      row.seed = rng();
      rows.push_back(row);
    }
    return plan;
  }

  std::int64_t pages_needed(std::span<const SeqShape> seqs) const {
    std::int64_t pages = 0;
    for (const SeqShape& s : seqs) pages += (s.cached + s.new_tokens + 15) / 16;
    return pages;
  }

  struct Timing {
    double wall_ms = 0, gpu_ms = 0;
    bool graph = false;
  };

  Timing time_steps(const BatchPlan& plan, std::vector<SamplingRow> rows) {
    bench::GpuTimer timer;
    std::vector<double> wall, gpu;
    bool graph = false;
    for (int i = 0; i < options.warmup + options.runs; ++i) {
      for (SamplingRow& row : rows) row.generated_index = i;
      const auto start = std::chrono::steady_clock::now();
      timer.start(stream);
      const auto tokens = value_or_exit(model->forward(plan, rows), "forward");
      timer.stop(stream);
      const double wall_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      if (tokens.size() != rows.size()) {
        std::fprintf(stderr, "forward returned %zu tokens for %zu rows\n", tokens.size(),
                     rows.size());
        std::exit(1);
      }
      graph = model->last_step_used_graph();
      if (i < options.warmup) continue;
      wall.push_back(wall_ms);
      gpu.push_back(timer.elapsed_ms());
    }
    return {bench::median(wall), bench::median(gpu), graph};
  }

  // Times one row in two variants (label, setup) and prints / writes it.
  void row(const std::string& kind, std::span<const SeqShape> seqs, int batch, int context,
           int chunk, int prefix,
           const std::vector<std::pair<std::string, std::function<void()>>>& variants) {
    const std::string shape =
        fmt::format("{:<7} B={:<3} L={:<5} C={:<4} P={:<5}", kind, batch, context, chunk, prefix);
    if (pages_needed(seqs) > static_cast<std::int64_t>(page_order.size())) {
      std::printf("%s  skipped: KV of %lld pages exceeds the cache's %zu\n", shape.c_str(),
                  static_cast<long long>(pages_needed(seqs)), page_order.size());
      return;
    }
    std::vector<SamplingRow> rows;
    const BatchPlan plan = make_plan(seqs, rows);
    const StepCost cost = step_cost(config, seqs);
    const double bound = roofline.bound_ms(cost.flops, cost.bytes);
    std::string line = shape + " |";
    for (const auto& [label, setup] : variants) {
      setup();
      const Timing t = time_steps(plan, rows);
      line += fmt::format(" {} {:8.3f} ms (gpu {:8.3f}) x{:5.2f} |", label, t.wall_ms, t.gpu_ms,
                          t.wall_ms / bound);
      std::fprintf(csv, "\"%s\",%.3f,%.1f,%s,%s,%d,%d,%d,%d,%.4f,%.4f,%d,%.6g,%.6g,%.4f,%.4f\n",
                   roofline.card.c_str(), roofline.read_bytes_per_s / 1e12,
                   roofline.gemm_flops_per_s / 1e12, kind.c_str(), label.c_str(), batch, context,
                   chunk, prefix, t.wall_ms, t.gpu_ms, t.graph ? 1 : 0, cost.flops, cost.bytes,
                   bound, t.wall_ms / bound);
      std::fflush(csv);
    }
    std::printf("%s bound %8.3f ms\n", line.c_str(), bound);
    std::fflush(stdout);
  }
};

int run(int argc, char** argv) {
  Bench b;
  b.options = parse(argc, argv);
  b.config = value_or_exit(model_preset(b.options.model), "--model");
  if (b.options.layers > 0) b.config.num_layers = b.options.layers;
  b.backend = value_or_exit(make_backend(BackendKind::kCuda, 0), "CUDA backend");
  b.stream = cuda_backend_stream(*b.backend);
  const auto id = value_or_exit(make_collective_id(BackendKind::kCuda), "collective id");
  b.comm = value_or_exit(make_collective_communicator(id, 1, 0, *b.backend), "communicator");
  b.roofline = bench::measure_roofline(cuda_backend_device(*b.backend), b.stream);
  std::printf("card: %s\n", b.roofline.describe().c_str());

  // KV pages: what is free after the weights, less 8 GiB for activations, logits and graphs.
  const std::size_t free_bytes = value_or_exit(device_free_memory(*b.backend), "free memory");
  const double weight_bytes = 2.0 * static_cast<double>(b.config.num_parameters());
  const double kv_bytes = static_cast<double>(free_bytes) - weight_bytes - 8.0 * (1 << 30);
  ModelOptions options;
  options.page_size = 16;
  options.attention = AttentionKind::kPod;
  options.max_graph_batch = *std::max_element(b.options.batches.begin(), b.options.batches.end());
  options.num_pages = LlamaModel::pages_that_fit(
      b.config, 1, static_cast<std::size_t>(std::max(kv_bytes, 0.0)), 16, DType::kBF16);
  RandomWeightSource weights(1);
  const auto load_start = std::chrono::steady_clock::now();
  b.model =
      value_or_exit(LlamaModel::create(b.config, weights, *b.backend, *b.comm, options), "model");
  std::printf(
      "model: %s, %d layers, %.2f B parameters, random weights loaded in %.0f s; %d KV "
      "pages of 16 tokens (%.0f K tokens)\n",
      b.config.name.c_str(), b.config.num_layers, b.config.num_parameters() / 1e9,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
      options.num_pages, options.num_pages * 16 / 1e3);
  for (std::int32_t l = 0; l < b.config.num_layers; ++l) {
    const KvCacheView cache = b.model->kv_cache(l);
    bench::fill_random_bf16(cache.data, cache.page_elements() * cache.num_pages,
                            static_cast<std::uint32_t>(l + 11), b.stream);
  }
  ENGINE_BENCH_OK(b.backend->synchronize());
  b.page_order.resize(static_cast<std::size_t>(options.num_pages));
  std::iota(b.page_order.begin(), b.page_order.end(), 0);
  std::shuffle(b.page_order.begin(), b.page_order.end(), b.rng);

  b.csv = std::fopen(b.options.csv.c_str(), "w");
  if (b.csv == nullptr) {
    std::perror(b.options.csv.c_str());
    return 1;
  }
  std::fprintf(b.csv,
               "card,read_tbps,gemm_tflops,kind,variant,batch,context,chunk,prefix,wall_ms,gpu_ms,"
               "graph,flops,bytes,bound_ms,wall_over_bound\n");
  std::printf(
      "median of %d steps after %d warm-up; sampling temperature %.2f top_p %.2f; "
      "x = wall / bound\n",
      b.options.runs, b.options.warmup, b.options.temperature, b.options.top_p);

  LlamaModel& model = *b.model;
  // Each variant sets every switch it depends on.
  const auto decode_setup = [&](bool graphs, bool small_batch_kernels) {
    return [&model, &b, graphs, small_batch_kernels] {
      model.set_attention(AttentionKind::kPod);
      model.set_graphs(graphs);
      b.backend->set_small_batch_kernels(small_batch_kernels);
    };
  };
  std::vector<std::pair<std::string, std::function<void()>>> decode_variants;
  for (const std::string& name : b.options.decode_variants) {
    if (name == "graph") {
      decode_variants.emplace_back(name, decode_setup(true, true));
    } else if (name == "eager") {
      decode_variants.emplace_back(name, decode_setup(false, true));
    } else {  // cublas (parse() checked the names)
      decode_variants.emplace_back(name, decode_setup(true, false));
    }
  }
  const auto pod = [&] {
    model.set_attention(AttentionKind::kPod), b.backend->set_small_batch_kernels(true);
  };
  const auto serial = [&] {
    model.set_attention(AttentionKind::kSerial), b.backend->set_small_batch_kernels(true);
  };
  const auto wanted = [&](const char* kind) {
    return std::find(b.options.rows.begin(), b.options.rows.end(), kind) != b.options.rows.end();
  };
  for (const int context : wanted("decode") ? b.options.contexts : std::vector<int>{}) {
    for (const int batch : b.options.batches) {
      const std::vector<SeqShape> seqs(static_cast<std::size_t>(batch), SeqShape{context - 1, 1});
      b.row("decode", seqs, batch, context, 1, context - 1, decode_variants);
    }
  }
  for (const int chunk : wanted("prefill") ? b.options.chunks : std::vector<int>{}) {
    for (const int prefix : {0, 8192}) {
      if (prefix > 0 && chunk != b.options.chunks.back()) continue;
      const std::vector<SeqShape> seqs = {SeqShape{prefix, chunk}};
      b.row("prefill", seqs, 0, 0, chunk, prefix, {{"pod", pod}});
    }
  }
  for (const int batch : wanted("hybrid") ? b.options.hybrid_batches : std::vector<int>{}) {
    const int chunk = b.options.chunks.front();
    std::vector<SeqShape> seqs = {SeqShape{0, chunk}};
    seqs.insert(seqs.end(), static_cast<std::size_t>(batch), SeqShape{2047, 1});
    b.row("hybrid", seqs, batch, 2048, chunk, 0, {{"pod", pod}, {"serial", serial}});
  }
  std::fclose(b.csv);
  std::printf("csv: %s\n", b.options.csv.c_str());
  std::printf("GEMM tuner (m x n x k: chosen | every candidate, us per run after an L2 flush):\n");
  for (const std::string& line : cuda_gemm_tuning_report(*b.backend))
    std::printf("  %s\n", line.c_str());
  return 0;
}

}  // namespace
}  // namespace podserve

int main(int argc, char** argv) { return podserve::run(argc, argv); }
