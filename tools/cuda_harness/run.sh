#!/usr/bin/env bash
# Compiles and runs the standalone CUDA harness of the FlattenWithSeqLenMask
# kernels: correctness vs a CPU reference, then flatten bandwidth vs
# cudaMemcpy device-to-device (prints the ratio).  Needs nvcc and a GPU.
#   bash tools/cuda_harness/run.sh [B T F]
# NVCC_ARCH (default: native) selects the GPU architecture; COMPILE_ONLY=1
# only compiles (used by tests/ops without a GPU).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
out="${OUT_DIR:-${TMPDIR:-/tmp}}/returnn_rc_flatten_harness"
"$nvcc" -O3 -std=c++17 -arch="${NVCC_ARCH:-native}" -o "$out" "$here/harness.cu"
echo "built $out"
if [[ "${COMPILE_ONLY:-0}" == 1 ]]; then exit 0; fi
"$out" "$@"
