#!/usr/bin/env bash
# One GPU session for kvtransfer (a machine with 2 GPUs; host staging also runs on 1): the
# gpu-labelled tests (NCCL channel; CUDA IPC; host staging over UCX shared memory and TCP), then
# podserve-kvtransfer-bench --backend gpu (NCCL's own figure vs packed 64 KiB pages; host-staged
# UCX vs its stages), then its NCCL rows again with one process per GPU (mpirun -np 2
# --nccl-ranks 2), logs and CSV into $OUT.
# usage: kvtransfer/bench/gpu_session.sh BUILD_DIR [all|test|bench] [extra bench args...]
# BUILD_DIR/gpu-libs holds the shared libraries the GPU host lacks (tools/gpu-bundle.sh).
# NCCL_NVLS_ENABLE=0 is required on the shared GPU machines (NVLink multicast can take the host's
# GPUs out of service); this script sets it, and the test and benchmark binaries set it if unset.
set -uo pipefail
build=${1:-build-kv-cuda}
mode=${2:-all}
shift 2 || true
out=${OUT:-/tmp/podserve-kv-gpu-out}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # the bench calls MPI_Init
export LD_LIBRARY_PATH=$PWD/$build/gpu-libs:${LD_LIBRARY_PATH:-}
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
  nvidia-smi topo -m
  ucx_info -v | head -2
  ucx_info -d | grep -E "Transport:" | sort -u
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
rc=0
summary='^\[  |^\[==|Failure|Expected|Which is|seed|Skipped|cancel after|UCX CUDA'
if [ "$mode" = all ] || [ "$mode" = test ]; then
  "$build/tests/nccl_transport_test" > "$out/nccl_transport_test.log" 2>&1
  rc=$((rc | $?)); grep -E "$summary" "$out/nccl_transport_test.log" | grep -v "^\[       OK"
  "$build/tests/cuda_ipc_transport_test" > "$out/cuda_ipc_transport_test.log" 2>&1
  rc=$((rc | $?)); grep -E "$summary" "$out/cuda_ipc_transport_test.log" | grep -v "^\[       OK"
  "$build/tests/host_staged_transport_test" --ucx-tls=sm,self --ucx-peer-errors=0 \
    > "$out/host_staged_sm.log" 2>&1
  rc=$((rc | $?)); grep -E "$summary" "$out/host_staged_sm.log" | grep -v "^\[       OK"
  "$build/tests/host_staged_transport_test" --ucx-tls=tcp,self --ucx-peer-errors=1 \
    > "$out/host_staged_tcp.log" 2>&1
  rc=$((rc | $?)); grep -E "$summary" "$out/host_staged_tcp.log" | grep -v "^\[       OK"
  echo "tests rc=$rc"
fi
if [ "$mode" = all ] || [ "$mode" = bench ]; then
  # 64 KiB pages = 16 tokens x (K and V) x 8 KV heads x 128 dims x 2 bytes (bf16).
  UCX_TLS=sm,self "$build/bin/podserve-kvtransfer-bench" --backend gpu --min-bytes 65536 \
    --max-bytes 268435456 --page-bytes 65536 --peer-error-handling=false \
    --csv "$out/kvtransfer_gpu.csv" "$@" 2>&1 | tee "$out/kvtransfer_bench.log"
  rc=$((rc | PIPESTATUS[0]))
  # The same NCCL rows with rank r on GPU r, each posting without groups (as the service runs).
  # NCCL's INIT/P2P log goes to files; its "via" lines name the transport between the GPUs.
  if command -v mpirun > /dev/null; then
    timeout 120 mpirun -np 2 --oversubscribe --bind-to none --allow-run-as-root \
      --mca pml ob1 --mca btl self,vader,tcp -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH \
      -x NCCL_DEBUG=INFO -x NCCL_DEBUG_SUBSYS=INIT,P2P \
      -x "NCCL_DEBUG_FILE=$out/nccl_2proc.%h.%p.log" \
      "$build/bin/podserve-kvtransfer-bench" --backend nccl --nccl-ranks 2 --min-bytes 65536 \
      --max-bytes 268435456 --page-bytes 65536 --csv "$out/kvtransfer_2proc.csv" "$@" \
      > "$out/kvtransfer_2proc.log" 2>&1
    two_process_rc=$?
    rc=$((rc | two_process_rc))
    grep -ho "[0-9]*\[[0-9]*\] -> [0-9]*\[[0-9]*\] via .*" "$out"/nccl_2proc.*.log 2> /dev/null |
      sort | uniq -c
    if [ $two_process_rc -eq 0 ]; then
      sed -n '/^two-process summary/,$p' "$out/kvtransfer_2proc.log"
    else
      echo "two-process bench rc=$two_process_rc (124: timed out); log tail:"
      tail -25 "$out/kvtransfer_2proc.log"
    fi
  else
    echo "mpirun not found: two-process NCCL bench skipped"
    rc=$((rc | 1))
  fi
fi
exit $rc
