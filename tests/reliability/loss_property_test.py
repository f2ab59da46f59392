"""Property-based tests of the loss normalisation against numpy: random losses, lengths, batch and
time sizes (0 included), custom inverse norm factors; every kind of loss ``[B]``, ``[B,T]``,
``[T,B]``, ``[B,T,F]``, ``[B,T1,T2]`` and scalar, with and without ``use_flatten_frames`` /
``use_normalized_loss`` / ``custom_inv_norm_factor``, several scales, ``as_error`` and scale-0 losses
(kept out of ``total_loss``); and the epoch figure ``Σ summed / Σ inv_norm`` of
:class:`rc.EpochAccumulator` over random batch splits. One graph, built once; examples are fed.
"""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

import returnn_rc as rc

NUM_LOSS_CASES = 350
NUM_EPOCH_CASES = 200
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True)
FEAT = 3
KINDS = ("b", "bt", "tb", "btf", "btt", "scalar")
SCALES = (1.0, 0.3, 2.5, -1.25)


def _settings():
  """(name, kind, flatten, normalized, custom, scale, as_error) of every marked loss."""
  out = []
  for k, kind in enumerate(KINDS):
    for i, (flatten, normalized, custom) in enumerate(itertools.product((True, False), repeat=3)):
      scale = SCALES[(i + k) % len(SCALES)]
      out.append((f"{kind}_{i}", kind, flatten, normalized, custom, scale, False))
    out.append((f"{kind}_err", kind, True, False, False, 1.0, True))
    out.append((f"{kind}_zero", kind, True, True, False, 0.0, False))
  return out


LOSSES = _settings()


def np_reductions(kind, values, lens, lens2, custom, normalized, scale):
  """(summed, inv_norm, mean, scaled) in float64."""
  values = np.asarray(values, np.float64)
  size_b = len(lens)
  if kind == "b":
    mask = np.ones([size_b], bool)
  elif kind == "scalar":
    mask = np.ones([], bool)
  else:
    size_t = values.shape[0] if kind == "tb" else values.shape[1]
    mask = np.arange(size_t)[None, :] < np.asarray(lens)[:, None]  # [B,T]
    if kind == "tb":
      mask = mask.T
    elif kind == "btf":
      mask = np.broadcast_to(mask[:, :, None], values.shape)
    elif kind == "btt":
      mask2 = np.arange(values.shape[2])[None, :] < np.asarray(lens2)[:, None]  # [B,T2]
      mask = mask[:, :, None] & mask2[:, None, :]
  summed = float(np.sum(np.where(mask, values, 0.0)))
  inv_norm = float(np.sum(custom)) if custom is not None else float(np.sum(mask))
  mean = summed / inv_norm if inv_norm != 0 else 0.0
  return summed, inv_norm, mean, (mean if normalized else summed) * scale


@st.composite
def loss_cases(draw):
  size_b = draw(st.integers(0, 5))
  size_t = draw(st.integers(0, 6))
  size_t2 = draw(st.integers(0, 4))
  lens = draw(st.lists(st.integers(0, size_t), min_size=size_b, max_size=size_b))
  lens2 = draw(st.lists(st.integers(0, size_t2), min_size=size_b, max_size=size_b))
  return size_b, size_t, size_t2, lens, lens2, draw(st.integers(0, 2**31 - 1))


def _feed_values(size_b, size_t, size_t2, seed):
  rng = np.random.default_rng(seed)
  shapes = {
    "b": [size_b],
    "bt": [size_b, size_t],
    "tb": [size_t, size_b],
    "btf": [size_b, size_t, FEAT],
    "btt": [size_b, size_t, size_t2],
    "scalar": [],
  }
  values = {kind: (rng.standard_normal(shape) * 5).astype(np.float32) for kind, shape in shapes.items()}
  custom = rng.uniform(0.0, 3.0, size=[size_b]).astype(np.float32)
  return values, custom


class LossPropertyTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.graph = tf.Graph()
    with cls.graph.as_default():
      cls.lens = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
      cls.lens2 = tf.compat.v1.placeholder(tf.int32, [None], name="lens2")
      cls.custom = tf.compat.v1.placeholder(tf.float32, [None], name="custom")
      time, time2 = rc.Dim(cls.lens, name="time"), rc.Dim(cls.lens2, name="time2")
      feat = rc.Dim(FEAT, name="feat")
      dims = {
        "b": [rc.batch_dim],
        "bt": [rc.batch_dim, time],
        "tb": [time, rc.batch_dim],
        "btf": [rc.batch_dim, time, feat],
        "btt": [rc.batch_dim, time, time2],
        "scalar": [],
      }
      cls.values = {kind: tf.compat.v1.placeholder(tf.float32, None, name=f"loss_{kind}") for kind in KINDS}
      ctx = rc.init_train_step_run_ctx(train_flag=False)
      try:
        for name, kind, flatten, normalized, custom, scale, as_error in LOSSES:
          loss = rc.Tensor(name, dims[kind], "float32", raw_tensor=cls.values[kind])
          inv = rc.Tensor("inv", [rc.batch_dim], "float32", raw_tensor=cls.custom) if custom else None
          ctx.mark_as_loss(
            loss,
            name,
            scale=scale,
            as_error=as_error,
            use_normalized_loss=normalized,
            use_flatten_frames=flatten,
            custom_inv_norm_factor=inv,
          )
        cls.fetches = {
          name: (
            loss.get_summed_loss().get_raw(),
            loss.get_inv_norm_factor().get_raw(),
            loss.get_mean_loss().get_raw(),
            loss.get_scaled_reduced_loss().get_raw(),
          )
          for name, loss in ctx.losses.items()
        }
        cls.total = ctx.total_loss().get_raw()
        cls.report = rc.report_fetches(ctx.losses)
      finally:
        rc.reset_run_ctx()
    cls.graph.finalize()
    cls.sess = tf.compat.v1.Session(graph=cls.graph)

  @classmethod
  def tearDownClass(cls):
    cls.sess.close()
    super().tearDownClass()

  def _feed(self, values, lens, lens2, custom):
    feed = {self.values[kind]: v for kind, v in values.items()}
    feed.update({self.lens: np.asarray(lens, np.int32), self.lens2: np.asarray(lens2, np.int32), self.custom: custom})
    return feed

  def test_reductions_and_total_match_numpy(self):
    count = [0]

    @settings(max_examples=NUM_LOSS_CASES, **SETTINGS)
    @given(loss_cases())
    def check(case):
      size_b, size_t, size_t2, lens, lens2, seed = case
      values, custom = _feed_values(size_b, size_t, size_t2, seed)
      got, total = self.sess.run([self.fetches, self.total], self._feed(values, lens, lens2, custom))
      want_total = 0.0
      got_all, want_all, tols = [], [], []
      for name, kind, _, normalized, use_custom, scale, as_error in LOSSES:
        want = np_reductions(kind, values[kind], lens, lens2, custom if use_custom else None, normalized, scale)
        got_all.append(got[name])
        want_all.append(want)
        tols.append(1e-5 * (float(np.sum(np.abs(values[kind]))) + 1.0))
        if not as_error and scale != 0:
          want_total += want[3]
      got_all, want_all = np.asarray(got_all, np.float64), np.asarray(want_all, np.float64)  # [losses, 4]
      bad = ~(np.abs(got_all - want_all) <= np.asarray(tols)[:, None] + 1e-5 * np.abs(want_all))
      if bad.any():  # one vectorised check; name the offenders
        offenders = [
          (LOSSES[i][0], ("summed", "inv_norm", "mean", "scaled")[j], got_all[i, j], want_all[i, j])
          for i, j in zip(*np.nonzero(bad))
        ]
        self.fail(f"{case}: (loss, reduction, got, numpy): {offenders[:8]}")
      np.testing.assert_allclose(total, want_total, rtol=1e-4, atol=1e-3, err_msg=f"{case} total_loss")
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_LOSS_CASES)

  def test_epoch_accumulator_is_sum_over_sum(self):
    count = [0]

    @st.composite
    def epochs(draw):
      num = draw(st.integers(1, 10))
      size_t = draw(st.integers(1, 6))
      lens = draw(st.lists(st.integers(0, size_t), min_size=num, max_size=num))
      cuts = sorted(set(draw(st.lists(st.integers(1, num - 1), max_size=num - 1)))) if num > 1 else []
      return size_t, lens, cuts, draw(st.integers(0, 2**31 - 1))

    names = ("bt_0", "bt_7", "b_1", "btf_2")  # count norm / custom norm (flatten or not), [B] custom, [B,T,F]

    @settings(max_examples=NUM_EPOCH_CASES, **SETTINGS)
    @given(epochs())
    def check(case):
      size_t, lens, cuts, seed = case
      num = len(lens)
      values, custom = _feed_values(num, size_t, 2, seed)
      lens2 = [2] * num
      acc = rc.EpochAccumulator()
      bounds = [0] + cuts + [num]
      for start, end in zip(bounds[:-1], bounds[1:]):
        part = {k: (v[start:end] if k != "scalar" else v) for k, v in values.items()}
        fetched = self.sess.run(
          {n: self.report[n] for n in names}, self._feed(part, lens[start:end], lens2[start:end], custom[start:end])
        )
        acc.add(fetched)
      self.assertEqual(acc.num_batches, len(bounds) - 1)
      figures = acc.figures()
      for name in names:
        _, kind, _, normalized, use_custom, scale, _ = next(entry for entry in LOSSES if entry[0] == name)
        summed, inv_norm, _, _ = np_reductions(
          kind, values[kind], lens, lens2, custom if use_custom else None, normalized, scale
        )
        want = summed / inv_norm if inv_norm else (0.0 if summed == 0 else np.sign(summed) * np.inf)
        tol = 1e-5 * (float(np.sum(np.abs(values[kind]))) + 1.0)
        np.testing.assert_allclose(
          acc.totals()[name], (summed, inv_norm), rtol=1e-5, atol=tol, err_msg=f"{case} {name}"
        )
        if inv_norm:
          np.testing.assert_allclose(figures[name], want, rtol=1e-4, atol=tol / inv_norm, err_msg=f"{case} {name}")
      count[0] += 1

    check()  # pylint: disable=no-value-for-parameter
    self.assertEqual(count[0], NUM_EPOCH_CASES)


if __name__ == "__main__":
  absltest.main()
