#!/usr/bin/env bash
# GPU build check of the returnn_rc.ops library without a GPU (not part of the test suite).
#
# Creates a separate virtual environment with the CUDA `tensorflow` wheel (not tensorflow-cpu; the
# nvidia-* runtime wheels are NOT installed: compiling needs only TF's headers and nvcc), then
#   1. compiles cc/flatten_with_seq_len_mask.cu.cc with nvcc (-DGOOGLE_CUDA=1),
#   2. compiles the C++ op + kernels with -DGOOGLE_CUDA=1 against that TF's headers,
#   3. links _flatten_ops.so against libtensorflow_framework alone (it exports TF's CUDA runtime stub),
#   4. compiles and links the XLA library (cc/flatten_with_seq_len_mask_xla.cc; its lowering is
#      device-independent, built here with -DGOOGLE_CUDA=1 against the CUDA TF),
#   5. tries tf.load_op_library on both in that environment and prints the registered kernels,
#   6. runs the CUDA build's CPU kernels against numpy (the GPU kernels need a GPU: tools/cuda_harness).
# Every step is run even if an earlier one fails; a summary is printed at the end and the full log is
# written to DIR/check_gpu_build.log.
#
#   bash tools/check_gpu_build.sh [--dir DIR] [--skip-install] [--tf-version 2.21.0] [--arch sm_90]
#
# DIR defaults to /tmp/returnn_rc_gpu_build (the venv is DIR/venv, ~1.5 GB; objects in DIR/build).
# The download is large (the tensorflow wheel is ~600 MB): run it once, with a timeout.
# Results of the last run are recorded in returnn_rc/ops/STATUS.md ("GPU build").
set -uo pipefail

dir=/tmp/returnn_rc_gpu_build
skip_install=0
tf_version=2.21.0
arch=${NVCC_ARCH:-sm_90}  # H100/H200; the PTX (compute_90) is embedded too
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --skip-install) skip_install=1; shift ;;
    --tf-version) tf_version="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "check_gpu_build.sh: unknown argument '$1' (expected --dir DIR, --skip-install, --tf-version V, --arch SM)" >&2
       exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cc="$here/returnn_rc/ops/cc"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [[ -n ${CUDA_HOME:-} ]]; then cuda_home=$CUDA_HOME
elif [[ -d /usr/local/cuda/include ]]; then cuda_home=/usr/local/cuda
else cuda_home="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"; fi
venv="$dir/venv"
build="$dir/build"
log="$dir/check_gpu_build.log"
mkdir -p "$build"
: > "$log"
declare -A result

step() {  # step NAME CMD...: runs CMD, logs it, records ok/FAILED
  local name="$1"; shift
  echo "=== $name: $*" | tee -a "$log"
  if "$@" >> "$log" 2>&1; then result[$name]=ok; else result[$name]="FAILED (rc $?)"; fi
  echo "=== $name: ${result[$name]}" | tee -a "$log"
}

if [[ $skip_install == 0 ]]; then
  step venv python3 -m venv "$venv"
  # The CUDA wheel (its dependencies do not include the nvidia-* runtime wheels).
  step install "$venv/bin/pip" install --no-cache-dir "tensorflow==$tf_version"
fi
py="$venv/bin/python"
if [[ ! -x $py ]]; then
  echo "no venv python at $py (run without --skip-install first)" >&2
  exit 1
fi

tf_info() {
  "$py" - <<'EOF'
import os, tensorflow as tf
print("TF", tf.__version__, "is_built_with_cuda", tf.test.is_built_with_cuda())
print("build_info", {k: v for k, v in tf.sysconfig.get_build_info().items()})
print("include", tf.sysconfig.get_include())
EOF
}
step tf_info tf_info
inc="$("$py" -c 'import tensorflow as tf; print(tf.sysconfig.get_include())' 2>/dev/null)"
cflags="$("$py" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_compile_flags()))' 2>/dev/null)"
lflags="$("$py" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))' 2>/dev/null)"
libdir="$(dirname "$inc")"
echo "include=$inc cflags=$cflags lflags=$lflags cuda_home=$cuda_home" >> "$log"

# shellcheck disable=SC2086
step nvcc_cu "$nvcc" -c -o "$build/flatten_with_seq_len_mask.cu.o" "$cc/flatten_with_seq_len_mask.cu.cc" -x cu \
  -O2 -std=c++17 -gencode "arch=compute_${arch#sm_},code=[$arch,compute_${arch#sm_}]" -Xcompiler -fPIC -DGOOGLE_CUDA=1 -DNDEBUG --expt-relaxed-constexpr -w $cflags
