"""FlattenWithSeqLenMask under XLA vs numpy: the kernel's lowerings (XLA:CPU host call, and the row
gather: ``RETURNN_RC_XLA_HOST_CALL=0``, the lowering of non-CPU XLA devices) and the pure-TF fallback
inside an XLA cluster; batch- and time-major; on the CPU and (when present) the GPU."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import ops as rc_ops
from returnn_rc.ops import _loader
from tests.ops import op_test_util
from tests.ops.op_test_util import CPU, FALLBACK, GPU, KERNEL

_CASES = [
  ((1, 1, 3), np.float32),
  ((3, 7, 2), np.float32),
  ((5, 9, 2, 3), np.float64),
  ((17, 33, 1), np.int32),
  ((8, 16, 4), np.float16),
]


def _ref(x, lens, time_major):
  """The packed frames of ``x`` ``[B,T,...]`` with lengths clamped to ``[0,T]`` (as under XLA)."""
  t = x.shape[1]
  lens = np.clip(lens, 0, t)
  mask = np.arange(t)[None, :] < lens[:, None]
  if time_major:
    return np.transpose(x, (1, 0) + tuple(range(2, x.ndim)))[mask.T]
  return x[mask]


def _cases(seed):
  """(x, lens) pairs: per case of :data:`_CASES` valid lengths (incl. T and 0) and out-of-range ones."""
  rng = np.random.default_rng(seed)
  for shape, dtype in _CASES:
    b, t = shape[:2]
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    lens0 = rng.integers(0, t + 1, size=b)
    lens0[0], lens0[-1] = t, 0
    for lens in (lens0, rng.integers(-2, t + 3, size=b)):  # the last: out of range, clamped under XLA
      yield x, lens.astype(np.int32)


class XlaLoweringTest(op_test_util.OpTestCase):
  """The kernel's XLA lowerings (``tf.function(jit_compile=True)``) on the CPU; the GPU subclass below."""

  IMPL, DEVICE = KERNEL, CPU

  def setUp(self):
    super().setUp()
    if not os.path.exists(_loader.XLA_SO):
      self.skipTest(f"xla library not built ({_loader.XLA_SO})")

  def _run(self, host_call, x, lens, time_major):
    old = os.environ.get("RETURNN_RC_XLA_HOST_CALL")
    os.environ["RETURNN_RC_XLA_HOST_CALL"] = "1" if host_call else "0"
    try:
      fn = tf.function(lambda a, b: rc_ops.flatten_with_seq_len_mask(a, b, time_major=time_major), jit_compile=True)
      with tf.device("/GPU:0" if self.DEVICE == GPU else "/CPU:0"):
        return fn(tf.constant(x), tf.constant(lens)).numpy()
    finally:
      if old is None:
        os.environ.pop("RETURNN_RC_XLA_HOST_CALL")
      else:
        os.environ["RETURNN_RC_XLA_HOST_CALL"] = old

  @parameterized.product(host_call=[True, False], time_major=[False, True])
  def test_random(self, host_call, time_major):
    if host_call and self.DEVICE == GPU:
      self.skipTest("the host call is the XLA:CPU lowering; XLA:GPU uses the row gather")
    for x, lens in _cases(3):
      got = self._run(host_call, x, lens, time_major)
      np.testing.assert_array_equal(got, _ref(x, lens, time_major), err_msg=f"{x.shape} {x.dtype} lens={lens}")


class XlaLoweringGpuTest(XlaLoweringTest):
  IMPL, DEVICE = KERNEL, GPU


class FallbackInXlaTest(op_test_util.OpTestCase):
  """The pure-TF fallback inside an XLA cluster (``jit_scope``; lengths clamped, no run-time checks)."""

  IMPL, DEVICE = FALLBACK, CPU

  @parameterized.parameters(False, True)
  def test_random(self, time_major):
    for x, lens in list(_cases(4))[2:8]:  # 3 of the shapes (one compilation each): the formulation has no dtype code
      with tf.Graph().as_default() as graph:
        with self.scope(), tf.xla.experimental.jit_scope():
          y = rc_ops.flatten_with_seq_len_mask(
            tf.compat.v1.placeholder(x.dtype, [None] * x.ndim, name="x"),
            tf.compat.v1.placeholder(tf.int32, [None], name="lens"),
            time_major=time_major,
          )
        self.assertEmpty({op.type for op in graph.get_operations()} & set(op_test_util.CUSTOM_OP_TYPES))
        with tf.compat.v1.Session(graph=graph, config=op_test_util.session_config()) as sess:
          meta = tf.compat.v1.RunMetadata()
          got = sess.run(
            y,
            {"x:0": x, "lens:0": lens},
            run_metadata=meta,
            options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
          )
      labels = [n.timeline_label for d in meta.step_stats.dev_stats for n in d.node_stats]
      self.assertTrue(any("_XlaRun" in label for label in labels), msg="nothing ran compiled")
      np.testing.assert_array_equal(got, _ref(x, lens, time_major), err_msg=f"{x.shape} {x.dtype} lens={lens}")


class FallbackInXlaGpuTest(FallbackInXlaTest):
  IMPL, DEVICE = FALLBACK, GPU


if __name__ == "__main__":
  absltest.main()
