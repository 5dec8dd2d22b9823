#!/usr/bin/env bash
# One GPU session for the service's CUDA backend, run from the repository root on a GPU host with
# a bundle built elsewhere: BUNDLE/bin (podserve, podserve-bench, podserve-ab, podserve-capacity),
# BUNDLE/tests (the
# gpu-labelled CUDA backend tests) and BUNDLE/gpu-libs (the shared libraries the host lacks).
# Logs and reports go to $OUT. Making the bundle on the build machine (CUDA build in build-cuda):
#   mkdir -p B/bin B/tests && cp build-cuda/bin/{podserve,podserve-bench,podserve-ab,podserve-capacity} B/bin &&
#   cp build-cuda/tests/{cuda_backend_test,nccl_communicator_test,cuda_model_test,cuda_ipc_transport_test} B/tests &&
#   strip B/bin/* B/tests/* &&
#   tools/gpu-bundle.sh --target-libs GPU-HOST-LDCONFIG.txt B/gpu-libs B/bin/* B/tests/*
# (GPU-HOST-LDCONFIG.txt: `ldconfig -p` run on the GPU host)
# usage: tools/gpu_service_session.sh BUNDLE tests|engine|streams|ab|transfer|capacity|all [engine args]
#   tests     cuda_backend_test, attention_cuda_test, nccl_communicator_test (2+ GPUs),
#             cuda_model_test, cuda_ipc_transport_test (those in BUNDLE/tests), and
#             compute-sanitizer memcheck on the backend's op tests and the graph decode steps
#   engine    podserve-engine-bench (Llama-3-8B shapes; extra args go to it)
#   streams   the service on one GPU (llama3-8b, one TP=1 instance), 128 concurrent streams of
#             prompt 128 / output 256, with engine.cuda_graphs true and then false
#   ab        podserve-ab: deploy/configs/llama3-8b-colocated.yaml vs llama3-8b-disaggregated.yaml
#             (3 ranks: router + 2 GPUs; KV over cuda_ipc) on 120 requests of the Azure code trace;
#             each variant loads 8B random weights first (about 40 s per rank on H200)
#   transfer  podserve-ab: the disaggregated config with kv_transfer.backend ucx (host staging
#             when UCX has no CUDA transports) vs cuda_ipc, same workload
#   capacity  podserve-capacity on one GPU: attention pod vs serial vs streams
#             (deploy/configs/bench/llama3-8b-1gpu-*.yaml) for 90% of requests: the code trace
#             (prompts up to 8K) at TTFT <= 2 s, TPOT <= 100 ms, and synthetic 1,024 + 128 token
#             requests at TTFT <= 500 ms, TPOT <= 25 ms; reports in $OUT/capacity-long and
#             $OUT/capacity-short, plots made later (docs/capacity.md). Not part of `all` (the
#             short workload takes about 4 minutes per variant): run it on its own, one workload
#             at a time with a third argument (long or short), and CAPACITY_CONFIGS="CONFIG" for
#             one variant per call
# NCCL_NVLS_ENABLE=0 is required on the shared GPU machines; this script sets it.
set -uo pipefail
bundle=${1:?usage: tools/gpu_service_session.sh BUNDLE tests|engine|streams|ab|transfer|all}
mode=${2:-all}
shift 2 || true
out=${OUT:-/tmp/podserve-gpu-service}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH=$PWD/$bundle/gpu-libs:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt"
rc=0
summary='^\[  |^\[==|Failure|Expected|Which is|largest|seed|Skipped'
if [ "$mode" = tests ] || [ "$mode" = all ]; then
  for t in cuda_backend_test attention_cuda_test nccl_communicator_test cuda_model_test \
           cuda_ipc_transport_test; do
    [ -x "$bundle/tests/$t" ] || continue
    "$bundle/tests/$t" > "$out/$t.log" 2>&1
    status=$?
    rc=$((rc | status))
    echo "== $t rc=$status"
    grep -E "$summary" "$out/$t.log" | grep -v "^\[       OK" | tail -25
  done
  # DescribesItselfAndItsDevice asks for a missing device on purpose (an API error memcheck counts).
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/tests/cuda_backend_test" \
    --gtest_filter='CudaBackendTest.*:CudaSampleTest.Greedy*:*RopeAppend*:-CudaBackendTest.DescribesItselfAndItsDevice' \
    > "$out/sanitizer.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "memcheck rc=$status: $(grep -E 'ERROR SUMMARY' "$out/sanitizer.log" | tail -1)"
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/tests/cuda_model_test" \
    --gtest_filter='*GraphDecodeSteps*' > "$out/sanitizer_graphs.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "memcheck (graph decode steps) rc=$status: $(grep -E 'ERROR SUMMARY' "$out/sanitizer_graphs.log" | tail -1)"