common=(-O2 -g0 -fPIC -w -DNDEBUG -DGOOGLE_CUDA=1 -I"$cuda_home/include")
# shellcheck disable=SC2086
step cxx_ops g++ -c -o "$build/ops.o" "$cc/flatten_with_seq_len_mask_ops.cc" "${common[@]}" $cflags
# shellcheck disable=SC2086
step cxx_kernels g++ -c -o "$build/kernels.o" "$cc/flatten_with_seq_len_mask_kernels.cc" "${common[@]}" $cflags
# No -lcudart: libtensorflow_framework exports the CUDA runtime API (TF's cudart stub, which loads the
# CUDA runtime TF was built for at run time); linking the local libcudart (possibly another major version
# than TF's) would load a second runtime. --no-undefined proves every symbol resolves against TF.
undefined_cuda() {  # CUDA symbols of the objects that libtensorflow_framework does not define
  nm -D --defined-only "$libdir/libtensorflow_framework.so.2" | awk '{print $3}' | sort > "$build/tf_symbols.txt"
  nm -u "$build"/*.o | awk '{print $2}' | grep -E '^_*cu' | sort -u | comm -23 - "$build/tf_symbols.txt" | tee "$build/missing.txt"
  [[ ! -s $build/missing.txt ]]
}
step cuda_symbols undefined_cuda
# shellcheck disable=SC2086
step link_ops g++ -shared -o "$build/_flatten_ops.so" "$build/ops.o" "$build/kernels.o" \
  "$build/flatten_with_seq_len_mask.cu.o" $lflags -Wl,-rpath,"$libdir" -Wl,--no-undefined
# shellcheck disable=SC2086
step cxx_xla g++ -c -o "$build/xla.o" "$cc/flatten_with_seq_len_mask_xla.cc" "${common[@]}" $cflags \
  -I"$inc/external/highwayhash" -I"$inc/external/farmhash_archive/src"
# shellcheck disable=SC2086
step link_xla g++ -shared -o "$build/_flatten_xla.so" "$build/xla.o" $lflags -l:libtensorflow_cc.so.2 \
  -Wl,-rpath,"$libdir"

load() {  # load LIB...: tf.load_op_library in the CUDA venv (in order), then list the registered kernels
  "$py" - "$@" <<'EOF'
import sys
import tensorflow as tf
from tensorflow.python.framework import kernels
for path in sys.argv[1:]:
  lib = tf.load_op_library(path)
  print("loaded", path, "ops:", [n for n in dir(lib) if not n.startswith("_")][:8])
for op in ("FlattenWithSeqLenMask", "UnflattenWithSeqLenMask"):
  devs = sorted({(k.device_type) for k in kernels.get_registered_kernels_for_op(op).kernel})
  print(op, "kernels on", devs)
print("GPUs visible:", tf.config.list_physical_devices("GPU"))
EOF
}
[[ -f $build/_flatten_ops.so ]] && step load_ops load "$build/_flatten_ops.so"
# The XLA library registers kernels for the ops of _flatten_ops.so: load that first (as returnn_rc's loader does).
[[ -f $build/_flatten_ops.so && -f $build/_flatten_xla.so ]] && step load_xla load "$build/_flatten_ops.so" "$build/_flatten_xla.so"

run_cpu() {  # the CUDA build's kernels on CPU (no GPU here): flatten/unflatten vs numpy, and the gradient
  "$py" - "$build/_flatten_ops.so" <<'EOF'
import sys
import numpy as np
import tensorflow as tf
lib = tf.load_op_library(sys.argv[1])
x = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
lens = np.array([4, 0, 2], np.int32)
valid = (np.arange(4)[None, :] < lens[:, None])[:, :, None]
want = np.concatenate([x[b, :l] for b, l in enumerate(lens)])
xt = tf.constant(x)
with tf.device("/CPU:0"):
  with tf.GradientTape() as tape:
    tape.watch(xt)
    y = lib.flatten_with_seq_len_mask(xt, lens, batch_axis=0, time_axis=1, time_major=False)
  back = lib.unflatten_with_seq_len_mask(y, lens, 4, batch_axis=0, time_axis=1, time_major=False).numpy()
np.testing.assert_array_equal(y.numpy(), want)
np.testing.assert_array_equal(back, np.where(valid, x, 0))
print("CPU kernels of the CUDA build: flatten and unflatten match numpy")
EOF
}
[[ -f $build/_flatten_ops.so ]] && step run_cpu run_cpu

echo
echo "summary (full log: $log)"
for k in venv install tf_info nvcc_cu cxx_ops cxx_kernels cuda_symbols link_ops cxx_xla link_xla load_ops load_xla run_cpu; do
  [[ -n ${result[$k]:-} ]] && printf '  %-12s %s\n' "$k" "${result[$k]}"
done
