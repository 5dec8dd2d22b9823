#!/usr/bin/env bash
# One GPU session for the CUDA attention: the gpu-labelled tests, compute-sanitizer (memcheck and
# racecheck on small cases) and the kernel benchmark, logs and CSVs into $OUT.
# usage: kernels/bench/gpu_session.sh BUILD_DIR check|bench|quick|torch [extra bench args...]
# BUILD_DIR/gpu-libs holds the shared libraries the GPU host lacks (/work/shared/tools/gpu-bundle.sh).
set -uo pipefail
build=${1:-build-cuda}
mode=${2:-check}
shift 2 || true
out=${OUT:-/tmp/podserve-gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/$build/gpu-libs:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv | tee -a "$out/card.txt"
case "$mode" in
  check)
    "$build/tests/attention_cuda_test" 2>&1 | tee "$out/gpu_tests.log" | grep -E "^\[  |seed|Failure|got|differs|error" | tail -60
    small='*tiny*:*small_mixed*:*HybridAttentionErrors*'
    compute-sanitizer --tool memcheck --error-exitcode 3 "$build/tests/attention_cuda_test" --gtest_filter="$small" \
      > "$out/sanitizer.log" 2>&1; echo "memcheck rc=$?" | tee -a "$out/sanitizer.log"
    compute-sanitizer --tool racecheck --error-exitcode 3 "$build/tests/attention_cuda_test" --gtest_filter="*small_mixed*" \
      >> "$out/sanitizer.log" 2>&1; echo "racecheck rc=$?" | tee -a "$out/sanitizer.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=" "$out/sanitizer.log"
    ;;
  quick)
    "$build/bin/podserve-kernel-bench" --quick --csv "$out/kernel_bench_quick.csv" "$@" 2>&1 | tee "$out/bench_quick.log"
    ;;
  bench)
    "$build/bin/podserve-kernel-bench" --csv "$out/kernel_bench.csv" "$@" 2>&1 | tee "$out/bench.log"
    ;;
  torch)
    PYTHONUNBUFFERED=1 python3 tools/torch_attention_reference.py --csv "$out/torch_reference.csv" "$@" 2>&1 | tee "$out/torch.log"
    ;;
esac
