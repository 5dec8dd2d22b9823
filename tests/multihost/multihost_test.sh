#!/usr/bin/env bash
# Hosts on one machine: podserve disaggregated across three "hosts", network namespaces joined by
# a bridge (deploy/netns-hosts.sh), started by mpirun through a launch agent that enters each
# host (deploy/netns-rsh-agent.sh): the router on one host, the prefill instance (TP=2) on a
# second, the decode instance on a third, the KV cache over UCX TCP between them, and the client
# on a fourth. The config is deploy/configs/tiny-disaggregated.yaml with the router listening on
# the router host's address and /metrics on each host's own addresses.
# Checks:
#   - greedy outputs (same config, same prompts, concurrent, streamed and not) equal those of the
#     same config run on one host (every rank in the router's namespace);
#   - podserve sees three hosts (the Prometheus target list names each rank's host and port);
#   - every rank's /metrics answers on its host's address; the KV went over UCX, through the
#     decode host's link (its byte counter), and every page came back on every instance;
#   - SIGTERM to deploy/mpirun.sh stops every rank on every host cleanly (exit 0);
#   - a start-up error on a remote host (a taken metrics port) ends every rank on every host:
#     exit 2, the key named, no process left;
#   - kv_transfer.backend: cuda_ipc is refused across hosts as on one host (exit 2, key named).
# The namespaces, veth pairs and bridge are removed on every exit (an EXIT trap), failed or not.
# Usage: multihost_test.sh SOURCE_DIR PODSERVE_BINARY
# Exit code: 0 pass, 1 failure, 77 skipped (not root, a tool missing, namespaces cannot be made).
set -uo pipefail
source_dir=$(cd "$1" && pwd)
export PODSERVE_BIN=$2

skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "network namespaces need root; running as uid $(id -u)"
for tool in ip unshare mpirun curl python3; do
  command -v "$tool" >/dev/null || skip "'$tool' is not installed (iproute2, util-linux, openmpi-bin, curl, python3)"
done

# Names unique to this run (several copies of the suite may run on one machine at once). The
# addresses need not be: each copy has a bridge of its own and the root namespace none on it.
prefix=psmh$$
router_host=$prefix-router
prefill_host=$prefix-prefill
decode_host=$prefix-decode
client_host=$prefix-client
hosts=("$router_host" "$prefill_host" "$decode_host" "$client_host")
subnet=10.213.7.0/24
router_address=10.213.7.1
prefill_address=10.213.7.2
decode_address=10.213.7.3
http_port=8000
metrics_port_base=9400

work=$(mktemp -d)
service_pid=
port_holder=
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  [ -z "$port_holder" ] || kill "$port_holder" 2>/dev/null
  if [ -n "$service_pid" ]; then
    kill -TERM "$service_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # Ends whatever is left in the namespaces (a hung rank included), then removes them.
  bash "$source_dir/deploy/netns-hosts.sh" down "$prefix" "${hosts[@]}"
  rm -rf "$work"
}
trap cleanup EXIT
# A signal (ctest's timeout) ends the script through `exit`, which runs the EXIT trap.
trap 'exit 143' TERM
trap 'exit 130' INT

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

if ! made=$(bash "$source_dir/deploy/netns-hosts.sh" up "$prefix" \
  "$router_host=$router_address/24" "$prefill_host=$prefill_address/24" \
  "$decode_host=$decode_address/24" "$client_host=10.213.7.100/24" 2>&1); then
  skip "cannot make network namespaces joined by a bridge: $made"
fi

in_client() { ip netns exec "$client_host" "$@"; }

# The shipped config, listening on the router host's address; metrics on every address of each
# rank's host (0.0.0.0 in a namespace is that host's lo and eth0 only).
config=$work/tiny-disaggregated.yaml
sed -e "s/^router: {listen: [^,}]*/router: {listen: $router_address:$http_port/" \
  -e "s/^metrics: {.*}/metrics: {port_base: $metrics_port_base, bind: 0.0.0.0}/" \
  "$source_dir/deploy/configs/tiny-disaggregated.yaml" >"$config"
if ! grep -q "^router: {listen: $router_address:$http_port" "$config" ||
  ! grep -q "^metrics: {port_base: $metrics_port_base, bind: 0.0.0.0}" "$config"; then
  echo "FAIL: deploy/configs/tiny-disaggregated.yaml no longer has one-line router and metrics keys"
  exit 1
fi
world_size=$("$PODSERVE_BIN" --config "$config" --print-world-size) || exit 1
[ "$world_size" -eq 4 ] || { echo "FAIL: the config needs $world_size ranks, expected 4"; exit 1; }

# Open MPI across the hosts: the agent enters a host for mpirun, and both its out-of-band channel
# and its TCP byte transfer layer use the hosts' subnet only. UCX (the KV cache) takes TCP on eth0,
# the one interface every host has.
mpirun_across_hosts="--mca plm_rsh_agent $source_dir/deploy/netns-rsh-agent.sh \
--mca oob_tcp_if_include $subnet --mca btl_tcp_if_include $subnet"
export UCX_TLS=tcp,self UCX_NET_DEVICES=eth0

