"""Loss reductions against a numpy reference: summed, inverse norm factor, mean, scaled, total."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc

_RNG = np.random.RandomState(42)


def _np_valid(x_btf, lens):
  """x [B,T,...] → the valid frames [N,...] (numpy reference)."""
  return np.concatenate([x_btf[b, :n] for b, n in enumerate(lens)], axis=0)


class LossNumbersTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _build(self, x, lens, dims_kind, **kwargs):
    """Marks loss `x` with dims BT/BTF/TB/B/scalar and returns (loss, fetches)."""
    ctx = rc.init_train_step_run_ctx()
    t = rc.Dim(tf.constant(lens, kwargs.pop("lens_dtype", tf.int32)), name="time")
    f = rc.Dim(x.shape[-1], name="f") if dims_kind == "BTF" else None
    dims = {
      "BT": [rc.batch_dim, t],
      "BTF": [rc.batch_dim, t, f],
      "TB": [t, rc.batch_dim],
      "B": [rc.batch_dim],
      "scalar": [],
    }[dims_kind]
    ctx.mark_as_loss(tf.constant(x), "l", dims=dims, **kwargs)
    loss = ctx.losses["l"]
    fetches = [
      loss.get_summed_loss().raw_tensor,
      loss.get_inv_norm_factor().raw_tensor,
      loss.get_mean_loss().raw_tensor,
      loss.get_scaled_reduced_loss().raw_tensor,
    ]
    return ctx, fetches

  @parameterized.product(
    dims_kind=["BT", "BTF", "TB"],
    use_flatten_frames=[True, False],
    dtype=[np.float32, np.float64, np.float16],
    lens_dtype=[tf.int32, tf.int64],
  )
  def test_frame_losses(self, dims_kind, use_flatten_frames, dtype, lens_dtype):
    lens = [3, 5, 1, 0]
    shape = [4, 5, 2] if dims_kind == "BTF" else [4, 5]
    x_btf = _RNG.uniform(0, 1, shape).astype(dtype)
    for b, n in enumerate(lens):
      x_btf[b, n:] = np.nan  # padding must never reach the loss
    x = x_btf.T if dims_kind == "TB" else x_btf
    with tf.Graph().as_default():
      _, fetches = self._build(
        x, lens, dims_kind, use_flatten_frames=use_flatten_frames, scale=0.5, lens_dtype=lens_dtype
      )
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
      ctx.mark_as_loss(x, "l", dims=[rc.batch_dim, t, rc.Dim(3, name="f")], use_flatten_frames=use_flatten_frames)
      total = ctx.total_loss().raw_tensor
      (grad,) = tf.gradients(total, [x])
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
      # Any shape as an rc.Tensor with static dims (a raw [2,2] would be ambiguous for a [B] loss).
      factor = rc.Tensor(
        "n", [rc.Dim(2, name="n1"), rc.Dim(2, name="n2")], "int32", raw_tensor=tf.constant([[2, 3], [5, 0]])
      )
      _, fetches = self._build(x, [1, 1, 1], "B", custom_inv_norm_factor=factor, use_normalized_loss=True, scale=2.0)
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
      ctx.mark_as_loss(frame, "ce", dims=[rc.batch_dim, t])  # summed 6
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


def _np_mask(lens, size_t):
  return np.arange(size_t)[None, :] < np.asarray(lens)[:, None]  # [B,T]


class CustomInvNormTest(tf.test.TestCase, parameterized.TestCase):
  """``custom_inv_norm_factor`` as RETURNN's frontend: ``inv_norm = reduce_sum(factor, axis=factor.dims)``,
  where ``reduce_sum`` masks the padded frames of each dynamic dim; mean = summed / inv_norm."""

  LENS = [1, 2, 4]
  T = 21  # B*T = 63 entries, 7 of them valid

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _mark(self, factor_fn, use_flatten_frames, loss_np=None):
    """Marks a [B,T] loss (NaN in the padding) with the factor ``factor_fn(time_dim)``; returns fetches."""
    ctx = rc.init_train_step_run_ctx()
    time = rc.Dim(tf.constant(self.LENS), name="time")
    if loss_np is None:
      loss_np = np.where(_np_mask(self.LENS, self.T), 1.0, np.nan).astype(np.float32)
    ctx.mark_as_loss(
      tf.constant(loss_np),
      "ce",
      dims=[rc.batch_dim, time],
      use_flatten_frames=use_flatten_frames,
      custom_inv_norm_factor=factor_fn(time),
    )
    loss = ctx.losses["ce"]
    return ctx, [
      loss.get_summed_loss().raw_tensor,
      loss.get_inv_norm_factor().raw_tensor,
      loss.get_mean_loss().raw_tensor,
    ]

  def _run(self, fetches, feed=None):
    with self.cached_session() as sess:
      return sess.run(fetches, feed)

  @parameterized.parameters(True, False)
  def test_bt_factor_with_garbage_padding_counts_valid_frames(self, use_flatten_frames):
    """The issue's example: ones everywhere (also in the padding): 7 valid frames, not 63 entries."""
    with tf.Graph().as_default():
      _, fetches = self._mark(
        lambda time: rc.Tensor("n", [rc.batch_dim, time], "float32", raw_tensor=tf.ones([3, self.T])),
        use_flatten_frames,
      )
      summed, inv_norm, mean = self._run(fetches)
    self.assertEqual(inv_norm, 7.0)  # RETURNN: sum over the valid frames
    self.assertEqual(summed, 7.0)
    self.assertEqual(mean, 1.0)  # not 7 / 63

  @parameterized.product(use_flatten_frames=[True, False], kind=["rc_bt", "rc_tb", "raw_bt"])
  def test_bt_factor_values_nan_in_padding(self, use_flatten_frames, kind):
    rng = np.random.RandomState(3)
    mask = _np_mask(self.LENS, self.T)
    factor_np = np.where(mask, rng.uniform(0.5, 2.0, [3, self.T]), np.nan).astype(np.float32)
    loss_np = np.where(mask, rng.uniform(0, 1, [3, self.T]), np.inf).astype(np.float32)

    def factor_fn(time):
      if kind == "rc_bt":
        return rc.Tensor("n", [rc.batch_dim, time], "float32", raw_tensor=tf.constant(factor_np))
      if kind == "rc_tb":
        return rc.Tensor("n", [time, rc.batch_dim], "float32", raw_tensor=tf.constant(factor_np.T))
      return tf.constant(factor_np)  # raw, the loss's shape: the loss's dims

    with tf.Graph().as_default():
      _, fetches = self._mark(factor_fn, use_flatten_frames, loss_np=loss_np)
      summed, inv_norm, mean = self._run(fetches)
    want_inv_norm = float(np.sum(factor_np[mask].astype(np.float64)))
    want_summed = float(np.sum(loss_np[mask].astype(np.float64)))
    self.assertAllClose(inv_norm, want_inv_norm, rtol=1e-6)
    self.assertAllClose(summed, want_summed, rtol=1e-6)
    self.assertAllClose(mean, want_summed / want_inv_norm, rtol=1e-6)

  @parameterized.parameters("rc", "raw")
  def test_b_factor(self, kind):
    factor_np = np.array([2.0, 3.0, 5.0], np.float32)
    with tf.Graph().as_default():
      _, fetches = self._mark(
        lambda time: (
          rc.Tensor("n", [rc.batch_dim], "float32", raw_tensor=tf.constant(factor_np))
          if kind == "rc"
          else tf.constant(factor_np)
        ),
        True,
      )
      summed, inv_norm, mean = self._run(fetches)
    self.assertEqual((summed, inv_norm), (7.0, 10.0))
    self.assertAllClose(mean, 0.7)

  def test_epoch_figure_uses_masked_factor(self):
    """Per batch and per epoch: Σ summed / Σ masked factor (what LR control sees)."""
    with tf.Graph().as_default():
      ctx, _ = self._mark(
        lambda time: rc.Tensor("n", [rc.batch_dim, time], "float32", raw_tensor=tf.fill([3, self.T], 2.0)), True
      )
      report = rc.report_fetches(ctx.losses)
      fetched = self._run(report)
    acc = rc.EpochAccumulator()
    self.assertEqual(acc.add(fetched), {"ce": 0.5})  # 7 / (2 * 7)
    acc.add({"ce": (1.0, 2.0)})
    self.assertEqual(acc.figures(), {"ce": 8.0 / 16.0})

  def test_ambiguous_raw_shape(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, r"custom_inv_norm_factor: a raw tensor of shape \(3, 5\) is ambiguous"):
        self._mark(lambda time: tf.ones([3, 5]), True)  # rank 2 but another T than the loss's 21
      with self.assertRaisesRegex(ValueError, r"a raw tensor of shape \(3, 21, 2\) is ambiguous"):
        self._mark(lambda time: tf.ones([3, self.T, 2]), True)

  def test_factor_dim_without_sizes_or_batch(self):
    with tf.Graph().as_default():
      other = rc.Dim(None, name="other")
      with self.assertRaisesRegex(ValueError, r"dynamic dim Dim\('other', dynamic\) has no sizes"):
        self._mark(lambda time: rc.Tensor("n", [rc.batch_dim, other], "float32", raw_tensor=tf.ones([3, 4])), True)
      with self.assertRaisesRegex(ValueError, "needs the batch dim to mask its padding"):
        self._mark(lambda time: rc.Tensor("n", [time], "float32", raw_tensor=tf.ones([self.T])), True)
      with self.assertRaisesRegex(TypeError, "must be a float, int or bool tensor, got dtype string"):
        self._mark(lambda time: tf.constant("x"), True)

  def test_batch_mismatch(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "has batch size 2, but the loss has batch size 3"):
        self._mark(lambda time: tf.ones([2]), True)
      n = tf.compat.v1.placeholder(tf.float32, [None])
      _, fetches = self._mark(lambda time: n, True)
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "batch size mismatch: custom_inv_norm_factor"):
        self._run(fetches, {n: np.ones([2], np.float32)})

  @parameterized.parameters(-1.0, np.nan, np.inf)
  def test_bad_values_in_valid_frames(self, bad):
    with tf.Graph().as_default():
      n = tf.compat.v1.placeholder(tf.float32, [None, None])
      _, fetches = self._mark(lambda time: rc.Tensor("n", [rc.batch_dim, time], "float32", raw_tensor=n), True)
      values = np.ones([3, self.T], np.float32)
      values[2, 3] = bad  # a valid frame (length 4)
      with self.assertRaisesRegex(
        tf.errors.InvalidArgumentError, "custom_inv_norm_factor of loss ce must be finite and >= 0"
      ):
        self._run(fetches, {n: values})
      values[2, 3], values[2, 4] = 1.0, bad  # padding: ignored
      self.assertEqual(self._run(fetches[1], {n: values}), 7.0)


