#!/usr/bin/env bash
# README command 1: install, build, start the service on the embedded default (tiny model on
# the CPU backend unless a GPU is present), replay a short slice of the Azure LLM 2023 code
# trace against it, print the latency summary, and shut the service down cleanly.
# Environment: CONFIG (default deploy/configs/tiny-colocated.yaml), BENCH_ARGS (extra
# podserve-bench arguments), BUILD_DIR (default build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
config=${CONFIG:-deploy/configs/tiny-colocated.yaml}
build=${BUILD_DIR:-build}

bash deploy/setup.sh
cuda=OFF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && cuda=ON
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPODSERVE_ENABLE_CUDA=$cuda \
  -DPODSERVE_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target podserve podserve-bench

run_dir=$(mktemp -d)
pid_file=$run_dir/router.pid
PODSERVE_BIN=$build/bin/podserve deploy/mpirun.sh "$config" --pid-file "$pid_file" \
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
"$build/bin/podserve-bench" --url "http://${listen:-127.0.0.1:8000}" --wait-ready-s 60 \
  --trace tools/data/azure-llm-2023-code.csv ${BENCH_ARGS:---num-requests 300 --rate 6 --prompt-scale 0.05 --output-scale 1 --max-prompt 384 --max-output 32} \
  --json-out "$run_dir/summary.json"
echo "summary JSON: $run_dir/summary.json"
trap - EXIT
stop_service && echo "service stopped cleanly" || { echo "service exited with an error; log follows"; tail -50 "$run_dir/service.log"; exit 1; }
