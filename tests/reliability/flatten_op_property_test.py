"""Property-based tests of ``rc.ops.flatten_with_seq_len_mask`` / ``unflatten_with_seq_len_mask``
against numpy: random shapes (B and T including 0, 0..2 extra dims), lengths, axis placements and
packed orders, float32 and int64. One graph with placeholders of unknown shape holds one op pair per
(batch axis, time axis, time_major) configuration; every example is only fed (no graph building).
"""

from absl.testing import absltest
from hypothesis import given, settings, strategies as st
import numpy as np
import tensorflow as tf

import returnn_rc as rc

#: (batch_dim_axis, time_dim_axis, time_major); rank needed = max axis + 1.
CONFIGS = ((0, 1, False), (0, 1, True), (1, 0, False), (1, 0, True), (0, 2, False), (2, 0, True), (2, 1, False),
           (1, 2, True))
DTYPES = (np.float32, np.int64)
NUM_FLATTEN_CASES = 400
NUM_ERROR_CASES = 100
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


class FlattenPropertyTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.graph = tf.Graph()
    with cls.graph.as_default():
      cls.lens = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
      cls.x, cls.ops = {}, {}
      for d, dtype in enumerate(DTYPES):
        cls.x[d] = x = tf.compat.v1.placeholder(tf.as_dtype(dtype), None, name=f"x{d}")  # unknown rank
        for c, (batch_axis, time_axis, time_major) in enumerate(CONFIGS):
          flat = rc.ops.flatten_with_seq_len_mask(x, cls.lens, batch_dim_axis=batch_axis, time_dim_axis=time_axis,
                                                  time_major=time_major)
          back = rc.ops.unflatten_with_seq_len_mask(flat, cls.lens, tf.shape(x)[time_axis],
                                                    batch_dim_axis=batch_axis, time_dim_axis=time_axis,
                                                    time_major=time_major)
          cls.ops[(d, c)] = (flat, back)
    cls.graph.finalize()
    cls.sess = tf.compat.v1.Session(graph=cls.graph)

  @classmethod
  def tearDownClass(cls):
    cls.sess.close()
    super().tearDownClass()

  def _data(self, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if DTYPES[dtype] == np.float32:
      return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(-2**40, 2**40, size=shape, dtype=np.int64)

  def test_flatten_and_roundtrip_match_numpy(self):
    count = [0]

    @settings(max_examples=NUM_FLATTEN_CASES, **SETTINGS)
    @given(flatten_cases())
    def check(case):
      config, shape, lens, dtype, seed = case
      batch_axis, time_axis, time_major = CONFIGS[config]
      x = self._data(shape, dtype, seed)
      flat, back = self.sess.run(self.ops[(dtype, config)], {self.x[dtype]: x, self.lens: np.asarray(lens, np.int32)})
      want = np_flatten(x, lens, batch_axis, time_axis, time_major)
      self.assertEqual(flat.dtype, want.dtype)
      self.assertEqual(flat.shape, want.shape, msg=f"{case}")
      np.testing.assert_array_equal(flat, want, err_msg=f"{case}")
      np.testing.assert_array_equal(back, np_zero_padding(x, lens, batch_axis, time_axis), err_msg=f"{case}")
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_FLATTEN_CASES)

  def test_lengths_out_of_range_raise(self):
    count = [0]

    @settings(max_examples=NUM_ERROR_CASES, **SETTINGS)
    @given(flatten_cases(bad_lens=True))
    def check(case):
      config, shape, lens, dtype, seed = case
      x = self._data(shape, dtype, seed)
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "seq_lens"):
        self.sess.run(self.ops[(dtype, config)][0], {self.x[dtype]: x, self.lens: np.asarray(lens, np.int32)})
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_ERROR_CASES)
    # the session stays usable after the errors
    out = self.sess.run(self.ops[(0, 0)][0], {self.x[0]: np.ones([2, 3], np.float32), self.lens: [1, 3]})
    self.assertEqual(out.shape, (4,))


if __name__ == "__main__":
  absltest.main()