class ZeroInvNormTest(tf.test.TestCase):
  """inv_norm 0: one rule for the batch mean (graph) and the epoch figure (EpochAccumulator): 0."""

  def test_batch_mean_and_epoch_figure_agree(self):
    rc.reset_run_ctx()
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      ctx.mark_as_loss(tf.constant([1.0, 2.0]), "ce", dims=[rc.batch_dim], custom_inv_norm_factor=tf.zeros([2]))
      loss = ctx.losses["ce"]
      with self.cached_session() as sess:
        mean, report = sess.run([loss.get_mean_loss().raw_tensor, rc.report_fetches(ctx.losses)])
    self.assertEqual(tuple(report["ce"]), (3.0, 0.0))
    acc = rc.EpochAccumulator()
    batch_figure = acc.add(report)["ce"]
    self.assertEqual(mean, 0.0)
    self.assertEqual(batch_figure, mean)
    self.assertEqual(acc.figures()["ce"], mean)  # was +inf: 3 / 0
    acc.add({"ce": (-1.0, 0.0)})
    self.assertEqual(acc.figures()["ce"], 0.0)  # was +inf (2 / 0)
    self.assertEqual(rc.reporting.ratio(-5.0, 0.0), 0.0)  # was -inf

  def test_report_fetches_needs_losses(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(TypeError, "losses must map names to rc.Loss .*got RunCtx"):
        rc.report_fetches(ctx)

  def test_accumulator_rejects_malformed_batches(self):
    with self.assertRaisesRegex(TypeError, r"loss 'ce' must be a pair of numbers \(summed, inv_norm\)"):
      rc.EpochAccumulator().add({"ce": 3.0})


class MaskedPathBatchMismatchTest(tf.test.TestCase, parameterized.TestCase):
  """Sizes [B'] of another batch size than the loss's [B,T] raise (as the packed path does)."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  @parameterized.parameters(True, False)
  def test_static(self, use_flatten_frames):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      time = rc.Dim(tf.constant([2]), name="time")  # one size, but 3 sequences
      ctx.mark_as_loss(tf.ones([3, 2]), "ce", dims=[rc.batch_dim, time], use_flatten_frames=use_flatten_frames)
      with self.assertRaisesRegex(ValueError, "batch"):
        ctx.losses["ce"].get_summed_loss()

  def test_static_masked_message(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      time = rc.Dim(tf.constant([2]), name="time")
      ctx.mark_as_loss(tf.ones([3, 2]), "ce", dims=[rc.batch_dim, time], use_flatten_frames=False)
      with self.assertRaisesRegex(
        ValueError,
        r"the sizes of dim time have batch size 1, but the tensor has batch "
        r"size 3",
      ):
        ctx.losses["ce"].get_summed_loss()

  @parameterized.parameters(1, 2, 4)
  def test_run_time(self, num_sizes):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      lens = tf.compat.v1.placeholder(tf.int32, [None])
      x = tf.compat.v1.placeholder(tf.float32, [None, None])
      ctx.mark_as_loss(x, "ce", dims=[rc.batch_dim, rc.Dim(lens, name="time")], use_flatten_frames=False)
      summed = ctx.losses["ce"].get_summed_loss().raw_tensor
      with self.cached_session() as sess:
        feed = {x: np.ones([3, 2], np.float32)}
        self.assertEqual(sess.run(summed, {**feed, lens: [1, 2, 2]}), 5.0)
        with self.assertRaisesRegex(
          tf.errors.InvalidArgumentError, "batch size mismatch: the sizes of dim time do not have the batch size"
        ):
          sess.run(summed, {**feed, lens: [2] * num_sizes})  # 1: was broadcast to all 3 sequences (6.0)


class LossOptionsTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  @parameterized.named_parameters(
    ("nan_scale", dict(scale=float("nan")), ValueError, "scale must be finite, got nan"),
    ("inf_scale", dict(scale=float("inf")), ValueError, "scale must be finite, got inf"),
    ("str_as_error", dict(as_error="False"), TypeError, "as_error must be a bool, got str"),
    ("int_normalized", dict(use_normalized_loss=1), TypeError, "use_normalized_loss must be a bool, got int"),
    ("none_flatten", dict(use_flatten_frames=None), TypeError, "use_flatten_frames must be a bool"),
  )
  def test_bad_options(self, kwargs, exc, regex):
    with tf.Graph().as_default() as graph:
      ctx = rc.init_train_step_run_ctx()
      n_ops = len(graph.get_operations())
      with self.assertRaisesRegex(exc, regex):
        ctx.mark_as_loss(tf.constant(1.0), "ce", **kwargs)
      self.assertEmpty(ctx.losses)
      self.assertLen(graph.get_operations(), n_ops + 1)  # only the constant: nothing built

  @parameterized.parameters("ce loss", "ce:0", "a/b", "0ce", "")
  def test_bad_names(self, name):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaises((ValueError, TypeError)) as cm:
        ctx.mark_as_loss(tf.constant(1.0), name)
      self.assertIn("loss name", str(cm.exception))

  def test_string_loss(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(TypeError, "loss 'ce' must be a float, int or bool tensor, got dtype string"):
        ctx.mark_as_loss(tf.constant("x"), "ce")

  def test_loss_dataclass_checks(self):
    with tf.Graph().as_default():
      t = rc.convert_to_tensor(1.0)
      with self.assertRaisesRegex(ValueError, "scale must be finite"):
        rc.Loss(loss=t, name="ce", scale=float("inf"))
      with self.assertRaisesRegex(TypeError, "loss must be an rc.Tensor"):
        rc.Loss(loss=tf.constant(1.0), name="ce")
