#!/usr/bin/env bash
# One GPU session for the service's CUDA backend, run from the repository root on a GPU host with
# a bundle built elsewhere: BUNDLE/bin (podserve, podserve-bench, podserve-ab), BUNDLE/tests (the
# gpu-labelled CUDA backend tests) and BUNDLE/gpu-libs (the shared libraries the host lacks).
# Logs and reports go to $OUT. Making the bundle on the build machine (CUDA build in build-cuda):
#   mkdir -p B/bin B/tests && cp build-cuda/bin/{podserve,podserve-bench,podserve-ab} B/bin &&
#   cp build-cuda/tests/{cuda_backend_test,nccl_communicator_test,cuda_model_test} B/tests &&
#   strip B/bin/* B/tests/* && <copy the .so files ldd reports missing on the GPU host to B/gpu-libs>
# usage: tools/gpu_service_session.sh BUNDLE tests|ab|all
#   tests  cuda_backend_test, nccl_communicator_test (2+ GPUs), cuda_model_test, and
#          compute-sanitizer memcheck on the backend's op tests
#   ab     podserve-ab: deploy/configs/llama3-8b-colocated.yaml vs llama3-8b-disaggregated.yaml
#          (3 ranks: router + 2 GPUs) on 120 requests of the Azure code trace; each variant loads
#          8B random weights first (about a minute per rank), so run tests and ab as two calls
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
  for t in cuda_backend_test nccl_communicator_test cuda_model_test; do
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
if [ "$mode" = ab ] || [ "$mode" = all ]; then
  "$bundle/bin/podserve-ab" deploy/configs/llama3-8b-colocated.yaml \
    deploy/configs/llama3-8b-disaggregated.yaml --out-dir "$out/ab" \
    --bench-args "--trace tools/data/azure-llm-2023-code.csv --num-requests 120 --rate 4 --max-prompt 2048 --max-output 128" \
    > "$out/ab.log" 2>&1
  status=$?
  rc=$((rc | status))
  echo "== podserve-ab rc=$status"
  tail -40 "$out/ab.log"
fi
exit $rc