# start_service NAME HOSTFILE [CONFIG]: deploy/mpirun.sh on the router host (mpirun runs there,
# so that host's slots are local and the others are reached through the agent).
start_service() {
  local name=$1 hostfile=$2 service_config=${3:-$config}
  local command
  command=$(printf '%q ' exec bash "$source_dir/deploy/mpirun.sh" "$service_config" \
    --pid-file "$work/$name.pid" --sd-file "$work/$name-sd.json")
  PODSERVE_MPIRUN_ARGS="--hostfile $hostfile $mpirun_across_hosts" \
    bash "$source_dir/deploy/netns-rsh-agent.sh" "$router_host" "$command" >"$work/$name.log" 2>&1 &
  service_pid=$!
}

# wait_ready NAME: until the router answers /health from the client host, or the service exited.
wait_ready() {
  for _ in $(seq 180); do
    in_client curl -sf --max-time 5 "http://$router_address:$http_port/health" >/dev/null && return 0
    kill -0 "$service_pid" 2>/dev/null || break
    sleep 0.5
  done
  fail "$1: the service did not come up:"
  cat "$work/$1.log"
  return 1
}

# wait_exit SECONDS: the service's exit code once it has exited; 124 while it still runs after
# SECONDS (the EXIT trap ends it then).
wait_exit() {
  local status=0
  for _ in $(seq $(($1 * 2))); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$service_pid" 2>/dev/null && return 124
  wait "$service_pid" || status=$?
  service_pid=
  return $status
}

# stop_service: SIGTERM to deploy/mpirun.sh (drain, every rank stops); its exit code.
stop_service() {
  kill -TERM "$service_pid"
  wait_exit 60
}

# scrape ADDRESS:PORT: a rank's /metrics, from the client host.
scrape() { in_client curl -sf --max-time 10 "http://$1/metrics"; }

# metric_sum METRIC: the sum of every sample of METRIC in the exposition on stdin.
metric_sum() {
  awk -v name="$1" '
    $1 == name || index($1, name "{") == 1 { sum += $NF; found = 1 }
    END { if (!found) { print "missing"; exit 1 } print sum }'
}

# Every instance rank, by the address of its host and its port (port base + node-local rank).
instance_endpoints() {
  case $1 in
    one-host) echo "$router_address:$((metrics_port_base + 1))" \
      "$router_address:$((metrics_port_base + 2))" "$router_address:$((metrics_port_base + 3))" ;;
    multi-host) echo "$prefill_address:$metrics_port_base" \
      "$prefill_address:$((metrics_port_base + 1))" "$decode_address:$metrics_port_base" ;;
  esac
}

# run_probe NAME HOSTFILE: starts the deployment, sends the probe prompts, checks the KV went over
# UCX and every page came back, stops it. The outputs go to $work/NAME.json.
run_probe() {
  local name=$1 endpoint metrics usage waiting shipped=0 bytes all_free received_before received
  received_before=$(ip netns exec "$decode_host" cat /sys/class/net/eth0/statistics/rx_bytes)
  start_service "$name" "$2"
  wait_ready "$name" || return 1
  in_client python3 "$source_dir/tests/multihost/greedy_probe.py" \
    "$router_address:$http_port" "$work/$name.json" || fail "$name: a probe request failed"
  for endpoint in $(instance_endpoints "$name"); do
    metrics=$(scrape "$endpoint") || fail "$name: no /metrics on $endpoint"
    grep -q '^podserve_kv_transport_info{.*transport="ucx"' <<<"$metrics" ||
      fail "$name: $endpoint does not report the ucx KV transport"
    bytes=$(metric_sum podserve_kv_transfer_bytes_total <<<"$metrics") ||
      fail "$name: $endpoint: no podserve_kv_transfer_bytes_total"
    shipped=$(awk -v a="$shipped" -v b="$bytes" 'BEGIN { print a + b }')
  done
  awk -v bytes="$shipped" 'BEGIN { exit !(bytes > 0) }' || fail "$name: no KV bytes shipped"
  echo "$name: $shipped KV bytes shipped"
  if [ "$name" = multi-host ]; then
    # Across hosts the KV reaches the decode host through its link: an independent count.
    received=$(($(ip netns exec "$decode_host" cat /sys/class/net/eth0/statistics/rx_bytes) -
      received_before))
    echo "$name: the decode host's eth0 received $received bytes"
    awk -v kv="$shipped" -v link="$received" 'BEGIN { exit !(link >= kv) }' ||
      fail "$name: the decode host's link carried $received bytes, less than the $shipped KV bytes"
  fi
  # Pages come back once each request's transfer is acknowledged: poll for up to 30 s.
  for _ in $(seq 60); do
    all_free=1
    for endpoint in $(instance_endpoints "$name"); do
      metrics=$(scrape "$endpoint")
      usage=$(metric_sum podserve_kv_cache_usage_ratio <<<"$metrics")
      waiting=$(metric_sum podserve_requests_waiting_for_kv <<<"$metrics")
      [ "$usage" = 0 ] && [ "$waiting" = 0 ] || all_free=0
    done
    [ $all_free = 1 ] && break
    sleep 0.5
  done
  [ $all_free = 1 ] || fail "$name: pages still held or requests waiting for KV after 30 s"
  stop_service || fail "$name: SIGTERM to deploy/mpirun.sh: exit $?"
  [ "$(grep -c "stopped cleanly" "$work/$name.log")" -eq "$world_size" ] ||
    { fail "$name: not every rank stopped cleanly:"; cat "$work/$name.log"; }
}

