#!/usr/bin/env bash
# Installs every Debian/Ubuntu package podserve's build, tests and main job need. Idempotent:
# packages already present are left alone, and apt is asked only for what is missing.
# Usage: deploy/setup.sh            (as root, or with sudo available)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git curl python3 python3-matplotlib
  libopenmpi-dev openmpi-bin
  libucx-dev ucx-utils
  prometheus-cpp-dev libcpp-httplib-dev
  libspdlog-dev libfmt-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libicu-dev libsentencepiece-dev
  libgtest-dev libgmock-dev googletest
  prometheus
  iproute2 nftables  # the multi-host tests: network namespaces, packet filters
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The prometheus package starts a system service on :9090 where systemd runs; podserve's tests
# start their own server on a free port, so the system one is not needed.
echo "setup: done"
