# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # variables set by the sourcing script or read by it
# Shared by the tests of tests/multihost/ (sourced, not run): three "hosts" for podserve and one
# for its clients, network namespaces joined by a bridge (deploy/netns-hosts.sh), mpirun across
# them through deploy/netns-rsh-agent.sh, and the helpers to start, query and stop a deployment.
# The sourcing script sets `source_dir` (the repository) and exports PODSERVE_BIN first, then
# calls multihost_setup. Every exit (failed or not, ctest's timeout included) stops the service
# and removes the namespaces, veth pairs and bridge (an EXIT trap).
# Exit codes of the tests: 0 pass, 1 failure, 77 skipped (not root, a tool missing, namespaces
# cannot be made).

skip() {
  echo "SKIP: $*"
  exit 77
}

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

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
client_address=10.213.7.100
http_port=8000
metrics_port_base=9400
service_pid=
work=

# shellcheck disable=SC2317  # run by the EXIT trap
multihost_cleanup() {
  if [ -n "$service_pid" ]; then
    kill -TERM "$service_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # Ends whatever is left in the namespaces (a hung rank included), then removes them.
  bash "$source_dir/deploy/netns-hosts.sh" down "$prefix" "${hosts[@]}"
  [ -z "$work" ] || rm -rf "$work"
}

# multihost_setup [TOOL...]: skips unless root and every tool (besides the common ones) is
# installed, makes the hosts and $work, and installs the EXIT trap.
multihost_setup() {
  [ "$(id -u)" -eq 0 ] || skip "network namespaces need root; running as uid $(id -u)"
  local tool made
  for tool in ip unshare mpirun curl python3 "$@"; do
    command -v "$tool" >/dev/null || skip "'$tool' is not installed"
  done
  unshare --uts true 2>/dev/null || skip "cannot make a UTS namespace (unshare --uts): hosts need their own names"
  work=$(mktemp -d)
  trap multihost_cleanup EXIT
  # A signal (ctest's timeout) ends the script through `exit`, which runs the EXIT trap.
  trap 'exit 143' TERM
  trap 'exit 130' INT
  if ! made=$(bash "$source_dir/deploy/netns-hosts.sh" up "$prefix" \
    "$router_host=$router_address/24" "$prefill_host=$prefill_address/24" \
    "$decode_host=$decode_address/24" "$client_host=$client_address/24" 2>&1); then
    skip "cannot make network namespaces joined by a bridge: $made"
  fi
  # Open MPI across the hosts: the agent enters a host for mpirun, and both its out-of-band
  # channel and its TCP byte transfer layer use the hosts' subnet only. UCX (the KV cache) takes
  # TCP on eth0, the one interface every host has.
  mpirun_across_hosts="--mca plm_rsh_agent $source_dir/deploy/netns-rsh-agent.sh \
--mca oob_tcp_if_include $subnet --mca btl_tcp_if_include $subnet"
  export UCX_TLS=tcp,self UCX_NET_DEVICES=eth0
  # mpirun fills the hostfile's slots in order: rank 0 (router), ranks 1-2 (prefill, TP=2),
  # rank 3 (decode).
  printf '%s slots=1\n%s slots=2\n%s slots=1\n' "$router_host" "$prefill_host" "$decode_host" \
    >"$work/multi-host.hostfile"
}

in_client() { ip netns exec "$client_host" "$@"; }

# multihost_config OUT [YAML...]: deploy/configs/tiny-disaggregated.yaml listening on the router
# host's address, /metrics on every address of each rank's host (0.0.0.0 in a namespace is that
# host's lo and eth0 only), then the YAML lines given. Exits 1 if the shipped config changed shape.
multihost_config() {
  local out=$1
  shift
  sed -e "s/^router: {listen: [^,}]*/router: {listen: $router_address:$http_port/" \
    -e "s/^metrics: {.*}/metrics: {port_base: $metrics_port_base, bind: 0.0.0.0}/" \
    "$source_dir/deploy/configs/tiny-disaggregated.yaml" >"$out"
  if ! grep -q "^router: {listen: $router_address:$http_port" "$out" ||
    ! grep -q "^metrics: {port_base: $metrics_port_base, bind: 0.0.0.0}" "$out"; then
    echo "FAIL: deploy/configs/tiny-disaggregated.yaml no longer has one-line router and metrics keys"
    exit 1
  fi
  [ $# -eq 0 ] || printf '%s\n' "$@" >>"$out"
  local world_size
  world_size=$("$PODSERVE_BIN" --config "$out" --print-world-size) || exit 1
  [ "$world_size" -eq 4 ] || { echo "FAIL: $out needs $world_size ranks, expected 4"; exit 1; }
}

# start_service NAME HOSTFILE CONFIG: deploy/mpirun.sh on the router host (mpirun runs there, so
# that host's slots are local and the others are reached through the agent); log in $work/NAME.log.
start_service() {
  local name=$1 hostfile=$2 service_config=$3 command
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

# stop_service NAME: SIGTERM to deploy/mpirun.sh (drain, every rank stops): fails unless it
# exits 0 within 60 s with every rank stopped cleanly.
stop_service() {
  local status=0
  kill -TERM "$service_pid"
  wait_exit 60 || status=$?
  [ $status -eq 0 ] || fail "$1: SIGTERM to deploy/mpirun.sh: exit $status"
  [ "$(grep -c "stopped cleanly" "$work/$1.log")" -eq 4 ] ||
    { fail "$1: not every rank stopped cleanly:"; cat "$work/$1.log"; }
}

# scrape ADDRESS:PORT: a rank's /metrics, from the client host.
scrape() { in_client curl -sf --max-time 10 "http://$1/metrics"; }

# metric_sum METRIC: the sum of every sample of METRIC in the exposition on stdin.
metric_sum() {
  awk -v name="$1" '
    $1 == name || index($1, name "{") == 1 { sum += $NF; found = 1 }
    END { if (!found) { print "missing"; exit 1 } print sum }'
}

# The instance ranks of the multi-host deployment, by their host's address and their port (port
# base + node-local rank): prefill TP ranks 0 and 1, then decode.
multihost_instance_endpoints="$prefill_address:$metrics_port_base \
$prefill_address:$((metrics_port_base + 1)) $decode_address:$metrics_port_base"

# wait_pages_free NAME SECONDS ENDPOINT...: until every instance rank listed holds no KV page and
# has no request waiting for KV (pages come back once each transfer is final).
wait_pages_free() {
  local name=$1 seconds=$2 endpoint metrics usage waiting all_free
  shift 2
  for _ in $(seq $((seconds * 2))); do
    all_free=1
    for endpoint in "$@"; do
      metrics=$(scrape "$endpoint")
      usage=$(metric_sum podserve_kv_cache_usage_ratio <<<"$metrics")
      waiting=$(metric_sum podserve_requests_waiting_for_kv <<<"$metrics")
      [ "$usage" = 0 ] && [ "$waiting" = 0 ] || all_free=0
    done
    [ $all_free = 1 ] && return 0
    sleep 0.5
  done
  fail "$name: pages still held or requests waiting for KV after $seconds s"
  return 1
}
