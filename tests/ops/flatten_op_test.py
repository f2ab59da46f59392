"""Tests of returnn_rc.ops.flatten_with_seq_len_mask / unflatten_with_seq_len_mask (graph mode), on the
kernel and on the pure-TF fallback, on the CPU and (when present) the GPU (see ``op_test_util``)."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import ops as rc_ops
from tests.ops import op_test_util
from tests.ops.op_test_util import CPU, FALLBACK, GPU, KERNEL

DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64]
#: Fuzz graphs (of 20 random cases each) per implementation; the fallback is slower to build.
FUZZ_GRAPHS = {KERNEL: 50, FALLBACK: 2}


def np_flatten(x, lens, batch_axis, time_axis, time_major=False):
  """Reference: boolean mask after moving (batch, time) or (time, batch) to the front."""
  rank = x.ndim
  batch_axis, time_axis = batch_axis % rank, time_axis % rank
  front = [time_axis, batch_axis] if time_major else [batch_axis, time_axis]
  xt = np.transpose(x, front + [i for i in range(rank) if i not in front])
  mask = np.arange(x.shape[time_axis])[None, :] < np.asarray(lens)[:, None]  # [B,T]
  return xt[mask.T if time_major else mask]


def np_mask_padded(x, lens, batch_axis, time_axis):
  """``x`` with zeros in the padded frames."""
  mask = np.arange(x.shape[time_axis])[None, :] < np.asarray(lens)[:, None]  # [B,T]
  shape = [1] * x.ndim
  shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
  if batch_axis % x.ndim > time_axis % x.ndim:
    mask = mask.T
  return np.where(mask.reshape(shape), x, np.zeros_like(x))


def random_array(rng, shape, dtype):
  if dtype.is_integer:
    return rng.integers(-1000, 1000, size=shape).astype(dtype.as_numpy_dtype)
  return rng.standard_normal(shape).astype(np.float32).astype(dtype.as_numpy_dtype)


class FlattenOpTest(op_test_util.OpTestCase):
  """The kernel on the CPU; the subclasses below run every test on the other variants."""

  IMPL, DEVICE = KERNEL, CPU

  @parameterized.product(
    dtype=DTYPES,
    len_dtype=[tf.int32, tf.int64],
    layout=[
      ((3, 7, 4), 0, 1),
      ((7, 3, 4), 1, 0),
      ((2, 3, 7, 5), 1, 2),
      ((2, 7, 5, 3), -1, 1),
      ((3, 7), 0, 1),
      ((4, 3, 2, 7), 1, -1),
    ],
    time_major=[False, True],
  )
  def test_matches_reference(self, dtype, len_dtype, layout, time_major):
    shape, batch_axis, time_axis = layout
    rng = np.random.default_rng(0)
    x = random_array(rng, shape, dtype)
    batch, time_ = shape[batch_axis], shape[time_axis]
    lens = rng.integers(0, time_ + 1, size=batch)
    lens[0] = time_

    def graph():
      seq_lens = tf.constant(lens, dtype=len_dtype)
      y = rc_ops.flatten_with_seq_len_mask(
        tf.constant(x), seq_lens, batch_dim_axis=batch_axis, time_dim_axis=time_axis, time_major=time_major
      )
      back = rc_ops.unflatten_with_seq_len_mask(
        y, seq_lens, time_, batch_dim_axis=batch_axis, time_dim_axis=time_axis, time_major=time_major
      )
      return y, back

    (y, back), _ = self.run_graph(graph)
    ref = np_flatten(x, lens, batch_axis, time_axis, time_major)
    self.assertEqual(y.dtype, ref.dtype)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(back, np_mask_padded(x, lens, batch_axis, time_axis))

  @parameterized.parameters(tf.float32, tf.int64)
  def test_matches_boolean_mask(self, dtype):
    rng = np.random.default_rng(1)
    x = random_array(rng, (5, 9, 3), dtype)
    lens = np.array([9, 0, 4, 1, 7])

    def graph():
      xt = tf.constant(x)
      mask = tf.sequence_mask(lens, 9)
      return (rc_ops.flatten_with_seq_len_mask(xt, tf.constant(lens)), tf.boolean_mask(xt, mask))

    (ours, theirs), _ = self.run_graph(graph)
    np.testing.assert_array_equal(ours, theirs)

  def test_graph_nodes_and_static_shape(self):
    with tf.Graph().as_default() as graph, self.scope():
      x = tf.compat.v1.placeholder(tf.float32, [None, None, 5, 2])
      y = rc_ops.flatten_with_seq_len_mask(x, tf.compat.v1.placeholder(tf.int32, [None]))
      self.assertEqual(y.shape.as_list(), [None, 5, 2])
      z = rc_ops.flatten_with_seq_len_mask(tf.zeros([3, 4, 6]), tf.constant([1, 4, 2]))
      z2 = rc_ops.flatten_with_seq_len_mask(
        tf.zeros([4, 3, 6]), tf.constant([1, 3, 2]), batch_dim_axis=1, time_dim_axis=0
      )
      u = rc_ops.unflatten_with_seq_len_mask(y, tf.constant([1, 2]), 6)
      self.assertEqual(u.shape.as_list()[1:], [6, 5, 2])
      op_types = {op.type for op in graph.get_operations()}
    if self.IMPL == KERNEL:
      self.assertEqual(z.shape.as_list(), [7, 6])  # computable from constant lengths
      self.assertEqual(z2.shape.as_list(), [6, 6])
      self.assertEqual(u.shape.as_list(), [2, 6, 5, 2])
      self.assertContainsSubset(op_test_util.CUSTOM_OP_TYPES, op_types)
    else:  # core TF ops only: what a SavedModel serves
      self.assertEqual(z.shape.as_list()[1:], [6])
      self.assertEqual(z2.shape.as_list()[1:], [6])
      self.assertEmpty(op_types & set(op_test_util.CUSTOM_OP_TYPES))

  @parameterized.parameters(
    (
      (0, 5, 3),
      [],
    ),
    ((3, 0, 2), [0, 0, 0]),
    ((2, 4, 0), [4, 1]),
    ((0, 0), []),
  )
  def test_empty(self, shape, lens):
    x = np.zeros(shape, np.float32)

    def graph():
      xt = tf.constant(x)
      seq_lens = tf.constant(lens, tf.int32, shape=[shape[0]])
      y = rc_ops.flatten_with_seq_len_mask(xt, seq_lens)
      back = rc_ops.unflatten_with_seq_len_mask(y, seq_lens, shape[1])
      grad = tf.gradients(tf.reduce_sum(y), xt)[0]
      return y, back, tf.convert_to_tensor(grad)

    (y, back, grad), _ = self.run_graph(graph)
    self.assertEqual(y.shape, (sum(lens),) + shape[2:])
    self.assertEqual(back.shape, shape)
    self.assertEqual(grad.shape, shape)

  @parameterized.parameters((0, 1, False), (1, 0, True), (2, 0, False), (0, 2, True))
  def test_gradients_first_and_second_order(self, batch_axis, time_axis, time_major):
    rng = np.random.default_rng(2)
    shape = [2, 2, 2]
    shape[batch_axis], shape[time_axis] = 3, 4
    x_val = rng.standard_normal(shape)
    lens = [4, 1, 2]
    n = sum(lens)
    kw = dict(batch_dim_axis=batch_axis, time_dim_axis=time_axis, time_major=time_major)
    with tf.Graph().as_default(), tf.compat.v1.Session(config=op_test_util.session_config()):
      with self.scope():
        x = tf.constant(x_val)
        seq_lens = tf.constant(lens)
        y = rc_ops.flatten_with_seq_len_mask(x, seq_lens, **kw)
        u = tf.constant(rng.standard_normal([n, 2]))
        dx = tf.convert_to_tensor(tf.gradients(y, x, grad_ys=u)[0])
        ddu = tf.gradients(dx, u, grad_ys=tf.ones_like(dx))[0]
        grad_lens = tf.gradients(y, seq_lens, grad_ys=u)[0]
      err = tf.compat.v1.test.compute_gradient_error(x, shape, y, [n, 2], x_init_value=x_val)
      self.assertLess(err, 1e-8)
      # Second order: d/du of (d(y.u)/dx) is again exact.
      err2 = tf.compat.v1.test.compute_gradient_error(u, [n, 2], dx, shape, x_init_value=u.eval())
      self.assertLess(err2, 1e-8)
      self.assertIsNone(grad_lens)
      if self.IMPL == KERNEL:  # the gradients are the op pair itself
        self.assertEqual(dx.op.type, "UnflattenWithSeqLenMask")
        self.assertEqual(tf.convert_to_tensor(ddu).op.type, "FlattenWithSeqLenMask")

  def test_runtime_errors_and_session_usable(self):
    if self.IMPL == KERNEL:  # the kernel names the value
      msgs = [
        r"seq_lens\[2\] = 12 is out of range \[0, 10\]",
        r"seq_lens\[1\] = -1 is out of range \[0, 10\]",
        r"seq_lens has 2 entries but the batch dim",
        r"seq_lens must have rank 1",
        r"packed has 10 frames but sum\(seq_lens\) = 12",
      ]
    else:  # the fallback's run-time asserts
      msgs = [
        r"seq_lens out of range \[0, T\]",
        r"seq_lens out of range \[0, T\]",
        r"seq_lens size does not match the batch dim",
        r"is not compatible with expected shape \[\?\]",
        r"packed frames do not match sum\(seq_lens\)",
      ]
    with tf.Graph().as_default(), tf.compat.v1.Session(config=op_test_util.session_config()) as sess:
      with self.scope():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, 2])
        lens = tf.compat.v1.placeholder(tf.int32, None)
        y = rc_ops.flatten_with_seq_len_mask(x, lens)
        u = rc_ops.unflatten_with_seq_len_mask(x[0], lens, 3)
      xv = np.ones([4, 10, 2], np.float32)
      cases = [(y, [3, 1, 12, 0]), (y, [3, -1, 2, 0]), (y, [3, 1]), (y, [[1, 2, 3, 4]]), (u, [3, 3, 3, 3])]
      for (fetch, lens_val), msg in zip(cases, msgs):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, msg):
          sess.run(fetch, {x: xv, lens: lens_val})
        out = sess.run(y, {x: xv, lens: [1, 2, 3, 4]})  # the session stays usable
        self.assertEqual(out.shape, (10, 2))
      with self.scope():
        unknown_rank = tf.compat.v1.placeholder_with_default(tf.zeros([3]), shape=None)
        if self.IMPL == FALLBACK:
          with self.assertRaisesRegex(ValueError, "the pure-TF fallback needs x with known rank"):
            rc_ops.flatten_with_seq_len_mask(unknown_rank, lens)
          return
        rank_1 = rc_ops.flatten_with_seq_len_mask(unknown_rank, lens)
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "x must have rank >= 2"):
        sess.run(rank_1, {lens: [1, 1, 1]})

  def test_build_time_errors(self):
    with tf.Graph().as_default(), self.scope():
      x = tf.zeros([4, 10, 2])
      with self.assertRaisesRegex(TypeError, "seq_lens must be int32 or int64, got float32"):
        rc_ops.flatten_with_seq_len_mask(x, tf.zeros([4]))
      with self.assertRaisesRegex(TypeError, "x has dtype bool"):
        rc_ops.flatten_with_seq_len_mask(tf.zeros([4, 10], tf.bool), tf.zeros([4], tf.int32))
      with self.assertRaisesRegex(ValueError, "x must have rank >= 2"):
        rc_ops.flatten_with_seq_len_mask(tf.zeros([4]), tf.zeros([4], tf.int32))
      with self.assertRaisesRegex(ValueError, "seq_lens must have rank 1"):
        rc_ops.flatten_with_seq_len_mask(x, tf.zeros([4, 1], tf.int32))
      with self.assertRaisesRegex(ValueError, r"batch mismatch: x.shape\[0\] = 4 but seq_lens has 3"):
        rc_ops.flatten_with_seq_len_mask(x, tf.zeros([3], tf.int32))
      with self.assertRaisesRegex(ValueError, "must differ, both are 1"):
        rc_ops.flatten_with_seq_len_mask(x, tf.zeros([4], tf.int32), batch_dim_axis=1, time_dim_axis=-2)
      with self.assertRaisesRegex(ValueError, "time_dim_axis = 3 is out of range"):
        rc_ops.flatten_with_seq_len_mask(x, tf.zeros([4], tf.int32), time_dim_axis=3)
      with self.assertRaisesRegex(TypeError, "max_time must be an integer"):
        rc_ops.unflatten_with_seq_len_mask(tf.zeros([3, 2]), tf.constant([1, 2]), 2.0)

  def test_constant_lengths_out_of_range(self):
    """The kernel's shape function rejects them at build time; the fallback at run time."""
    if self.IMPL == KERNEL:
      with tf.Graph().as_default(), self.scope():
        with self.assertRaisesRegex(ValueError, r"seq_lens\[0\] = 11 is out of range \[0, 10\]"):
          rc_ops.flatten_with_seq_len_mask(tf.zeros([4, 10, 2]), tf.constant([11, 1, 1, 1]))
      return
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"seq_lens out of range \[0, T\]"):
      self.run_graph(lambda: rc_ops.flatten_with_seq_len_mask(tf.zeros([4, 10, 2]), tf.constant([11, 1, 1, 1])))

  def test_fuzz(self):
    """Random cases (shapes, axes, dtypes, lengths, order), 20 per graph, placeholders of unknown sizes:
    1000 on the kernel, 40 on the fallback (its graphs are ~30x larger; more in the property test)."""
    rng = np.random.default_rng(1234)
    for _ in range(FUZZ_GRAPHS[self.IMPL]):
      with tf.Graph().as_default(), tf.compat.v1.Session(config=op_test_util.session_config()) as sess:
        feeds, fetches, refs = {}, [], []
        for _ in range(20):
          rank = int(rng.integers(2, 6))
          batch_axis, time_axis = (int(a) for a in rng.choice(rank, 2, replace=False))
          if rng.random() < 0.3:
            batch_axis -= rank
          shape = [int(d) for d in rng.integers(0, 4, size=rank)]
          shape[batch_axis] = int(rng.integers(0, 6))
          shape[time_axis] = int(rng.integers(0, 9))
          dtype = DTYPES[rng.integers(len(DTYPES))]
          len_dtype = [tf.int32, tf.int64][rng.integers(2)]
          time_major = bool(rng.random() < 0.5)
          x_val = random_array(rng, shape, dtype)
          lens_val = rng.integers(0, shape[time_axis] + 1, size=shape[batch_axis])
          with self.scope():
            x = tf.compat.v1.placeholder(dtype, [None] * rank)
            lens = tf.compat.v1.placeholder(len_dtype, [None])
            max_t = tf.compat.v1.placeholder(len_dtype, [])
            kw = dict(batch_dim_axis=batch_axis, time_dim_axis=time_axis, time_major=time_major)
            y = rc_ops.flatten_with_seq_len_mask(x, lens, **kw)
            back = rc_ops.unflatten_with_seq_len_mask(y, lens, max_t, **kw)
          feeds.update({x: x_val, lens: lens_val, max_t: shape[time_axis]})
          fetches.append((y, back))
          refs.append(
            (
              np_flatten(x_val, lens_val, batch_axis, time_axis, time_major),
              np_mask_padded(x_val, lens_val, batch_axis, time_axis),
            )
          )
        for (y_val, back_val), (y_ref, back_ref) in zip(sess.run(fetches, feeds), refs):
          np.testing.assert_array_equal(y_val, y_ref)
          np.testing.assert_array_equal(back_val, back_ref)


class FlattenOpFallbackTest(FlattenOpTest):
  IMPL, DEVICE = FALLBACK, CPU


class FlattenOpGpuTest(FlattenOpTest):
  IMPL, DEVICE = KERNEL, GPU


class FlattenOpFallbackGpuTest(FlattenOpTest):
  IMPL, DEVICE = FALLBACK, GPU


if __name__ == "__main__":
  absltest.main()
