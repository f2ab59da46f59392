"""Loss reductions against a numpy reference: summed, inverse norm factor, mean, scaled, total."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc

_RNG = np.random.RandomState(42)


def _np_valid(x_btf, lens):
  """x [B,T,...] → the valid frames [N,...] (numpy reference)."""
  return np.concatenate([x_btf[b, :l] for b, l in enumerate(lens)], axis=0)


class LossNumbersTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _build(self, x, lens, dims_kind, **kwargs):
    """Marks loss `x` with dims BT/BTF/TB/B/scalar and returns (loss, fetches)."""
    ctx = rc.init_train_step_run_ctx()
    t = rc.Dim(tf.constant(lens, kwargs.pop("lens_dtype", tf.int32)), name="time")
    f = rc.Dim(x.shape[-1], name="f") if dims_kind == "BTF" else None
    dims = {"BT": [rc.batch_dim, t], "BTF": [rc.batch_dim, t, f], "TB": [t, rc.batch_dim],
            "B": [rc.batch_dim], "scalar": []}[dims_kind]
    ctx.mark_as_loss(tf.constant(x), "l", dims=dims, **kwargs)
    loss = ctx.losses["l"]
    fetches = [loss.get_summed_loss().raw_tensor, loss.get_inv_norm_factor().raw_tensor,
               loss.get_mean_loss().raw_tensor, loss.get_scaled_reduced_loss().raw_tensor]
    return ctx, fetches

  @parameterized.product(
      dims_kind=["BT", "BTF", "TB"], use_flatten_frames=[True, False], dtype=[np.float32, np.float64, np.float16],
      lens_dtype=[tf.int32, tf.int64])
  def test_frame_losses(self, dims_kind, use_flatten_frames, dtype, lens_dtype):
    lens = [3, 5, 1, 0]
    shape = [4, 5, 2] if dims_kind == "BTF" else [4, 5]
    x_btf = _RNG.uniform(0, 1, shape).astype(dtype)
    for b, l in enumerate(lens):
      x_btf[b, l:] = np.nan  # padding must never reach the loss
    x = x_btf.T if dims_kind == "TB" else x_btf
    with tf.Graph().as_default():
      _, fetches = self._build(x, lens, dims_kind, use_flatten_frames=use_flatten_frames, scale=0.5,
                               lens_dtype=lens_dtype)
      with self.cached_session() as sess:
        summed, inv_norm, mean, scaled = sess.run(fetches)
    valid = _np_valid(x_btf.astype(np.float64), lens)
    tol = 1e-2 if dtype == np.float16 else 1e-5
    self.assertAllClose(summed, valid.sum(), rtol=tol)
    self.assertEqual(inv_norm, valid.size)
    self.assertAllClose(mean, valid.sum() / valid.size, rtol=tol)
    self.assertAllClose(scaled, 0.5 * valid.sum(), rtol=tol)

  @parameterized.parameters(True, False)
  def test_gradient_nan_safe(self, use_flatten_frames):
    lens = [2, 4]
    x_np = _RNG.uniform(0, 1, [2, 4, 3]).astype(np.float32)
    x_np[0, 2:] = np.inf
    with tf.Graph().as_default():
      x = tf.constant(x_np)
      ctx = rc.init_train_step_run_ctx()
      t = rc.Dim(tf.constant(lens), name="time")
      # The gradient w.r.t. the marked loss itself must be 0 (not NaN) in the padded frames.
      ctx.mark_as_loss(x, "l", dims=[rc.batch_dim, t, rc.Dim(3, name="f")],
                       use_flatten_frames=use_flatten_frames)
      total = ctx.total_loss().raw_tensor
      grad, = tf.gradients(total, [x])
      with self.cached_session() as sess:
        total_v, grad_v = sess.run([total, grad])
    mask = np.zeros([2, 4, 1], bool)
    mask[0, :2] = mask[1, :4] = True
    self.assertTrue(np.isfinite(total_v))
    self.assertAllClose(total_v, np.sum(np.where(mask, x_np, 0)))
    self.assertAllEqual(grad_v, np.broadcast_to(mask, x_np.shape).astype(np.float32))

  @parameterized.parameters(True, False)
  def test_packed_path_uses_custom_op(self, use_flatten_frames):
    graph = tf.Graph()
    with graph.as_default():
      self._build(np.zeros([2, 3], np.float32), [1, 3], "BT", use_flatten_frames=use_flatten_frames)
      # fetch the summed loss so the reduction is built
      rc.get_run_ctx().losses["l"].get_summed_loss()
    types = {op.type for op in graph.get_operations()}
    self.assertEqual("FlattenWithSeqLenMask" in types, use_flatten_frames)

  def test_sequence_level_custom_inv_norm(self):
    x = np.array([1.0, 2.0, 4.0], np.float32)
    with tf.Graph().as_default():
      _, fetches = self._build(x, [1, 1, 1], "B", custom_inv_norm_factor=tf.constant([[2, 3], [5, 0]]),
                               use_normalized_loss=True, scale=2.0)
      with self.cached_session() as sess:
        summed, inv_norm, mean, scaled = sess.run(fetches)
    self.assertEqual((summed, inv_norm), (7.0, 10.0))
    self.assertAllClose(mean, 0.7)
    self.assertAllClose(scaled, 1.4)

  def test_batch_and_scalar_norm(self):
    with tf.Graph().as_default():
      _, fetches = self._build(np.array([1.0, 2.0, 4.0], np.float32), [1, 1, 1], "B")
      _, fetches2 = self._build(np.float32(3.0), [1], "scalar")
      with self.cached_session() as sess:
        self.assertAllClose(sess.run(fetches), [7.0, 3.0, 7.0 / 3, 7.0])
        self.assertAllClose(sess.run(fetches2), [3.0, 1.0, 3.0, 3.0])

  def test_empty_batch_mean_is_zero(self):
    with tf.Graph().as_default():
      _, fetches = self._build(np.zeros([0, 3], np.float32), np.zeros([0], np.int32), "BT")
      with self.cached_session() as sess:
        self.assertAllClose(sess.run(fetches), [0.0, 0.0, 0.0, 0.0])

  def test_seq_lens_out_of_range(self):
    with tf.Graph().as_default():
      _, fetches = self._build(np.zeros([2, 3], np.float32), [1, 4], "BT", use_flatten_frames=False)
      with self.cached_session() as sess:
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "out of range"):
          sess.run(fetches)

  def test_total_loss(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      t = rc.Dim(tf.constant([1, 2]), name="t")
      frame = tf.constant([[1.0, 9.0], [2.0, 3.0]])
      ctx.mark_as_loss(frame, "ce", dims=[rc.batch_dim, t])                          # summed 6
      ctx.mark_as_loss(frame, "ce_norm", dims=[rc.batch_dim, t], use_normalized_loss=True, scale=3.0)  # 2*3
      ctx.mark_as_loss(tf.constant(100.0), "err", as_error=True)
      ctx.mark_as_loss(tf.constant(1000.0), "unused", scale=0.0)
      ctx.mark_as_loss(tf.constant([1, 1]), "int_loss", dims=[rc.batch_dim], scale=0.25)  # 0.5
      total = ctx.total_loss()
      self.assertEqual(total.dims, ())
      report = rc.report_fetches(ctx.losses)
      with self.cached_session() as sess:
        self.assertAllClose(sess.run(total.raw_tensor), 6.0 + 6.0 + 0.5)
        figures = sess.run(report)
    self.assertEqual(sorted(figures), ["ce", "ce_norm", "err", "int_loss", "unused"])
    self.assertAllClose(figures["ce_norm"], (6.0, 3.0))  # scale / normalisation don't change reports


class EpochAccumulatorTest(absltest.TestCase):

  def test_exact_sum_over_sum(self):
    acc = rc.EpochAccumulator()
    per_batch = acc.add({"ce": (6.0, 3.0), "err": (1.0, 3.0)})
    self.assertEqual(per_batch, {"ce": 2.0, "err": 1.0 / 3})
    acc.add({"ce": (1.0, 1.0), "err": (0.0, 1.0)})
    self.assertEqual(acc.figures(), {"ce": 7.0 / 4, "err": 0.25})  # not mean of (2.0, 1.0) = 1.5
    self.assertEqual(acc.num_batches, 2)
    self.assertEqual(acc.totals()["ce"], (7.0, 4.0))

  def test_zero_norm(self):
    acc = rc.EpochAccumulator()
    acc.add({"ce": (0.0, 0.0)})
    self.assertEqual(acc.figures(), {"ce": 0.0})


if __name__ == "__main__":
  absltest.main()
