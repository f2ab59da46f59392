"""Benchmark of FlattenWithSeqLenMask vs tf.boolean_mask / tf.gather_nd(tf.where) / numpy copy.

    python tools/bench_flatten.py [--repeats=10] [--shapes=32x1000x512,256x500x64] [--nobfc]

Graph mode, one process; x float32 [B,T,F] in a variable, seq_lens uniform in [T/2, T].
Times (median of --repeats runs): forward, forward+backward (d sum(y) / dx), with and without
XLA (jit_scope); numpy: np.copyto of the packed bytes into a reused buffer (numpy_copy) and into a
fresh np.empty buffer each run (numpy_copy_fresh; what an op output is: a new allocation).  Prints ratios.
"ours_row0" fetches only sum(y[:1]): the packed output stays inside the graph / XLA cluster, so it
shows the op without the cost of handing a dynamic-shaped XLA output back to TF (for ours with the
XLA:CPU host call the copy cannot be dropped; gather-based lowerings could drop work there).

``--bfc`` (default) / ``--nobfc``: TF's BFC CPU allocator or TF's default one. TF's default CPU
allocator returns large buffers to the OS: every op output then pays page faults (~0.5 ms/MB here),
which hides the kernels. The choice sets ``TF_CPU_ALLOCATOR_USE_BFC`` before TF creates its CPU
device; the allocator actually in use is printed (and a mismatch is an error).
"""

import os
import time

import numpy as np
from absl import app, flags

import graph_names

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=false")
graph_names.ensure_repo_root_on_path()

import tensorflow as tf  # noqa: E402

from returnn_rc import ops as rc_ops  # noqa: E402

_SHAPES = flags.DEFINE_list(
  "shapes", ["32x1000x512", "256x500x64"], "Comma-separated B x T x F shapes, each a positive int, e.g. 32x1000x512."
)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per measurement (median), >= 1.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (>= 0).", lower_bound=0)
_BFC = flags.DEFINE_bool(
  "bfc", True, "Use TF's BFC CPU allocator (TF_CPU_ALLOCATOR_USE_BFC=true); --nobfc: TF's default CPU allocator."
)

METHODS = {
  "ours": lambda x, lens, mask: rc_ops.flatten_with_seq_len_mask(x, lens),
  "boolean_mask": lambda x, lens, mask: tf.boolean_mask(x, mask),
  "gather_nd_where": lambda x, lens, mask: tf.gather_nd(x, tf.where(mask)),
  "ours_row0": lambda x, lens, mask: rc_ops.flatten_with_seq_len_mask(x, lens)[:1],
}
NO_BWD = {"ours_row0"}


def parse_shape(spec: str):
  """``"BxTxF"`` → ``(B, T, F)``; ``ValueError`` naming the spec unless three positive ints."""
  parts = spec.split("x")
  try:
    shape = tuple(int(p) for p in parts)
  except ValueError:
    shape = ()
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"--shapes: {spec!r} is not B x T x F with three positive ints (e.g. 32x1000x512)")
  return shape


def set_cpu_allocator(bfc: bool) -> None:
  """Sets ``TF_CPU_ALLOCATOR_USE_BFC``; read by TF when it creates the CPU device (the first session)."""
  os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true" if bfc else "false"


def cpu_allocator_is_bfc() -> bool:
  """Whether the CPU device's allocator is TF's BFC allocator (only it keeps statistics)."""
  try:
    tf.config.experimental.get_memory_info("CPU:0")
    return True
  except ValueError:
    return False