fi
if [ "$mode" = engine ] || [ "$mode" = all ]; then
  "$bundle/bin/podserve-engine-bench" --csv "$out/engine_bench.csv" "$@" > "$out/engine_bench.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "== podserve-engine-bench rc=$status"
  cat "$out/engine_bench.log"
fi
if [ "$mode" = streams ] || [ "$mode" = all ]; then
  for graphs in true false; do
    config=$out/streams-graphs-$graphs.yaml
    printf '%s\n' "model: {preset: llama3-8b, weights: random, seed: 1}" "backend: cuda" \
      "instances: [{role: colocated, tp: 1, count: 1}]" \
      "scheduler: {mode: colocated, attention: pod, token_budget: 2048, max_running: 256}" \
      "engine: {cuda_graphs: $graphs}" "kv_cache: {page_size: 16, num_pages: 16384}" \
      "router: {listen: 127.0.0.1:8000}" "metrics: {port_base: 9400, sd_file: $out/sd.json}" \
      > "$config"
    PODSERVE_BIN=$bundle/bin/podserve deploy/mpirun.sh "$config" --pid-file "$out/router.pid" \
      > "$out/streams-graphs-$graphs.service.log" 2>&1 &
    mpirun_pid=$!
    "$bundle/bin/podserve-bench" --url http://127.0.0.1:8000 --wait-ready-s 300 --synthetic \
      --synthetic-prompt 128 --synthetic-output 256 --num-requests 512 --concurrency-limit 128 \
      --json-out "$out/streams-graphs-$graphs.json" > "$out/streams-graphs-$graphs.log" 2>&1
    status=$?
    rc=$((rc | status))
    echo "== 128 streams, engine.cuda_graphs $graphs: rc=$status"
    tail -25 "$out/streams-graphs-$graphs.log"
    [ -s "$out/router.pid" ] && kill -TERM "$(cat "$out/router.pid")" 2>/dev/null
    wait "$mpirun_pid"
  done
fi
workload="--trace tools/data/azure-llm-2023-code.csv --num-requests 120 --rate 4 --max-prompt 2048 --max-output 128"
run_ab() {  # NAME CONFIG_A CONFIG_B
  "$bundle/bin/podserve-ab" "$2" "$3" --out-dir "$out/$1" --bench-args "$workload" \
    > "$out/$1.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "== podserve-ab $1 rc=$status"
  sed -n '/^A\/B comparison/,$p' "$out/$1.log"
  grep -h "loaded in\|KV fabric ready" "$out/$1"/*service.log | cut -c1-160
}
if [ "$mode" = ab ] || [ "$mode" = all ]; then
  run_ab ab deploy/configs/llama3-8b-colocated.yaml deploy/configs/llama3-8b-disaggregated.yaml
fi
if [ "$mode" = transfer ] || [ "$mode" = all ]; then
  ucx_config=$out/llama3-8b-disaggregated-ucx.yaml
  sed 's/backend: cuda_ipc/backend: ucx/' deploy/configs/llama3-8b-disaggregated.yaml > "$ucx_config"
  run_ab transfer "$ucx_config" deploy/configs/llama3-8b-disaggregated.yaml
fi
if [ "$mode" = capacity ]; then
  # CAPACITY_CONFIGS: a subset, for one variant per 10-minute command.
  configs=${CAPACITY_CONFIGS:-"deploy/configs/bench/llama3-8b-1gpu-pod.yaml deploy/configs/bench/llama3-8b-1gpu-serial.yaml deploy/configs/bench/llama3-8b-1gpu-streams.yaml"}
  common="--tolerance 0.1 --repeats 3 --no-plots"
  for workload in ${1:-long short}; do
    case $workload in
      long) args="--num-requests 100 --max-prompt 8192 --max-output 512 --start-rate 2 --slo-ttft-ms 2000 --slo-tpot-ms 100" ;;
      # 600 requests: a 200-request slice of 256/128 tokens fit one batch on an H200 and met
      # TTFT <= 2 s at every rate up to 10,000 req/s (docs/capacity.md).
      short) args="--synthetic --synthetic-prompt 1024 --synthetic-output 128 --num-requests 600 --start-rate 16 --slo-ttft-ms 500 --slo-tpot-ms 25" ;;
      *) echo "capacity: unknown workload $workload (long, short)"; rc=2; continue ;;
    esac
    # shellcheck disable=SC2086  # word splitting of the argument lists is meant
    "$bundle/bin/podserve-capacity" $configs --podserve "$bundle/bin/podserve" $args $common \
      --out-dir "$out/capacity-$workload" > "$out/capacity-$workload.log" 2>&1
    status=$?
    rc=$((rc | status))
    echo "== podserve-capacity $workload rc=$status"
    grep "^== " "$out/capacity-$workload.log" | tail -40
    head -3 "$out/capacity-$workload/capacity-report.md"
  done
fi
exit $rc
