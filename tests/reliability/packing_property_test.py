"""Property test of the packing rewrite: random chains of row-wise ops (and some that end the rewrite)
on random batches give the same loss values and gradients packed as unpacked.

Each example builds one graph: a chain from ``x`` ``[B,T,F]`` to a ``[B,T]`` loss, reduced twice, once
with the rewrite on and once off (the rewrite runs first, so it sees the chain as it is), and both
reductions and their gradients w.r.t. ``x`` and every weight are fetched in one run (same dropout
masks: the train flag is on).
"""

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st

import returnn_rc as rc
from returnn_rc import nn as rc_nn

NUM_CASES = 30
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True)
F = 4

STEPS = (
  "relu",
  "tanh",
  "sigmoid",
  "bias",
  "dense_reshape",
  "dense_tensordot",
  "dense_einsum",
  "dense_batch",
  "dropout",
  "layer_norm",
  "concat_dense",
  "softmax",
  "where",
  "batch_scale",
  "time_cumsum",
  "gelu",
)
ENDS = ("sum_square", "sparse_ce", "dense_ce", "argmax_error")


def _step(kind, h, w):
  """One op (or small block) ``[B,T,F] -> [B,T,F]``."""
  if kind == "relu":
    return tf.nn.relu(h)
  if kind == "tanh":
    return tf.tanh(h)
  if kind == "sigmoid":
    return tf.sigmoid(h)
  if kind == "gelu":
    return tf.nn.gelu(h)
  if kind == "bias":
    return h + w("b", [F])
  if kind == "dense_reshape":
    y = tf.matmul(tf.reshape(h, [-1, F]), w("w", [F, F]))
    return tf.reshape(y, tf.concat([tf.shape(h)[:2], [F]], 0))
  if kind == "dense_tensordot":
    return tf.tensordot(h, w("w", [F, F]), [[2], [0]])
  if kind == "dense_einsum":
    return tf.einsum("btf,fg->btg", h, w("w", [F, F]))
  if kind == "dense_batch":
    return tf.matmul(h, w("w", [F, F]))
  if kind == "dropout":
    return rc.dropout(h, 0.3)
  if kind == "layer_norm":
    mean, var = tf.nn.moments(h, axes=[-1], keepdims=True)
    return (h - mean) * tf.math.rsqrt(var + 1e-3)
  if kind == "concat_dense":
    return tf.matmul(tf.concat([h, 2.0 * h], -1), w("w", [2 * F, F]))
  if kind == "softmax":
    return tf.nn.softmax(h)
  if kind == "where":
    return tf.where(h > 0, h, 0.1 * h)
  if kind == "batch_scale":  # a [B,1,1] broadcast operand (computed over the valid frames only)
    return h * (1.0 + tf.reduce_mean(tf.abs(h[:, :1]), axis=[1, 2], keepdims=True))
  if kind == "time_cumsum":  # mixes frames: the rewrite ends here
    return tf.cumsum(h, axis=1) * 0.5
  raise ValueError(kind)


def _end(kind, h, labels, w):
  """``[B,T,F] -> [B,T]``."""
  if kind == "sum_square":
    return tf.reduce_sum(tf.square(h), -1)
  if kind == "sparse_ce":
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=h)
  if kind == "dense_ce":
    return tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(labels, F) * 0.8 + 0.05, logits=h)
  if kind == "argmax_error":
    err = tf.cast(tf.not_equal(tf.argmax(h, -1, output_type=tf.int32), labels), tf.float32)
    return err + tf.reduce_sum(h * w("v", [F]), -1)
  raise ValueError(kind)


@st.composite
def cases(draw):
  batch = draw(st.integers(1, 4))
  time = draw(st.integers(1, 6))
  lens = draw(st.lists(st.integers(0, time), min_size=batch, max_size=batch))
  chain = draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=5))
  end = draw(st.sampled_from(ENDS))
  seed = draw(st.integers(0, 2**16))
  return batch, time, np.asarray(lens, np.int32), chain, end, seed


class PackingPropertyTest(absltest.TestCase):
  @settings(max_examples=NUM_CASES, **SETTINGS)
  @given(cases())
  def test_random_chain(self, case):
    batch, time, lens, chain, end, seed = case
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    weights = {}
    with graph.as_default():
      tf.compat.v1.set_random_seed(seed)
      rc_nn.set_stateless_dropout_seed(seed)
      x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
      labels = tf.compat.v1.placeholder(tf.int32, [None, None])
      lens_ph = tf.compat.v1.placeholder(tf.int32, [None])
      step = tf.compat.v1.placeholder_with_default(tf.constant(5, tf.int64), [])

      def w(name, shape):
        key = f"{name}{len(weights)}"
        weights[key] = tf.constant(rng.normal(size=shape).astype(np.float32), name=key)
        return weights[key]

      time_dim = rc.Dim(lens_ph, name="time")
      ctx = rc.init_train_step_run_ctx(train_flag=True, step=step)
      try:
        h = x
        for kind in chain:
          h = _step(kind, h, w)
        raw = _end(end, h, labels, w)
        summed = {}
        for on in (True, False):  # the rewrite first: it must see the chain before anything else uses it
          with rc.packing.enabled(on):
            name = f"loss_{on}"
            ctx.mark_as_loss(rc.Tensor(name, [rc.batch_dim, time_dim], "float32", raw_tensor=raw), name)
            summed[on] = ctx.losses[name].get_summed_loss().get_raw()
            if on:
              report = rc.packing.report(ctx.losses[name])
      finally:
        rc.reset_run_ctx()
      wrt = [x] + list(weights.values())
      grads = {
        on: [
          tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
          for g, v in zip(tf.gradients(summed[on], wrt), wrt)
        ]
        for on in summed
      }
    feed = {
      x: rng.normal(size=[batch, time, F]).astype(np.float32),
      labels: rng.integers(0, F, size=[batch, time]).astype(np.int32),
      lens_ph: lens,
    }
    with tf.compat.v1.Session(graph=graph) as sess:
      got = sess.run({"summed": summed, "grads": grads}, feed)
    what = f"chain {chain} -> {end}, lens {lens.tolist()}, T={time}"
    np.testing.assert_allclose(got["summed"][True], got["summed"][False], rtol=1e-5, atol=1e-6, err_msg=what)
    for a, b in zip(got["grads"][True], got["grads"][False]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(b).max()), err_msg=what)
    self.assertTrue(report.rewritten, msg=f"{what}: {report}")


if __name__ == "__main__":
  absltest.main()