def timeit(fn, repeats):
  fn()
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def bench_shape(shape, rng, repeats):
  b, t, f = shape
  lens_val = rng.integers(t // 2, t + 1, size=b).astype(np.int32)
  n = int(lens_val.sum())
  res = {}
  with tf.Graph().as_default():
    x = tf.compat.v1.Variable(tf.random.uniform([b, t, f], seed=1), name="x")
    lens = tf.constant(lens_val)
    mask = tf.sequence_mask(lens, t)
    fetches = {}
    for xla in (False, True):
      for name, fn in METHODS.items():
        scope = tf.xla.experimental.jit_scope() if xla else _null()
        with scope:
          y = fn(x.read_value(), lens, mask)
          dx = tf.gradients(tf.reduce_sum(y), x)[0] if name not in NO_BWD else None
          if isinstance(dx, tf.IndexedSlices):
            dx = tf.convert_to_tensor(dx)
          if name in NO_BWD:
            y = tf.reduce_sum(y)
        # Fetch the tensors (zero-copy to numpy): fetching only the op lets XLA drop the work.
        fetches[(name, xla)] = (y, dx)
    with tf.compat.v1.Session() as sess:
      sess.run(x.initializer)
      for (name, xla), (y_op, dx_op) in fetches.items():
        try:
          res[(name, xla, "fwd")] = timeit(lambda: sess.run(y_op), repeats)  # noqa: B023 (called right here)
          if dx_op is not None:
            res[(name, xla, "fwd+bwd")] = timeit(lambda: sess.run(dx_op), repeats)  # noqa: B023
        except tf.errors.OpError as exc:  # e.g. not compilable
          print(f"  {name} xla={xla}: failed: {type(exc).__name__}: {str(exc)[:200]}")
  src = rng.standard_normal(n * f).astype(np.float32)
  dst = np.empty_like(src)
  res[("numpy_copy", False, "fwd")] = timeit(lambda: np.copyto(dst, src), repeats)
  res[("numpy_copy_fresh", False, "fwd")] = timeit(lambda: np.copyto(np.empty_like(src), src), repeats)
  return res, n * f * 4


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *args):
    return False


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    shapes = [parse_shape(spec) for spec in _SHAPES.value]
  except ValueError as exc:
    raise app.UsageError(str(exc)) from None
  if not shapes:
    raise app.UsageError("--shapes is empty")
  set_cpu_allocator(_BFC.value)
  rng = np.random.default_rng(_SEED.value)
  with tf.Graph().as_default(), tf.compat.v1.Session() as sess:  # creates the CPU device (and its allocator)
    sess.run(tf.constant(0))
  bfc = cpu_allocator_is_bfc()
  if bfc != _BFC.value:
    raise RuntimeError(
      f"--{'' if _BFC.value else 'no'}bfc was not honoured: TF created its CPU device before "
      f"main() set TF_CPU_ALLOCATOR_USE_BFC"
    )
  print(
    f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, xla kernels: {rc_ops.xla_kernels_available()}, "
    f"TF_CPU_ALLOCATOR_USE_BFC={os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')}, CPU allocator in use: "
    f"{'BFC' if bfc else 'default'}"
  )
  for shape in shapes:
    start = time.time()
    res, nbytes = bench_shape(shape, rng, _REPEATS.value)
    print(f"\nx float32 {list(shape)}, packed {nbytes / 1e6:.1f} MB  ({time.time() - start:.0f} s)")
    print(f"  {'method':<18}{'xla':<6}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd GB/s':>10}")
    for (name, xla, kind), sec in sorted(res.items()):
      if kind != "fwd":
        continue
      both = res.get((name, xla, "fwd+bwd"))
      print(
        f"  {name:<18}{str(xla):<6}{sec * 1e3:>10.2f}{(both * 1e3 if both else float('nan')):>12.2f}"
        f"{nbytes / sec / 1e9:>10.2f}"
      )
    ours, bm, cp = res[("ours", False, "fwd")], res[("boolean_mask", False, "fwd")], res[("numpy_copy", False, "fwd")]
    print(f"  ratio fwd boolean_mask/ours: {bm / ours:.2f}x (target >= 1.3)")
    cpf = res[("numpy_copy_fresh", False, "fwd")]
    print(
      f"  ratio fwd copy-bandwidth ours/numpy: {cp / ours * 100:.0f}% (target >= 85%; "
      f"vs fresh-buffer numpy copy: {cpf / ours * 100:.0f}%)"
    )
    fb_ours, fb_bm = res[("ours", False, "fwd+bwd")], res[("boolean_mask", False, "fwd+bwd")]
    print(f"  ratio fwd+bwd boolean_mask/ours: {fb_bm / fb_ours:.2f}x (target >= 3)")
    for kind in ("fwd", "fwd+bwd"):
      if ("ours", True, kind) in res:
        print(
          f"  ratio {kind} ours no-xla/xla: {res[('ours', False, kind)] / res[('ours', True, kind)]:.2f}x "
          f"(target >= 1.0)"
        )
    if ("ours_row0", True, "fwd") in res:
      print(
        f"  ratio fwd, output kept in the graph (ours_row0) no-xla/xla: "
        f"{res[('ours_row0', False, 'fwd')] / res[('ours_row0', True, 'fwd')]:.2f}x"
      )


if __name__ == "__main__":
  app.run(main)
