#!/usr/bin/env bash
# README command 1: install, build, start the service (the tiny model on the CPU backend), replay
# a short slice of the Azure LLM 2023 code trace against it, print the latency summary, and shut
# the service down cleanly. Exit code 0 when every step succeeded.
#
# Builds every binary the README uses afterwards (podserve, podserve-bench, podserve-ab, ...) in
# BUILD_DIR: a Release build without tests, with the CUDA backend where a CUDA compiler is found
# (deploy/lib/detect-cuda.sh, the rule deploy/test.sh follows too). The options are passed on
# every run, so whatever configured BUILD_DIR before does not change what this builds.
#
# Environment:
#   CONFIG            deployment config (default deploy/configs/tiny-colocated.yaml)
#   BENCH_ARGS        podserve-bench's workload arguments (default: 300 requests of the trace)
#   BUILD_DIR         build directory (default build)
#   PODSERVE_BIN_DIR  run with the binaries in this directory (a build or a bundle made
#                     elsewhere): nothing is installed or built
#   PODSERVE_DRY_RUN  1: install and configure, print the build command, stop there (exit 0)
set -euo pipefail
bin_dir=${PODSERVE_BIN_DIR:+$(cd "$PODSERVE_BIN_DIR" && pwd)}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
config=${CONFIG:-deploy/configs/tiny-colocated.yaml}
build=${BUILD_DIR:-build}

if [ -z "$bin_dir" ]; then
  bash deploy/setup.sh
  source deploy/lib/detect-cuda.sh
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPODSERVE_ENABLE_CUDA="$PODSERVE_CUDA" \
    -DPODSERVE_BUILD_TESTS=OFF >/dev/null
  build_command=(cmake --build "$build" -j "$(nproc)")
  if [ "${PODSERVE_DRY_RUN:-0}" = 1 ]; then
    echo "dry run: configured $build; would run: ${build_command[*]}"
    exit 0
  fi
  "${build_command[@]}"
  bin_dir=$build/bin
fi

run_dir=$(mktemp -d)
pid_file=$run_dir/router.pid
PODSERVE_BIN=$bin_dir/podserve deploy/mpirun.sh "$config" --pid-file "$pid_file" \
  >"$run_dir/service.log" 2>&1 &
mpirun_pid=$!
stop_service() {
  if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill -TERM "$(cat "$pid_file")"
  fi
  wait "$mpirun_pid"
}
trap 'kill -TERM $mpirun_pid 2>/dev/null || true' EXIT

listen=$(grep -oE 'listen: *[0-9.]+:[0-9]+' "$config" | awk '{print $2}')
echo "service starting (log: $run_dir/service.log)"
"$bin_dir/podserve-bench" --url "http://${listen:-127.0.0.1:8000}" --wait-ready-s 60 \
  --trace tools/data/azure-llm-2023-code.csv ${BENCH_ARGS:---num-requests 300 --rate 6 --prompt-scale 0.05 --output-scale 1 --max-prompt 384 --max-output 32} \
  --json-out "$run_dir/summary.json"
echo "summary JSON: $run_dir/summary.json"
trap - EXIT
stop_service && echo "service stopped cleanly" || { echo "service exited with an error; log follows"; tail -50 "$run_dir/service.log"; exit 1; }
