#!/usr/bin/env bash
# Layer-wise vs whole-request KV shipping: the part of a request's KV transfer that is not hidden
# behind its prefill compute. Runs deploy/configs/bench/layerwise-whole.yaml, then
# layerwise-layerwise.yaml (they differ only in kv_transfer.layerwise): a 32-layer model of the
# tiny model's width (deploy/configs/models/tiny-32l.json, 16 KiB of KV per token), one prefill
# rank -> one decode rank over UCX on this host. In each mode it sends one warm-up prompt, then N
# prompts of PROMPT tokens one at a time (max_tokens 2, so prefill never contends), and after
# each reads the prefill rank's podserve_kv_transfer_tail_seconds (from the start of the last KV
# post, whose compute is then done, to the shipment being complete at the decode rank): the
# difference of its _sum is that request's tail. Prints, per mode, the KV bytes per request, the
# mean and median tail and the median token0->token1 gap, then the ratio of the mean tails
# (issue 4's target: layer-wise at most a quarter of whole-request).
# Usage, after building podserve and podserve-bench:  tools/layerwise_probe.sh [N, default 5]
# Environment: BUILD_DIR (default build), PROMPT (default 4000 tokens). About a minute of
# prefill per 4,000-token prompt on a 2-core VM; per-request samples land in the printed folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
requests=${1:-5}
prompt=${PROMPT:-4000}
build=${BUILD_DIR:-build}
run_dir=$(mktemp -d)
mpirun_pid=
trap '[ -z "$mpirun_pid" ] || kill -TERM "$mpirun_pid" 2>/dev/null || true' EXIT

# scrape PORT NAME: the value of the one sample NAME{...} on 127.0.0.1:PORT/metrics.
scrape() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v name="$2{" 'index($1, name) == 1 {print $2}'
}
# itl_p50 FILE: token0->token1 gap (s) of a one-request podserve-bench JSON report.
itl_p50() { awk '/"itl_s"/ {in_itl = 1} in_itl && /"p50"/ {gsub(",", ""); print $2; exit}' "$1"; }

# probe MODE: writes "tail_seconds gap_seconds" per measured request to $run_dir/MODE.samples.
probe() {
  local mode=$1 config=deploy/configs/bench/layerwise-$1.yaml
  local listen port_base metrics_port previous=0 sum
  listen=$(grep -oE 'listen: *[0-9.]+:[0-9]+' "$config" | awk '{print $2}')
  port_base=$(grep -oE 'port_base: *[0-9]+' "$config" | awk '{print $2}')
  metrics_port=$((port_base + 1))  # rank 1: the prefill rank
  PODSERVE_BIN=$build/bin/podserve deploy/mpirun.sh "$config" --pid-file "$run_dir/$mode.pid" \
    >"$run_dir/$mode.log" 2>&1 &
  mpirun_pid=$!
  : >"$run_dir/$mode.samples"
  for i in $(seq 0 "$requests"); do
    "$build/bin/podserve-bench" --url "http://$listen" --wait-ready-s 120 --synthetic \
      --synthetic-prompt "$prompt" --synthetic-output 2 --num-requests 1 --seed $((i + 1)) \
      --stream --json-out "$run_dir/$mode-$i.json" >>"$run_dir/bench.log" 2>&1 ||
      { echo "request $i failed in mode $mode; see $run_dir" >&2; exit 1; }
    # Token 1 needs the KV at the decode rank, so the shipment is recorded by now; wait anyway.
    until [ "$(scrape "$metrics_port" podserve_kv_transfer_tail_seconds_count)" = $((i + 1)) ]; do
      sleep 0.1
    done
    sum=$(scrape "$metrics_port" podserve_kv_transfer_tail_seconds_sum)
    [ "$i" -eq 0 ] || echo "$(awk "BEGIN {print $sum - $previous}") $(itl_p50 "$run_dir/$mode-$i.json")" \
      >>"$run_dir/$mode.samples"
    previous=$sum
  done
  bytes=$(scrape "$metrics_port" podserve_kv_transfer_bytes_total)
  kill -TERM "$(cat "$run_dir/$mode.pid")"
  wait "$mpirun_pid"
  mpirun_pid=
  echo "$bytes / ($requests + 1)" >"$run_dir/$mode.bytes"
}

# summary MODE: "mean_tail median_tail median_gap" (seconds).
summary() {
  local mean median gap
  mean=$(awk '{s += $1} END {print s / NR}' "$run_dir/$1.samples")
  median=$(sort -g "$run_dir/$1.samples" | awk '{v[NR] = $1} END {print (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2}')
  gap=$(sort -g -k2 "$run_dir/$1.samples" | awk '{v[NR] = $2} END {print (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2}')
  echo "$mean $median $gap"
}

echo "samples and logs: $run_dir"
for mode in whole layerwise; do probe "$mode"; done
printf '%-10s %9s %12s %12s %12s %16s\n' mode requests "KV/request" "tail mean" "tail median" \
  "token0->1 p50"
for mode in whole layerwise; do
  read -r mean median gap <<<"$(summary "$mode")"
  awk -v mode="$mode" -v n="$requests" -v bytes="$(awk "BEGIN {print $(cat "$run_dir/$mode.bytes")}")" \
    -v mean="$mean" -v median="$median" -v gap="$gap" \
    'BEGIN {printf "%-10s %9d %9.1f MB %9.2f ms %9.2f ms %13.2f ms\n", mode, n, bytes / 1e6, mean * 1e3, median * 1e3, gap * 1e3}'
done
read -r whole_mean _ _ <<<"$(summary whole)"
read -r layerwise_mean _ _ <<<"$(summary layerwise)"
awk -v w="$whole_mean" -v l="$layerwise_mean" \
  'BEGIN {printf "tail ratio layerwise / whole (means): %.3f (target <= 0.25)\n", l / w}'
