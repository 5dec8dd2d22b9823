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
# The namespaces, veth pairs and bridge are removed on every exit (tests/multihost/hosts_lib.sh).
# Usage: multihost_test.sh SOURCE_DIR PODSERVE_BINARY
# Exit code: 0 pass, 1 failure, 77 skipped (not root, a tool missing, namespaces cannot be made).
set -uo pipefail
source_dir=$(cd "$1" && pwd)
export PODSERVE_BIN=$2
# shellcheck source=tests/multihost/hosts_lib.sh
source "$source_dir/tests/multihost/hosts_lib.sh"
# shellcheck disable=SC2119  # no tools besides the common ones
multihost_setup

config=$work/tiny-disaggregated.yaml
multihost_config "$config"

# Every instance rank, by the address of its host and its port (port base + node-local rank).
instance_endpoints() {
  case $1 in
    one-host) echo "$router_address:$((metrics_port_base + 1))" \
      "$router_address:$((metrics_port_base + 2))" "$router_address:$((metrics_port_base + 3))" ;;
    multi-host) echo "$multihost_instance_endpoints" ;;
  esac
}

# run_probe NAME HOSTFILE: starts the deployment, sends the probe prompts, checks the KV went over
# UCX and every page came back, stops it. The outputs go to $work/NAME.json.
run_probe() {
  local name=$1 endpoint metrics shipped=0 bytes received_before received
  received_before=$(ip netns exec "$decode_host" cat /sys/class/net/eth0/statistics/rx_bytes)
  start_service "$name" "$2" "$config"
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
  # shellcheck disable=SC2046  # one argument per endpoint
  wait_pages_free "$name" 30 $(instance_endpoints "$name")
  stop_service "$name"
}

# The reference: every rank on the router host.
printf '%s slots=4\n' "$router_host" >"$work/one-host.hostfile"
run_probe one-host "$work/one-host.hostfile"

# Router, prefill (TP=2) and decode on three hosts.
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
port_holder=$!  # in the decode host's namespace: the EXIT trap ends it on any exit
for _ in $(seq 40); do [ -e "$work/port-taken" ] && break; sleep 0.25; done
[ -e "$work/port-taken" ] || { echo "FAIL: could not take port $metrics_port_base on $decode_host"; exit 1; }
start_service taken-port "$work/multi-host.hostfile" "$config"
wait_exit 60
status=$?
kill "$port_holder"
wait "$port_holder" 2>/dev/null
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
