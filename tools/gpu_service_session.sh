#!/usr/bin/env bash
# One GPU session for the service's CUDA backend, run from the repository root on a GPU host with
# a bundle built elsewhere: BUNDLE/bin (podserve, podserve-bench, podserve-ab), BUNDLE/tests (the
# gpu-labelled CUDA backend tests) and BUNDLE/gpu-libs (the shared libraries the host lacks).
# Logs and reports go to $OUT. Making the bundle on the build machine (CUDA build in build-cuda):
#   mkdir -p B/bin B/tests && cp build-cuda/bin/{podserve,podserve-bench,podserve-ab} B/bin &&
#   cp build-cuda/tests/{cuda_backend_test,nccl_communicator_test,cuda_model_test,cuda_ipc_transport_test} B/tests &&
#   strip B/bin/* B/tests/* && <copy the .so files ldd reports missing on the GPU host to B/gpu-libs>
# usage: tools/gpu_service_session.sh BUNDLE tests|ab|transfer|all
#   tests     cuda_backend_test, nccl_communicator_test (2+ GPUs), cuda_model_test,
#             cuda_ipc_transport_test, and compute-sanitizer memcheck on the backend's op tests
#   ab        podserve-ab: deploy/configs/llama3-8b-colocated.yaml vs llama3-8b-disaggregated.yaml
#             (3 ranks: router + 2 GPUs; KV over cuda_ipc) on 120 requests of the Azure code trace;
#             each variant loads 8B random weights first (about 40 s per rank on H200)
#   transfer  podserve-ab: the disaggregated config with kv_transfer.backend ucx (host staging
#             when UCX has no CUDA transports) vs cuda_ipc, same workload
# NCCL_NVLS_ENABLE=0 is required on the shared GPU machines; this script sets it.
set -uo pipefail
bundle=${1:?usage: tools/gpu_service_session.sh BUNDLE tests|ab|all}
mode=${2:-all}
out=${OUT:-/tmp/podserve-gpu-service}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH=$PWD/$bundle/gpu-libs:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/card.txt"
rc=0
summary='^\[  |^\[==|Failure|Expected|Which is|largest|seed|Skipped'
if [ "$mode" = tests ] || [ "$mode" = all ]; then
  for t in cuda_backend_test nccl_communicator_test cuda_model_test cuda_ipc_transport_test; do
    "$bundle/tests/$t" > "$out/$t.log" 2>&1
    status=$?
    rc=$((rc | status))
    echo "== $t rc=$status"
    grep -E "$summary" "$out/$t.log" | grep -v "^\[       OK" | tail -25
  done
  # DescribesItselfAndItsDevice asks for a missing device on purpose (an API error memcheck counts).
  compute-sanitizer --tool memcheck --error-exitcode 3 "$bundle/tests/cuda_backend_test" \
    --gtest_filter='CudaBackendTest.*:*decode_only*:-CudaBackendTest.DescribesItselfAndItsDevice' \
    > "$out/sanitizer.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "memcheck rc=$status: $(grep -E 'ERROR SUMMARY' "$out/sanitizer.log" | tail -1)"
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
exit $rc
