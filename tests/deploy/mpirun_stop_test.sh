#!/usr/bin/env bash
# deploy/mpirun.sh passes SIGTERM to the router rank: the service drains, every rank stops, and
# the script exits 0 — with the pid file it makes itself, and with one given by --pid-file.
# A config this build cannot start (backend: cuda for the tiny model, whose head dim the CUDA
# kernels do not take; nccl as the KV transport) is refused before mpirun starts: exit 2, one line.
# Usage: mpirun_stop_test.sh SOURCE_DIR PODSERVE_BINARY
set -uo pipefail
source_dir=$(cd "$1" && pwd)
export PODSERVE_BIN=$2
work=$(mktemp -d)
service=
trap '[ -z "$service" ] || kill -TERM "$service" 2>/dev/null; rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Ports free now: one for HTTP, and a base with one per rank after it for /metrics.
read -r http_port metrics_base < <(python3 - <<'PY'
import random, socket
def free_range(n):
    while True:
        base, held = random.randrange(20000, 60000), []
        try:
            for port in range(base, base + n):
                held.append(socket.socket())
                held[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            pass
        finally:
            for s in held:
                s.close()
http = free_range(1)
metrics = free_range(3)
while metrics <= http < metrics + 3:
    metrics = free_range(3)
print(http, metrics)
PY
)
common="model: {preset: tiny}
kv_cache: {cpu_memory_mb: 16}
router: {listen: 127.0.0.1:$http_port}
metrics: {port_base: $metrics_base}"
config=$work/tiny.yaml
printf '%s\nbackend: cpu\ninstances: [{role: colocated, tp: 1, count: 2}]\n' "$common" >"$config"

wait_ready() {  # wait_ready LOG: until /health says 200, or the service exited
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$http_port/health" >/dev/null && return 0
    kill -0 "$service" 2>/dev/null || { fail "service exited at start-up:"; cat "$1"; return 1; }
    sleep 0.5
  done
  fail "service not ready after 60 s"
  return 1
}

for pid_args in "" "--pid-file $work/router.pid"; do
  log=$work/service.log
  # shellcheck disable=SC2086
  bash "$source_dir/deploy/mpirun.sh" "$config" $pid_args >"$log" 2>&1 &
  service=$!
  wait_ready "$log" || continue
  kill -TERM "$service"
  status=0
  wait "$service" || status=$?
  service=
  [ $status -eq 0 ] || { fail "SIGTERM to mpirun.sh (${pid_args:-own pid file}): exit $status"; cat "$log"; }
  [ "$(grep -c "stopped cleanly" "$log")" -eq 3 ] ||
    fail "not every rank stopped cleanly (${pid_args:-own pid file})"
done

refused_configs=(
  "backend: cuda"
  "backend: cpu
scheduler: {mode: disaggregated}
instances: [{role: prefill, tp: 1, count: 1}, {role: decode, tp: 1, count: 1}]
kv_transfer: {backend: nccl}")
for refused in "${refused_configs[@]}"; do
  bad=$work/refused.yaml
  printf '%s\n%s\n' "$common" "$refused" >"$bad"
  output=$(bash "$source_dir/deploy/mpirun.sh" "$bad" 2>&1)
  status=$?
  [ $status -eq 2 ] || fail "refused config ($refused): exit $status, expected 2: $output"
  [ "$(wc -l <<<"$output")" -eq 1 ] || fail "refused config: more than one line: $output"
  [[ "$output" == "podserve: config key '"* ]] || fail "refused config: '$output' names no key"
done

[ $failures -eq 0 ] && echo "PASS: SIGTERM to deploy/mpirun.sh exits 0; refused configs exit 2"
exit $((failures > 0))