# The reference: every rank on the router host.
printf '%s slots=%d\n' "$router_host" "$world_size" >"$work/one-host.hostfile"
run_probe one-host "$work/one-host.hostfile"

# mpirun fills the hostfile's slots in order: rank 0 (router), ranks 1-2 (prefill, TP=2),
# rank 3 (decode).
printf '%s slots=1\n%s slots=2\n%s slots=1\n' "$router_host" "$prefill_host" "$decode_host" \
  >"$work/multi-host.hostfile"
run_probe multi-host "$work/multi-host.hostfile"

# podserve's view of the hosts: rank r's Prometheus target is its host name and the port base
# plus its rank among its host's ranks.
python3 - "$work/multi-host-sd.json" "$router_host:$metrics_port_base" \
  "$prefill_host:$metrics_port_base" "$prefill_host:$((metrics_port_base + 1))" \
  "$decode_host:$metrics_port_base" <<'PY' || fail "multi-host: podserve did not see three hosts"
import json, sys
groups = json.load(open(sys.argv[1]))
targets = {int(g["labels"]["podserve_rank"]): g["targets"] for g in groups}
expected = {rank: [target] for rank, target in enumerate(sys.argv[2:])}
if targets != expected:
    sys.exit(f"scrape targets by rank: {targets}, expected {expected}")
PY

if [ -s "$work/one-host.json" ] && [ -s "$work/multi-host.json" ]; then
  if cmp -s "$work/one-host.json" "$work/multi-host.json"; then
    echo "greedy outputs equal: $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' \
      "$work/one-host.json") prompts"
  else
    fail "greedy outputs differ: one host $(cat "$work/one-host.json"), three hosts $(cat "$work/multi-host.json")"
  fi
else
  fail "no greedy outputs to compare"
fi

# A start-up error on a remote host ends every rank on every host: the decode host's metrics
# port is taken, so rank 3 cannot serve /metrics and aborts the job; mpirun exits 2 (a
# configuration error) with the key named, and no rank is left behind on any host.
ip netns exec "$decode_host" python3 -c '
import socket, sys, time
listener = socket.socket()
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen()
open(sys.argv[2], "w").close()
time.sleep(300)' "$metrics_port_base" "$work/port-taken" &
port_holder=$!
for _ in $(seq 40); do [ -e "$work/port-taken" ] && break; sleep 0.25; done
[ -e "$work/port-taken" ] || { echo "FAIL: could not take port $metrics_port_base on $decode_host"; exit 1; }
start_service taken-port "$work/multi-host.hostfile"
wait_exit 60
status=$?
kill "$port_holder"
wait "$port_holder" 2>/dev/null
port_holder=
if [ $status -eq 124 ]; then
  fail "taken port on the decode host: the service still runs after 60 s"
else
  [ $status -eq 2 ] || fail "taken port on the decode host: exit $status, expected 2"
  grep -q "config key 'metrics.port_base': rank 3 cannot serve metrics" "$work/taken-port.log" ||
    { fail "taken port on the decode host: no error naming the key:"; cat "$work/taken-port.log"; }
  for host in "$router_host" "$prefill_host" "$decode_host"; do
    [ -z "$(ip netns pids "$host")" ] || fail "taken port: processes left on $host: $(ip netns pids "$host")"
  done
fi

# CUDA IPC connects the ranks of one host only. On this CPU build it is refused before mpirun
# starts (the KV cache is in host memory), across hosts as on one: exit 2, the key named. (The
# GPU build's ranks refuse it at start-up once they see several hosts.)
refused=$work/cuda-ipc.yaml
printf 'kv_transfer: {backend: cuda_ipc}\n' | cat "$config" - >"$refused"
start_service cuda-ipc "$work/multi-host.hostfile" "$refused"
wait_exit 60
status=$?
[ $status -eq 2 ] || fail "cuda_ipc across hosts: exit $status, expected 2"
grep -q "config key 'kv_transfer.backend': cuda_ipc" "$work/cuda-ipc.log" ||
  { fail "cuda_ipc across hosts: no refusal naming the key:"; cat "$work/cuda-ipc.log"; }

[ $failures -eq 0 ] && echo "PASS: three hosts on one machine serve the one-host greedy outputs"
exit $((failures > 0))
