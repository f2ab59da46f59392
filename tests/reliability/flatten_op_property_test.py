"""Property-based tests of ``rc.ops.flatten_with_seq_len_mask`` / ``unflatten_with_seq_len_mask``
against numpy: random shapes (B and T including 0, 0..2 extra dims), lengths, axis placements and
packed orders, float32 and int64; on the kernel and on the pure-TF fallback, on the CPU and (when
present) the GPU (``tests/ops/op_test_util.py``). One graph holds one op pair per (batch axis, time
axis, time_major) configuration (and, for the fallback, which needs a known rank, per rank) on
placeholders of unknown shape (kernel: also of unknown rank); every example is only fed (no graph
building).
"""

import unittest

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

import returnn_rc as rc
from tests.ops import op_test_util
from tests.ops.op_test_util import CPU, FALLBACK, GPU, KERNEL

#: (batch_dim_axis, time_dim_axis, time_major); rank needed = max axis + 1.
CONFIGS = (
  (0, 1, False),
  (0, 1, True),
  (1, 0, False),
  (1, 0, True),
  (0, 2, False),
  (2, 0, True),
  (2, 1, False),
  (1, 2, True),
)
DTYPES = (np.float32, np.int64)
#: Examples per implementation.
NUM_FLATTEN_CASES = {KERNEL: 400, FALLBACK: 150}
NUM_ERROR_CASES = {KERNEL: 100, FALLBACK: 40}
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True)


def np_flatten(x, lens, batch_axis, time_axis, time_major):
  """Reference: ``[B,T,...]`` frames (axes moved to the front) in b-then-t or t-then-b order."""
  xt = np.moveaxis(x, (batch_axis, time_axis), (0, 1))
  size_b, size_t = xt.shape[:2]
  if time_major:
    frames = [xt[b, t] for t in range(size_t) for b in range(size_b) if t < lens[b]]
  else:
    frames = [xt[b, t] for b in range(size_b) for t in range(size_t) if t < lens[b]]
  return np.stack(frames) if frames else np.zeros((0,) + xt.shape[2:], x.dtype)


def np_zero_padding(x, lens, batch_axis, time_axis):
  t = np.arange(x.shape[time_axis])
  mask = t[None, :] < np.asarray(lens)[:, None]  # [B,T]
  if batch_axis > time_axis:
    mask = mask.T
  shape = [1] * x.ndim
  shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
  return np.where(mask.reshape(shape), x, np.zeros_like(x))


@st.composite
def flatten_cases(draw, *, bad_lens=False):
  config = draw(st.integers(0, len(CONFIGS) - 1))
  batch_axis, time_axis, _ = CONFIGS[config]
  rank = max(batch_axis, time_axis) + 1 + draw(st.integers(0, 1))
  size_b = draw(st.integers(0 if not bad_lens else 1, 4))
  size_t = draw(st.integers(0, 6))
  shape = [draw(st.integers(0, 3)) for _ in range(rank)]
  shape[batch_axis], shape[time_axis] = size_b, size_t
  lens = draw(st.lists(st.integers(0, size_t), min_size=size_b, max_size=size_b))
  if bad_lens:  # one length out of [0, T]
    idx = draw(st.integers(0, size_b - 1))
    lens[idx] = draw(st.sampled_from([size_t + 1, size_t + 7, -1]))
  dtype = draw(st.integers(0, len(DTYPES) - 1))
  seed = draw(st.integers(0, 2**31 - 1))
  return config, shape, lens, dtype, seed


def _ranks(config: int):
  """The ranks of ``x`` that :func:`flatten_cases` draws for ``config``."""
  batch_axis, time_axis, _ = CONFIGS[config]
  low = max(batch_axis, time_axis) + 1
  return (low, low + 1)


