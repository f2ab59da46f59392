"""Subprocess driver for tests/ops/flatten_xla_load_test.py (one scenario per process).

Usage (from the repository root): python -m tests.ops.flatten_subprocess_main SCENARIO
Prints "SCENARIO OK" on success.
"""

import ctypes
import sys

import numpy as np
import tensorflow as tf

from returnn_rc import ops as rc_ops
from returnn_rc.ops import _loader

X = np.random.default_rng(0).standard_normal([4, 6, 3]).astype(np.float32)
LENS = np.array([6, 2, 0, 5], np.int32)
MASK = np.arange(6)[None, :] < LENS[:, None]


def run_mode(mode: str, time_major: bool = False):
  """Flatten + gradient of a train-step like loss in graph mode under `mode`; checks numbers."""
  with tf.Graph().as_default():
    x = tf.compat.v1.placeholder(tf.float32, [4, 6, 3])
    lens = tf.compat.v1.placeholder(tf.int32, [4])

    def step(x, lens):
      y = rc_ops.flatten_with_seq_len_mask(x, lens, time_major=time_major)
      dx = tf.gradients(tf.reduce_sum(y * y), x)[0]
      return tf.reduce_sum(y, axis=0), y[:3], dx

    if mode == "jit_compile":
      fetches = tf.function(jit_compile=True)(step)(x, lens)
    elif mode == "jit_scope":
      with tf.xla.experimental.jit_scope():
        fetches = step(x, lens)
    else:
      fetches = step(x, lens)
    config = tf.compat.v1.ConfigProto()
    if mode == "auto":
      config.graph_options.optimizer_options.global_jit_level = tf.compat.v1.OptimizerOptions.ON_2
    with tf.compat.v1.Session(config=config) as sess:
      meta = tf.compat.v1.RunMetadata()
      out = sess.run(
        fetches,
        {x: X, lens: LENS},
        options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
        run_metadata=meta,
      )
  xt = np.transpose(X, (1, 0, 2)) if time_major else X
  ref = xt[MASK.T] if time_major else xt[MASK]
  np.testing.assert_allclose(out[0], ref.sum(0), rtol=1e-5)
  np.testing.assert_allclose(out[1], ref[:3])
  np.testing.assert_allclose(out[2], 2 * X * MASK[..., None])
  executed = [n.timeline_label for d in meta.step_stats.dev_stats for n in d.node_stats]
  if mode in ("jit_scope", "auto"):
    assert any("_XlaRun" in t for t in executed), executed
    # Our op ran inside the XLA cluster, not as a separate TF kernel.
    assert not any(t.split("=")[-1].strip().startswith("FlattenWithSeqLenMask") for t in executed), executed


def late_registrations() -> int:
  return ctypes.CDLL(_loader.XLA_SO).returnn_rc_flatten_xla_late_registrations()


def main(scenario: str):
  if scenario == "load_first":
    _loader.core()  # before any TF op ran
  elif scenario == "after_ops":
    tf.constant(1.0) + 1.0  # eager op first
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
      sess.run(tf.reduce_sum(tf.ones([3])))
  elif scenario == "after_xla":
    tf.function(jit_compile=True)(lambda a: tf.reduce_sum(a * 2.0))(tf.ones([3]))
  if scenario in ("load_first", "after_ops", "after_xla"):
    assert _loader.xla_kernels_available(), _loader.xla_unavailable_reason()
    print("late registrations:", late_registrations())
    for mode in ("none", "jit_compile", "jit_scope", "auto"):
      run_mode(mode)
    run_mode("jit_compile", time_major=True)
  elif scenario == "no_xla_lib":  # RETURNN_RC_OPS_NO_XLA_LIB=1: pure-TF formulation inside XLA
    assert not _loader.xla_kernels_available()
    run_mode("jit_scope")
    run_mode("none")
  elif scenario == "fallback":  # RETURNN_RC_OPS_FALLBACK=1
    assert rc_ops.use_fallback()
    for time_major in (False, True):
      run_mode("none", time_major=time_major)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as sess:
      lens = tf.compat.v1.placeholder(tf.int32, [4])
      y = rc_ops.flatten_with_seq_len_mask(tf.constant(X), lens)
      back = rc_ops.unflatten_with_seq_len_mask(y, lens, 6)
      assert "FlattenWithSeqLenMask" not in [op.type for op in graph.get_operations()]
      np.testing.assert_array_equal(sess.run(back, {lens: LENS}), X * MASK[..., None])
      try:
        sess.run(y, {lens: [7, 1, 1, 1]})
        raise AssertionError("expected InvalidArgumentError")
      except tf.errors.InvalidArgumentError:
        pass
      sess.run(y, {lens: LENS})  # still usable
  else:
    raise ValueError(scenario)
  print(scenario, "OK")


if __name__ == "__main__":
  main(sys.argv[1])
