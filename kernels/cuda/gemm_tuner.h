// Internal to kernels/cuda: bf16 GEMMs with few rows (decode steps), each shape on the fastest of
// cuBLASLt's heuristic candidates and (m <= 32, when allowed) the project's few-rows kernel
// (skinny_gemm.h), timed once on the backend's stream the first time the shape runs outside a
// graph capture. Includes CUDA headers: never include it outside kernels/.
//
// Contract: y [m, n] = x [m, k] . w[n, k]^T + beta * y, row-major bf16, fp32 accumulation (the
// column-major cuBLAS view: y^T = w . x^T). run() handles m <= kMaxTunedRows and returns false
// for larger m (the caller uses cublasGemmEx). Tuning writes only to the tuner's own scratch,
// never to y, then runs the GEMM once for real. While a graph is captured (tune = false) an
// untuned shape runs the heuristic's first candidate, and is tuned the next time it runs
// uncaptured. set_allow_skinny(false) leaves cuBLASLt alone in the choice (the baseline an A/B
// compares against); shapes are tuned per setting. One thread at a time; the stream and
// workspace outlive the tuner.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "core/status.h"

namespace podserve {

inline Status check_result(cublasStatus_t status, std::string_view expr, std::string_view file,
                           int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return detail::check_failure(StatusCode::kInternal, "cuBLAS", cublasGetStatusString(status), expr,
                               file, line);
}

namespace cuda {

class GemmTuner {
 public:
  static constexpr int kMaxTunedRows = 256;

  static Result<std::unique_ptr<GemmTuner>> create(cudaStream_t stream, void* workspace,
                                                   std::size_t workspace_bytes);
  ~GemmTuner();
  GemmTuner(const GemmTuner&) = delete;
  GemmTuner& operator=(const GemmTuner&) = delete;

  Result<bool> run(const void* x, const void* w, void* y, int m, int n, int k, float beta,
                   bool tune);
  void set_allow_skinny(bool allow) { allow_skinny_ = allow; }
  bool allow_skinny() const { return allow_skinny_; }
  // One line per tuned shape: "m x n x k: chosen, then every candidate's time" (microseconds per
  // run after an L2 flush), for benches and logs.
  std::vector<std::string> report() const;

 private:
  struct Shape {
    cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
    cublasLtMatmulAlgo_t algo{};  // the fastest cuBLASLt candidate
    bool skinny = false;          // the few-rows kernel was faster still
    bool tuned = false;
    std::string timings;  // every candidate's microseconds, for report()
  };
  GemmTuner(cudaStream_t stream, void* workspace, std::size_t workspace_bytes)
      : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes) {}
  // The shape's entry, created and tuned (tune_now) or given the heuristic's first choice.
  Result<Shape*> prepared_shape(const void* x, const void* w, int m, int n, int k, float beta,
                                bool tune_now);
  Status launch(const Shape& shape, const cublasLtMatmulAlgo_t& algo, const void* x, const void* w,
                void* y, float beta);
  Status tune(Shape& shape, const void* x, const void* w, int m, int n, int k, float beta);
  // Milliseconds of kTimedRuns runs of `run_once` on the stream, each after a write over twice
  // the L2's size: w comes from memory as in a forward pass (where every other layer's weights
  // pass through the L2 between two uses of one matrix), not from the L2 the previous run filled
  // (a 33 MB matrix fits the H200's 60 MB L2 and timed back to back reads at L2 speed).
  Result<float> time_runs(const std::function<Status()>& run_once);

  cudaStream_t stream_;
  void* workspace_;
  std::size_t workspace_bytes_;
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatmulPreference_t preference_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  void* scratch_ = nullptr;  // tuning output
  std::size_t scratch_bytes_ = 0;
  void* flush_ = nullptr;  // time_runs: written before each timed run
  std::size_t flush_bytes_ = 0;
  bool allow_skinny_ = true;
  std::map<std::tuple<int, int, int, bool>, Shape> shapes_;  // (m, n, k, allow_skinny_)
};

}  // namespace cuda
}  // namespace podserve
