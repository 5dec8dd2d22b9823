#!/usr/bin/env bash
# One GPU session for the CUDA attention: the gpu-labelled tests, compute-sanitizer (memcheck and
# racecheck on small cases) and the kernel benchmark, logs and CSVs into $OUT.
# usage: kernels/bench/gpu_session.sh BUILD_DIR check|bench|quick|torch|ncu [extra bench args...]
# ncu: Nsight Compute on the prefill and POD kernels of one prefill-heavy configuration, plus the
# SASS instruction mix (HGMMA = wgmma) of the attention kernels.
# BUILD_DIR/gpu-libs holds the shared libraries the GPU host lacks (tools/gpu-bundle.sh).
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
  ncu)
    one=(--heads 32:8:128 --chunks 2048 --prefixes 12288 --batches 32 --contexts 16384 --runs 1 --warmup 0 --csv /dev/null)
    sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --page raw)
    for k in prefill_kernel pod_kernel; do
      echo "== $k" | tee -a "$out/ncu.txt"
      ncu --clock-control none --kernel-name "regex:$k" --launch-count 1 "${sections[@]}" \
        "$build/bin/podserve-kernel-bench" "${one[@]}" > "$out/ncu_one.txt" 2>&1
      cat "$out/ncu_one.txt" >> "$out/ncu.txt"
      grep -E "gpu__time_duration.sum |sm__throughput.avg.pct|tensor.*pct_of_peak_sustained_active|achieved_occupancy|registers_per_thread|issue_active.avg.pct" "$out/ncu_one.txt" | head -12
      grep -E "smsp__average_warps_issue_stalled_[a-z_]+_per_issue_active.ratio" "$out/ncu_one.txt" | awk '$NF+0 >= 0.1 {print $1, $NF}' | sort -k2 -nr | head -8
    done
    rm -f "$out/ncu_one.txt"
    cuobjdump -sass "$build/bin/podserve-kernel-bench" > /tmp/sass.txt 2>/dev/null
    echo "HGMMA in SASS: $(grep -c HGMMA /tmp/sass.txt), HMMA: $(grep -c HMMA /tmp/sass.txt), LDL/STL: $(grep -cE 'LDL|STL' /tmp/sass.txt)"
    ;;
  torch)
    PYTHONUNBUFFERED=1 python3 tools/torch_attention_reference.py --csv "$out/torch_reference.csv" "$@" 2>&1 | tee "$out/torch.log"
    ;;
esac
