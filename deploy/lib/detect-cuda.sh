# Sourced by deploy/quickstart.sh and deploy/test.sh: the one rule that decides whether a build
# includes the CUDA backend. A CUDA build needs a CUDA compiler: nvcc on PATH, or in
# ${CUDA_HOME:-/usr/local/cuda}/bin, where CUDA toolkits install it off PATH (that directory is
# then put on PATH, so CMake finds the same nvcc). A GPU driver alone (nvidia-smi) builds the
# CPU backend, with a note saying why.
# Sets PODSERVE_CUDA to ON or OFF and prints one line naming the choice.

podserve_detect_cuda() {
  local toolkit_bin=${CUDA_HOME:-/usr/local/cuda}/bin
  if ! command -v nvcc >/dev/null 2>&1 && [ -x "$toolkit_bin/nvcc" ]; then
    export PATH=$toolkit_bin:$PATH
  fi
  if command -v nvcc >/dev/null 2>&1; then
    PODSERVE_CUDA=ON
    echo "cuda: ON (nvcc at $(command -v nvcc))"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    PODSERVE_CUDA=OFF
    echo "cuda: OFF (a GPU driver is present but no CUDA compiler: nvcc is neither on PATH nor" \
      "in $toolkit_bin; install the CUDA toolkit or set CUDA_HOME for the CUDA backend)"
  else
    PODSERVE_CUDA=OFF
    echo "cuda: OFF (no nvcc on PATH or in $toolkit_bin)"
  fi
}

podserve_detect_cuda