class FlattenPropertyTest(absltest.TestCase):
  """The kernel on the CPU; the subclasses below run every test on the other variants."""

  IMPL, DEVICE = KERNEL, CPU

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    reason = op_test_util.unavailable_reason(cls.IMPL, cls.DEVICE)
    if reason:
      raise unittest.SkipTest(f"{cls.IMPL} on {cls.DEVICE}: {reason}")
    cls.graph = tf.Graph()
    with cls.graph.as_default(), op_test_util.scope(cls.IMPL, cls.DEVICE):
      cls.lens = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
      cls.x, cls.ops = {}, {}
      for d, dtype in enumerate(DTYPES):
        for c, (batch_axis, time_axis, time_major) in enumerate(CONFIGS):
          for rank in (None,) if cls.IMPL == KERNEL else _ranks(c):
            if (d, rank) not in cls.x:
              shape = None if rank is None else [None] * rank
              cls.x[(d, rank)] = tf.compat.v1.placeholder(tf.as_dtype(dtype), shape, name=f"x{d}_{rank}")
            x = cls.x[(d, rank)]
            flat = rc.ops.flatten_with_seq_len_mask(
              x, cls.lens, batch_dim_axis=batch_axis, time_dim_axis=time_axis, time_major=time_major
            )
            back = rc.ops.unflatten_with_seq_len_mask(
              flat,
              cls.lens,
              tf.shape(x)[time_axis],
              batch_dim_axis=batch_axis,
              time_dim_axis=time_axis,
              time_major=time_major,
            )
            cls.ops[(d, c, rank)] = (flat, back)
    cls.graph.finalize()
    cls.sess = tf.compat.v1.Session(graph=cls.graph, config=op_test_util.session_config())

  @classmethod
  def tearDownClass(cls):
    cls.sess.close()
    super().tearDownClass()

  def _feed_and_ops(self, config, dtype, x):
    """The op pair of the case and the feed dict of ``x`` (lengths are fed by the caller)."""
    rank = None if self.IMPL == KERNEL else x.ndim
    return self.ops[(dtype, config, rank)], {self.x[(dtype, rank)]: x}

  def _data(self, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if DTYPES[dtype] == np.float32:
      return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(-(2**40), 2**40, size=shape, dtype=np.int64)

  def test_flatten_and_roundtrip_match_numpy(self):
    count = [0]

    @settings(max_examples=NUM_FLATTEN_CASES[self.IMPL], **SETTINGS)
    @given(flatten_cases())
    def check(case):
      config, shape, lens, dtype, seed = case
      batch_axis, time_axis, time_major = CONFIGS[config]
      x = self._data(shape, dtype, seed)
      ops, feed = self._feed_and_ops(config, dtype, x)
      flat, back = self.sess.run(ops, {**feed, self.lens: np.asarray(lens, np.int32)})
      want = np_flatten(x, lens, batch_axis, time_axis, time_major)
      self.assertEqual(flat.dtype, want.dtype)
      self.assertEqual(flat.shape, want.shape, msg=f"{case}")
      np.testing.assert_array_equal(flat, want, err_msg=f"{case}")
      np.testing.assert_array_equal(back, np_zero_padding(x, lens, batch_axis, time_axis), err_msg=f"{case}")
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_FLATTEN_CASES[self.IMPL])

  def test_lengths_out_of_range_raise(self):
    count = [0]

    @settings(max_examples=NUM_ERROR_CASES[self.IMPL], **SETTINGS)
    @given(flatten_cases(bad_lens=True))
    def check(case):
      config, shape, lens, dtype, seed = case
      x = self._data(shape, dtype, seed)
      ops, feed = self._feed_and_ops(config, dtype, x)
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "seq_lens"):
        self.sess.run(ops[0], {**feed, self.lens: np.asarray(lens, np.int32)})
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_ERROR_CASES[self.IMPL])
    # the session stays usable after the errors
    ops, feed = self._feed_and_ops(0, 0, np.ones([2, 3], np.float32))
    out = self.sess.run(ops[0], {**feed, self.lens: [1, 3]})
    self.assertEqual(out.shape, (4,))


class FlattenPropertyFallbackTest(FlattenPropertyTest):
  IMPL, DEVICE = FALLBACK, CPU


class FlattenPropertyGpuTest(FlattenPropertyTest):
  IMPL, DEVICE = KERNEL, GPU


class FlattenPropertyFallbackGpuTest(FlattenPropertyTest):
  IMPL, DEVICE = FALLBACK, GPU


if __name__ == "__main__":
  absltest.main()
