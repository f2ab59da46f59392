"""Benchmark 3: the loss reduction with the packing op vs masking.

    python tools/bench_reduction.py                               # full run (~30 s on 2 CPU cores)
    python tools/bench_reduction.py --shapes=32x200x256 --rounds=15
    python tools/bench_reduction.py --quick                       # smoke test (seconds)

``Loss.get_summed_loss()`` of a ``[B,T]`` and of a ``[B,T,V]`` loss (a variable; lengths uniform in
``[T/2,T]``) as the run context builds it, with ``use_flatten_frames=True`` (the custom op
``FlattenWithSeqLenMask``) vs ``False`` (``tf.where``), forward and forward+backward. A micro
benchmark of one node of the train graph, so it builds that node alone (not a train graph); the
variants run interleaved (``tools/bench_common.py``), each round calibrated to ``--round_secs``.
"""

from typing import List, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags

import returnn_rc as rc

import bench_common
from bench_common import Row

flags.adopt_module_key_flags(bench_common)
SHAPES = flags.DEFINE_list(
  "shapes",
  ["32x200x256", "64x500x512"],
  "BxTxV shapes; the [B,T] loss uses BxT, the [B,T,V] loss BxTxV; lengths uniform in [T/2,T].",
)
ROUND_SECS = flags.DEFINE_float(
  "round_secs", 0.1, "Runs per variant and round are calibrated to take about this long (1 to 100 runs)."
)


def parse_shape(spec: str) -> Tuple[int, int, int]:
  """``"32x200x256"`` → (B, T, V); ``ValueError`` otherwise."""
  try:
    b, t, v = (int(p) for p in spec.lower().split("x"))
  except ValueError:
    raise ValueError(f"--shapes: expected BxTxV (e.g. 32x200x256), got {spec!r}") from None
  if min(b, t, v) < 1:
    raise ValueError(f"--shapes: sizes must be >= 1, got {spec!r}")
  return b, t, v


def reduction_fetches(x: tf.Variable, lens: tf.Tensor, *, flatten: bool) -> Tuple[tf.Tensor, List]:
  """The summed loss of ``x`` ``[B,T]`` or ``[B,T,V]`` (valid frames ``lens`` ``[B]``) as the run
  context builds it; returns (forward fetch, forward+backward fetches)."""
  time_dim = rc.Dim(lens, name="time")
  dims = [rc.batch_dim, time_dim] + ([rc.Dim(int(x.shape[2]), name="feat")] if x.shape.rank == 3 else [])
  with rc.init_train_step_run_ctx(train_flag=True) as ctx:
    ctx.mark_as_loss(rc.Tensor("x", dims, "float32", raw_tensor=x.read_value()), "loss", use_flatten_frames=flatten)
    summed = ctx.losses["loss"].get_summed_loss().get_raw()
  grad = tf.gradients(summed, x)[0]
  return summed, [summed, grad.op]


def measure_shape(shape: Tuple[int, int, int], rng: np.random.Generator) -> List[Row]:
  """The rows of one BxTxV: flatten op vs masked, [B,T] and [B,T,V], fwd and fwd+bwd."""
  b, t, v = shape
  graph = tf.Graph()
  fetches = {}
  with graph.as_default():
    lens = tf.constant(rng.integers(t // 2, t + 1, size=b).astype(np.int32))
    for rank, var_shape in (("[B,T]", [b, t]), ("[B,T,V]", [b, t, v])):
      x = tf.compat.v1.Variable(rng.standard_normal(var_shape).astype(np.float32), name="x")
      for flatten in (True, False):
        fwd, both = reduction_fetches(x, lens, flatten=flatten)
        fetches[(rank, flatten, "fwd")] = fwd
        fetches[(rank, flatten, "fwd+bwd")] = both
    init = tf.compat.v1.global_variables_initializer()
  graph.finalize()
  rows = []
  ms = bench_common.ms
  with tf.compat.v1.Session(graph=graph) as session:
    session.run(init)
    for rank, size in (("[B,T]", f"{b}x{t}"), ("[B,T,V]", f"{b}x{t}x{v}")):
      for kind in ("fwd", "fwd+bwd"):
        pair = {name: fetches[(rank, name == "op", kind)] for name in ("op", "masked")}
        repeats = bench_common.calibrated_repeats(lambda f=pair["masked"]: session.run(f), ROUND_SECS.value)
        times = bench_common.interleaved(
          {name: (lambda f=f, n=repeats: bench_common.run_steps(session, f, {}, n)) for name, f in pair.items()},
          bench_common.ROUNDS.value,
        )
        rows.append(
          Row(
            f"3 {rank} {size} {kind}",
            f"loss reduction {rank} {size} {kind}: flatten op / masked",
            f"{ms(bench_common.median(times['op']))} / {ms(bench_common.median(times['masked']))}",
            bench_common.paired_ratio(times, "op", "masked"),
          )
        )
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with bench_common.quick(shapes=["4x16x8"], round_secs=0.0):
    try:
      shapes = [parse_shape(spec) for spec in SHAPES.value]
    except ValueError as exc:
      raise app.UsageError(str(exc)) from None
    bench_common.run(
      lambda: [row for shape in shapes for row in measure_shape(shape, np.random.default_rng(bench_common.SEED.value))]
    )


if __name__ == "__main__":
  app.run(main)
