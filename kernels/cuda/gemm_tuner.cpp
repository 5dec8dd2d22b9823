#include "kernels/cuda/gemm_tuner.h"

#include <fmt/format.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/skinny_gemm.h"

namespace podserve::cuda {
namespace {

constexpr int kCandidates = 8;
constexpr int kTimedRuns = 4;  // each after an L2 flush: a shape costs ~10 ms to tune

}  // namespace

std::vector<std::string> GemmTuner::report() const {
  std::vector<std::string> lines;
  for (const auto& [key, shape] : shapes_) {
    if (!shape.tuned) continue;
    const auto& [m, n, k, skinny_allowed] = key;
    lines.push_back(fmt::format("{} x {} x {}{}: {} |{}", m, n, k,
                                skinny_allowed ? "" : " (cuBLASLt only)",
                                shape.skinny ? "few-rows" : "cublasLt", shape.timings));
  }
  return lines;
}

Result<std::unique_ptr<GemmTuner>> GemmTuner::create(cudaStream_t stream, void* workspace,
                                                     std::size_t workspace_bytes) {
  std::unique_ptr<GemmTuner> tuner(new GemmTuner(stream, workspace, workspace_bytes));
  PODSERVE_CHECK(cublasLtCreate(&tuner->handle_));
  PODSERVE_CHECK(cublasLtMatmulDescCreate(&tuner->desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  PODSERVE_CHECK(cublasLtMatmulDescSetAttribute(tuner->desc_, CUBLASLT_MATMUL_DESC_TRANSA,
                                                &transpose, sizeof(transpose)));
  PODSERVE_CHECK(cublasLtMatmulDescSetAttribute(tuner->desc_, CUBLASLT_MATMUL_DESC_TRANSB, &keep,
                                                sizeof(keep)));
  PODSERVE_CHECK(cublasLtMatmulPreferenceCreate(&tuner->preference_));
  PODSERVE_CHECK(cublasLtMatmulPreferenceSetAttribute(tuner->preference_,
                                                      CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes, sizeof(workspace_bytes)));
  PODSERVE_CHECK(cudaEventCreate(&tuner->start_));
  PODSERVE_CHECK(cudaEventCreate(&tuner->stop_));
  return tuner;
}

GemmTuner::~GemmTuner() {
  for (auto& [key, shape] : shapes_) {
    cublasLtMatrixLayoutDestroy(shape.w);
    cublasLtMatrixLayoutDestroy(shape.x);
    cublasLtMatrixLayoutDestroy(shape.y);
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (flush_ != nullptr) cudaFree(flush_);
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
  if (preference_ != nullptr) cublasLtMatmulPreferenceDestroy(preference_);
  if (desc_ != nullptr) cublasLtMatmulDescDestroy(desc_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

Status GemmTuner::launch(const Shape& shape, const cublasLtMatmulAlgo_t& algo, const void* x,
                         const void* w, void* y, float beta) {
  const float alpha = 1.0f;
  PODSERVE_CHECK(cublasLtMatmul(handle_, desc_, &alpha, w, shape.w, x, shape.x, &beta, y, shape.y,
                                y, shape.y, &algo, workspace_, workspace_bytes_, stream_));
  return Status::Ok();
}

Result<float> GemmTuner::time_runs(const std::function<Status()>& run_once) {
  if (flush_ == nullptr) {
    int device = 0, l2_bytes = 0;
    PODSERVE_CHECK(cudaGetDevice(&device));
    PODSERVE_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
    flush_bytes_ = 2 * static_cast<std::size_t>(std::max(l2_bytes, 1 << 20));
    PODSERVE_CHECK(cudaMalloc(&flush_, flush_bytes_));
  }
  float total_ms = 0.0f;
  for (int run = 0; run < kTimedRuns; ++run) {
    PODSERVE_CHECK(cudaMemsetAsync(flush_, run, flush_bytes_, stream_));
    PODSERVE_CHECK(cudaEventRecord(start_, stream_));
    PODSERVE_RETURN_IF_ERROR(run_once());
    PODSERVE_CHECK(cudaEventRecord(stop_, stream_));
    PODSERVE_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    PODSERVE_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    total_ms += ms;
  }
  return total_ms;
}

Status GemmTuner::tune(Shape& shape, const void* x, const void* w, int m, int n, int k,
                       float beta) {
  cublasLtMatmulHeuristicResult_t candidates[kCandidates];
  int found = 0;
  PODSERVE_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, desc_, shape.w, shape.x, shape.y, shape.y,
                                                preference_, kCandidates, candidates, &found));
  if (found < 1) return internal_error(fmt::format("cuBLASLt has no algorithm for {} x {}", m, n));
  shape.algo = candidates[0].algo;
  const std::size_t out_bytes = static_cast<std::size_t>(m) * n * 2;
  if (scratch_bytes_ < out_bytes) {
    if (scratch_ != nullptr) PODSERVE_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    PODSERVE_CHECK(cudaMalloc(&scratch_, out_bytes));
    scratch_bytes_ = out_bytes;
  }
  PODSERVE_CHECK(cudaMemsetAsync(scratch_, 0, out_bytes, stream_));
  constexpr float kUsPerRun = 1000.0f / kTimedRuns;
  bool timed = false;
  float best_ms = 0.0f;  // of kTimedRuns runs
  shape.timings.clear();
  for (int i = 0; i < found; ++i) {
    if (candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
    // A candidate that cannot run this shape is skipped, not an error.
    if (!launch(shape, candidates[i].algo, x, w, scratch_, beta).ok()) continue;
    PODSERVE_ASSIGN_OR_RETURN(const float ms, time_runs([&] {
                                return launch(shape, candidates[i].algo, x, w, scratch_, beta);
                              }));
    shape.timings += fmt::format(" cublasLt#{} {:.1f}", i, ms * kUsPerRun);
    if (!timed || ms < best_ms) {
      timed = true;
      best_ms = ms;
      shape.algo = candidates[i].algo;
    }
  }
  shape.skinny = false;
  const SkinnyGemmParams skinny{x, w, scratch_, m, n, k, beta};
  if (allow_skinny_ && skinny_gemm_supports(skinny)) {
    PODSERVE_RETURN_IF_ERROR(launch_skinny_gemm(skinny, stream_));  // warm-up
    PODSERVE_ASSIGN_OR_RETURN(const float ms,
                              time_runs([&] { return launch_skinny_gemm(skinny, stream_); }));
    shape.timings += fmt::format(" few-rows {:.1f}", ms * kUsPerRun);
    shape.skinny = !timed || ms < best_ms;
  }
  shape.tuned = true;
  return Status::Ok();
}

Result<GemmTuner::Shape*> GemmTuner::prepared_shape(const void* x, const void* w, int m, int n,
                                                    int k, float beta, bool tune_now) {
  auto [it, inserted] = shapes_.try_emplace({m, n, k, allow_skinny_});
  Shape& shape = it->second;
  if (inserted) {
    // Column-major views: w as [k, n] (transposed by the op), x as [k, m], y as [n, m].
    PODSERVE_CHECK(cublasLtMatrixLayoutCreate(&shape.w, CUDA_R_16BF, k, n, k));
    PODSERVE_CHECK(cublasLtMatrixLayoutCreate(&shape.x, CUDA_R_16BF, k, m, k));
    PODSERVE_CHECK(cublasLtMatrixLayoutCreate(&shape.y, CUDA_R_16BF, n, m, n));
  }
  if (!shape.tuned && tune_now) {
    PODSERVE_RETURN_IF_ERROR(tune(shape, x, w, m, n, k, beta));
  } else if (inserted) {
    // Captured before it could be timed: the heuristic's first choice until then.
    cublasLtMatmulHeuristicResult_t first;
    int found = 0;
    PODSERVE_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, desc_, shape.w, shape.x, shape.y,
                                                  shape.y, preference_, 1, &first, &found));
    if (found < 1)
      return internal_error(fmt::format("cuBLASLt has no algorithm for {} x {}", m, n));
    shape.algo = first.algo;
  }
  return &shape;
}

Result<bool> GemmTuner::run(const void* x, const void* w, void* y, int m, int n, int k, float beta,
                            bool tune_now) {
  if (m > kMaxTunedRows) return false;
  PODSERVE_ASSIGN_OR_RETURN(const Shape* shape, prepared_shape(x, w, m, n, k, beta, tune_now));
  if (shape->skinny) {
    const SkinnyGemmParams skinny{x, w, y, m, n, k, beta};
    // The choice was timed on this shape; other pointers may lack the kernel's alignment.
    if (skinny_gemm_supports(skinny)) {
      PODSERVE_RETURN_IF_ERROR(launch_skinny_gemm(skinny, stream_));
      return true;
    }
  }
  PODSERVE_RETURN_IF_ERROR(launch(*shape, shape->algo, x, w, y, beta));
  return true;
}

}  // namespace podserve::cuda
