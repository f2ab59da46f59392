"""Packed frames all the way up (``returnn_rc.packing``): a loss's row-wise producers run on packed frames.

Every test builds the same graph twice, with the rewrite switched off (only the loss values are
packed, as before) and on, and compares values and gradients (relative 1e-5). Positive controls
check that the rewrite really happened (which ops were rebuilt, the row count of the projection)
and that it does not where it must not.

Letters: ``B`` batch, ``T`` time, ``F`` features, ``V`` classes, ``N`` packed frames.
"""

import os
import re
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import nn as rc_nn
from tests.conformance import goldens

F, V = 6, 5
RNG = np.random.default_rng(0)
WEIGHTS = {
  "w": RNG.normal(size=[F, V]).astype(np.float32),
  "b": RNG.normal(size=[V]).astype(np.float32),
  "w2": RNG.normal(size=[F, F]).astype(np.float32),
  "emb": RNG.normal(size=[V, F]).astype(np.float32),
}
LENS = np.array([5, 2, 0, 4], np.int32)
X = RNG.normal(size=[4, 5, F]).astype(np.float32)
LABELS = RNG.integers(0, V, size=[4, 5]).astype(np.int32)


def _dirty(x):
  """``x`` with NaN / Inf in every padded frame."""
  out = x.copy()
  pad = np.arange(x.shape[1])[None, :] >= LENS[:, None]
  out[pad] = np.array([np.nan, np.inf, -np.inf, np.nan, np.nan, -np.inf], np.float32)[:F]
  return out


def _logits(x, w):
  """The reshape([-1, F]) -> matmul -> reshape(concat(shape[:2], [V])) pattern."""
  y = tf.matmul(tf.reshape(x, [-1, F]), w["w"])
  return tf.reshape(y, tf.concat([tf.shape(x)[:2], [V]], 0)) + w["b"]


def _sparse_ce(x, labels, w):
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=_logits(x, w))


def _smooth(labels):
  return tf.one_hot(labels, V) * 0.9 + 0.1 / V


# name -> (loss fn(x, labels, w) -> [B,T], op types that must be rebuilt, NaN padding allowed)
CASES = {
  "reshape_matmul_sparse_ce": (_sparse_ce, {"MatMul", "SparseSoftmaxCrossEntropyWithLogits"}, True),
  "tensordot_bias_add": (
    lambda x, y, w: tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=y, logits=tf.nn.bias_add(tf.tensordot(x, w["w"], [[2], [0]]), w["b"])
    ),
    {"MatMul", "BiasAdd"},
    True,
  ),
  "einsum_log_softmax_one_hot": (
    lambda x, y, w: -tf.reduce_sum(tf.one_hot(y, V) * tf.nn.log_softmax(tf.einsum("btf,fv->btv", x, w["w"])), -1),
    {"Einsum", "LogSoftmax", "OneHot", "Sum"},
    True,
  ),
  "batch_matmul_softmax": (
    lambda x, y, w: tf.reduce_sum(tf.nn.softmax(tf.matmul(x, w["w"])) ** 2, -1),
    {"BatchMatMulV2", "Softmax"},
    True,
  ),
  "dense_ce_v2": (
    lambda x, y, w: tf.nn.softmax_cross_entropy_with_logits(labels=_smooth(y), logits=tf.matmul(x, w["w"])),
    {"SoftmaxCrossEntropyWithLogits"},
    True,
  ),
  "dense_ce_v1": (
    lambda x, y, w: tf.compat.v1.nn.softmax_cross_entropy_with_logits(labels=_smooth(y), logits=tf.matmul(x, w["w"])),
    {"SoftmaxCrossEntropyWithLogits", "StopGradient"},
    True,
  ),
  "argmax_not_equal_cast": (
    lambda x, y, w: (
      tf.cast(tf.not_equal(tf.argmax(_logits(x, w), -1, output_type=tf.int32), y), tf.float32)
      + tf.reduce_sum(_logits(x, w), -1)
    ),
    {"ArgMax", "NotEqual", "Cast"},
    True,
  ),
  "sparse_ce_v1": (
    lambda x, y, w: tf.compat.v1.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=_logits(x, w)),
    {"MatMul", "SparseSoftmaxCrossEntropyWithLogits"},
    True,
  ),
  "embedding_lookup_variable": (
    lambda x, y, w: tf.reduce_sum(
      tf.nn.embedding_lookup(tf.compat.v1.get_variable("emb_var", initializer=WEIGHTS["emb"]), y) * x, -1
    ),
    {"ResourceGather"},
    True,
  ),
  "embedding_lookup": (
    lambda x, y, w: tf.reduce_sum(tf.tanh(tf.nn.embedding_lookup(w["emb"], y) + x) ** 2, -1),
    {"GatherV2", "Tanh"},
    True,
  ),
  "concat_transpose_expand_squeeze": (
    lambda x, y, w: tf.reduce_logsumexp(
      tf.squeeze(tf.transpose(tf.expand_dims(tf.concat([x, tf.square(x)], -1), -1), [0, 1, 3, 2]), [2]), -1
    ),
    {"ConcatV2", "Transpose", "ExpandDims", "Squeeze"},
    True,
  ),
  "select_add_n_clip": (
    lambda x, y, w: tf.reduce_max(tf.add_n([tf.where(x > 0, x, -x), x, tf.clip_by_value(x, -0.5, 0.5)]), -1),
    {"SelectV2", "AddN", "Minimum", "Maximum", "Max"},
    True,
  ),
  "layer_norm": (
    lambda x, y, w: tf.reduce_sum(tf.nn.relu(tf.matmul(_layer_norm(x), w["w2"])), -1),
    {"Mean", "Rsqrt", "BatchMatMulV2", "Relu"},
    True,
  ),
  # broadcast operands: [B,1,F] (a mean over time: computed unpacked), [1,T,1], [T,1]
  "broadcast_operands": (
    lambda x, y, w: tf.reduce_sum(
      tf.nn.relu(
        tf.matmul(x, w["w2"]) * tf.reduce_mean(x, axis=1, keepdims=True)
        + _pos(x)[None, :, None]
        + _pos(x)[:, None] * 0.5
      ),
      -1,
    ),
    {"BatchMatMulV2", "Relu", "AddV2", "Mul"},
    False,
  ),
}


def _layer_norm(x):
  mean = tf.reduce_mean(x, -1, keepdims=True)
  var = tf.reduce_mean(tf.math.squared_difference(x, mean), -1, keepdims=True)
  return (x - mean) * tf.math.rsqrt(var + 1e-3)


def _pos(x):
  return tf.sin(tf.cast(tf.range(tf.shape(x)[1]), tf.float32))  # [T]


def run(
  loss_fn, *, pack, x=X, labels=LABELS, lens=LENS, train=True, extra=None, seed_stateless=None, python_step=False
):
  """Builds ``loss_fn`` as a marked ``[B,T]`` loss with the rewrite on or off; returns the fetched
  summed loss, inv norm, gradients w.r.t. x and the weights, report, op types and ``extra`` fetches."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(7)
    if seed_stateless is not None:
      rc_nn.set_stateless_dropout_seed(seed_stateless)
    x_ph = tf.compat.v1.placeholder(tf.float32, [None, None, F], name="x")
    l_ph = tf.compat.v1.placeholder(tf.int32, [None, None], name="labels")
    lens_ph = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
    # A Python int step gives stateful dropout masks (stateless ones need a step tensor).
    step = 3 if python_step else tf.compat.v1.placeholder_with_default(tf.constant(3, tf.int64), [], name="step")
    w = {k: tf.constant(v, name=k) for k, v in WEIGHTS.items()}
    time_dim = rc.Dim(lens_ph, name="time")
    with rc.packing.enabled(pack):
      ctx = rc.init_train_step_run_ctx(train_flag=train, step=step)
      try:
        raw = loss_fn(x_ph, l_ph, w)
        ctx.mark_as_loss(rc.Tensor("loss", [rc.batch_dim, time_dim], "float32", raw_tensor=raw), "loss")
        loss = ctx.losses["loss"]
        summed, inv = loss.get_summed_loss().get_raw(), loss.get_inv_norm_factor().get_raw()
        rep = rc.packing.report(loss)
        listed = rc.packing.packed_ops(loss)
        extra_fetches = extra(graph) if extra else {}
      finally:
        rc.reset_run_ctx()
    variables = tf.compat.v1.global_variables()
    grads = tf.gradients(summed, [x_ph] + list(w.values()) + variables)
    grads = {
      k: tf.convert_to_tensor(g)
      for k, g in zip(["x"] + list(w) + [v.op.name for v in variables], grads)
      if g is not None
    }
    init = tf.compat.v1.global_variables_initializer()
  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(init)
    out = sess.run(
      {"summed": summed, "inv": inv, "grads": grads, "extra": extra_fetches}, {x_ph: x, l_ph: labels, lens_ph: lens}
    )
  out["report"], out["packed_ops"] = rep, listed
  out["types"] = {graph.get_operation_by_name(n).type for n in rep.packed_ops}
  out["graph"] = graph
  return out


class PackingTest(tf.test.TestCase, parameterized.TestCase):
  def assert_same(self, got, want, what=""):
    np.testing.assert_allclose(got["summed"], want["summed"], rtol=1e-5, err_msg=what)
    np.testing.assert_allclose(got["inv"], want["inv"], rtol=1e-6, err_msg=what)
    self.assertEqual(set(got["grads"]), set(want["grads"]))
    for k, g in want["grads"].items():
      np.testing.assert_allclose(
        got["grads"][k],
        g,
        rtol=1e-5,
        atol=1e-5 * max(1.0, np.abs(g).max(initial=0.0)),
        err_msg=f"{what}: gradient w.r.t. {k}",
      )

  @parameterized.named_parameters(*[(name, name) for name in CASES])
  def test_chain_same_values_and_gradients(self, name):
    fn, must_rebuild, nan_padding = CASES[name]
    want = run(fn, pack=False)
    got = run(fn, pack=True)
    self.assert_same(got, want, name)
    self.assertTrue(got["report"].rewritten, msg=got["report"])
    self.assertTrue(must_rebuild <= got["types"], msg=f"{name}: rebuilt {sorted(got['types'])}")
    self.assertFalse(want["report"].rewritten)
    self.assertIn("switched off", want["report"].reason)
    if name == "broadcast_operands":  # [B,1,F], [1,T,1] and [T,1] gathered frame by frame
      self.assertLen(got["report"].broadcast, 3)
    if nan_padding:  # garbage in padded frames reaches neither the loss nor a gradient
      dirty = run(fn, pack=True, x=_dirty(X))
      self.assert_same(dirty, want, f"{name} with NaN/Inf padding")
      self.assertTrue(np.isfinite(dirty["grads"]["x"]).all())

  def test_empty_batch_and_all_empty_sequences(self):
    for x, labels, lens in ((X[:0], LABELS[:0], LENS[:0]), (X, LABELS, np.zeros_like(LENS))):
      got, want = (
        run(_sparse_ce, pack=True, x=x, labels=labels, lens=lens),
        run(_sparse_ce, pack=False, x=x, labels=labels, lens=lens),
      )
      self.assert_same(got, want)
      self.assertEqual(float(got["summed"]), 0.0)
      self.assertTrue(got["report"].rewritten)

  def test_projection_runs_on_packed_rows(self):
    """The positive control: the projection's MatMul gets N = sum(lens) rows, not B*T."""

    def rows(graph):
      matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
      return {op.name: tf.shape(op.inputs[0])[0] for op in matmuls}

    on = run(_sparse_ce, pack=True, extra=rows)
    off = run(_sparse_ce, pack=False, extra=rows)
    self.assertEqual(sorted(off["extra"].values()), [X.shape[0] * X.shape[1]])
    packed = {k: v for k, v in on["extra"].items() if "packed_frames" in k}
    self.assertEqual(list(packed.values()), [LENS.sum()], msg=on["extra"])

  def test_nothing_existing_changes_and_other_consumer_sees_unpacked(self):
    """A tensor also consumed elsewhere (a mean over time) keeps its [B,T,F] version for that consumer;
    the rewrite ends there (it is computed anyway) and no existing op gets new inputs."""
    seen = {}

    def fn(x, labels, w):
      h = tf.nn.relu(tf.matmul(x, w["w2"]), name="h")  # [B,T,F]
      seen["other"] = tf.reduce_mean(h, axis=1, name="other")  # [B,F]: mixes frames, consumes h unpacked
      graph = tf.compat.v1.get_default_graph()
      seen["inputs"] = {op.name: [t.name for t in op.inputs] for op in graph.get_operations()}
      return _sparse_ce(h, labels, w)

    got = run(fn, pack=True, extra=lambda g: {"other": seen["other"]})
    want = run(fn, pack=False)
    self.assert_same(got, want)
    graph = got["graph"]
    for name, inputs in seen["inputs"].items():
      self.assertEqual([t.name for t in graph.get_operation_by_name(name).inputs], inputs, msg=name)
    self.assertEqual(seen["other"].shape.as_list(), [None, F])
    h_np = np.maximum(X @ WEIGHTS["w2"], 0)
    np.testing.assert_allclose(got["extra"]["other"], h_np.mean(axis=1), rtol=1e-5)
    self.assertIn("h:0", got["report"].frontier)
    self.assertIn("needed unpacked elsewhere", got["report"].frontier["h:0"])
    self.assertIn("MatMul", got["types"])  # the projection after h is still rebuilt

  def test_unknown_op_ends_the_rewrite(self):
    def fn(x, labels, w):
      return _sparse_ce(tf.cumsum(x, axis=1, name="running"), labels, w)  # cumsum over time mixes frames

    got, want = run(fn, pack=True), run(fn, pack=False)
    self.assert_same(got, want)
    self.assertIn("running:0", got["report"].frontier)
    self.assertIn("Cumsum", got["report"].frontier["running:0"])
    self.assertNotIn("Cumsum", got["types"])

  def test_cond_output_ends_the_rewrite(self):
    def fn(x, labels, w):
      h = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x * 3.0)
      return _sparse_ce(h, labels, w)

    got, want = run(fn, pack=True), run(fn, pack=False)
    self.assert_same(got, want)
    ended = [r for r in got["report"].frontier.values() if "If" in r or "while_loop / cond" in r]
    self.assertTrue(ended, msg=got["report"].frontier)

  @parameterized.named_parameters(("stateless", 123), ("stateful", None))
  def test_dropout_mask_is_the_unpacked_one(self, stateless_seed):
    """With the train flag on, the re-created mask equals the unpacked graph's (p = 0.5: any other mask
    would change the loss); rebuilding happened through the mask's random op."""

    def fn(x, labels, w):
      return _sparse_ce(rc.dropout(tf.nn.relu(tf.matmul(x, w["w2"])), 0.5), labels, w)

    stateful = stateless_seed is None
    got = run(fn, pack=True, seed_stateless=stateless_seed, python_step=stateful)
    want = run(fn, pack=False, seed_stateless=stateless_seed, python_step=stateful)
    self.assert_same(got, want)
    random = "StatelessRandomUniformV2" if stateless_seed else "RandomUniform"
    self.assertIn(random, got["types"])
    no_dropout = run(_sparse_ce_relu, pack=False)
    self.assertGreater(abs(float(want["summed"]) - float(no_dropout["summed"])), 1e-3)  # the mask matters

  def test_shared_producer_packed_once(self):
    """ce and fer from the same logits: one projection on packed rows, one flatten per input."""

    def build(pack):
      graph = tf.Graph()
      with graph.as_default(), rc.packing.enabled(pack):
        x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
        labels = tf.compat.v1.placeholder(tf.int32, [None, None])
        time_dim = rc.Dim(tf.compat.v1.placeholder(tf.int32, [None]), name="time")
        w = {k: tf.constant(v) for k, v in WEIGHTS.items()}
        ctx = rc.init_train_step_run_ctx(train_flag=True)
        try:
          logits = _logits(x, w)
          ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
          fer = tf.cast(tf.not_equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
          dims = [rc.batch_dim, time_dim]
          ctx.mark_as_loss(rc.Tensor("ce", dims, "float32", raw_tensor=ce), "ce")
          ctx.mark_as_loss(rc.Tensor("fer", dims, "float32", raw_tensor=fer), "fer", as_error=True)
          ctx.total_loss()
          rc.report_fetches(ctx.losses)
          reports = {k: rc.packing.report(v) for k, v in ctx.losses.items()}
        finally:
          rc.reset_run_ctx()
      return [op.type for op in graph.get_operations()], reports

    types, reports = build(True)
    self.assertEqual(types.count("MatMul"), 2)  # the original and one packed clone
    self.assertEqual(types.count("FlattenWithSeqLenMask"), 2)  # x and the labels, once each
    self.assertIn("ArgMax", [n.rsplit("/", 1)[-1] for n in reports["fer"].packed_ops])
    self.assertTrue(reports["fer"].reused)
    off_types, _ = build(False)
    self.assertEqual(off_types.count("MatMul"), 1)
    self.assertEqual(off_types.count("FlattenWithSeqLenMask"), 2)  # the two loss values

  def test_packed_ops_lists_the_chain(self):
    got = run(_sparse_ce, pack=True)
    names = got["report"].packed_ops
    graph = got["graph"]
    types = [graph.get_operation_by_name(n).type for n in names]
    # the pair around the MatMul; logits and labels to rows and the cost back in the CE: 5 identities
    self.assertEqual(types.count("Reshape"), 5)
    self.assertIn("SparseSoftmaxCrossEntropyWithLogits", types)
    self.assertEqual(list(got["report"].frontier), ["x:0", "labels:0"])
    self.assertEqual(got["packed_ops"], names)

  def test_off_switches(self):
    self.assertIn("switched off", run(_sparse_ce, pack=False)["report"].reason)
    with mock.patch.dict(os.environ, {rc.packing.ENV_VAR: "0"}):
      self.assertIn("switched off", run(_sparse_ce, pack=None)["report"].reason)
      self.assertTrue(run(_sparse_ce, pack=True)["report"].rewritten)  # the context wins
    with mock.patch.dict(os.environ, {rc.packing.ENV_VAR: "maybe"}):
      with self.assertRaisesRegex(ValueError, "RETURNN_RC_PACKING='maybe'"):
        rc.packing.is_enabled()
    with self.assertRaisesRegex(TypeError, "flag must be True, False or None"):
      with rc.packing.enabled("yes"):
        pass

  def test_use_flatten_frames_false_is_not_rewritten(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
      lens = tf.compat.v1.placeholder(tf.int32, [None])
      ctx = rc.init_train_step_run_ctx(train_flag=True)
      try:
        raw = tf.reduce_sum(tf.matmul(x, WEIGHTS["w2"]), -1)
        ctx.mark_as_loss(raw, "loss", dims=[rc.batch_dim, rc.Dim(lens, name="t")], use_flatten_frames=False)
        rep = rc.packing.report(ctx.losses["loss"])
      finally:
        rc.reset_run_ctx()
    self.assertFalse(rep.rewritten)
    self.assertEqual(rep.reason, "use_flatten_frames=False")
    self.assertNotIn("FlattenWithSeqLenMask", [op.type for op in graph.get_operations()])

  def test_time_major_loss_not_rewritten(self):
    def fn(x, labels, w):
      return _sparse_ce(x, labels, w)

    graph = tf.Graph()
    with graph.as_default():
      x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
      labels = tf.compat.v1.placeholder(tf.int32, [None, None])
      time_dim = rc.Dim(tf.compat.v1.placeholder(tf.int32, [None]), name="t")
      ctx = rc.init_train_step_run_ctx(train_flag=True)
      try:
        raw = tf.transpose(fn(x, labels, {k: tf.constant(v) for k, v in WEIGHTS.items()}))  # [T,B]
        ctx.mark_as_loss(raw, "loss", dims=[time_dim, rc.batch_dim])
        rep = rc.packing.report(ctx.losses["loss"])
      finally:
        rc.reset_run_ctx()
    self.assertFalse(rep.rewritten)
    self.assertIn("not [batch, time", rep.reason)

  def test_xla_context_default_off(self):
    graph = tf.Graph()
    with graph.as_default(), tf.xla.experimental.jit_scope():
      x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
      labels = tf.compat.v1.placeholder(tf.int32, [None, None])
      time_dim = rc.Dim(tf.compat.v1.placeholder(tf.int32, [None]), name="t")
      w = {k: tf.constant(v) for k, v in WEIGHTS.items()}
      reps = {}
      for flag in (None, True):
        with rc.packing.enabled(flag):
          ctx = rc.init_train_step_run_ctx(train_flag=True)
          try:
            ctx.mark_as_loss(_sparse_ce(x, labels, w), "loss", dims=[rc.batch_dim, time_dim])
            reps[flag] = rc.packing.report(ctx.losses["loss"])
          finally:
            rc.reset_run_ctx()
    self.assertFalse(reps[None].rewritten)
    self.assertIn("XLA", reps[None].reason)
    self.assertTrue(reps[True].rewritten)

  def test_report_needs_a_reduced_loss(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "was not reduced"):
        rc.packing.report(tf.zeros([2, 3]))
      with self.assertRaisesRegex(TypeError, "expected an rc.Loss"):
        rc.packing.report(3)


def _sparse_ce_relu(x, labels, w):
  return _sparse_ce(tf.nn.relu(tf.matmul(x, w["w2"])), labels, w)


class GoldensPackedTest(parameterized.TestCase):
  """Every golden of ``graphs/``: built with the rewrite off and on, same weights, train flag on
  (stateless dropout masks): reductions and gradients of ``total_loss`` equal."""

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_golden(self, name):
    results, reports = {}, {}
    weights = None
    for on in (False, True):
      with rc.packing.enabled(on):
        built = goldens.build(name)
      reports[on] = {k: rc.packing.report(loss) for k, loss in built.train_graph.losses.items()}
      graph = built.graph
      with tf.compat.v1.Session(graph=built.graph) as sess:
        sess.run(built.init_op)
        if weights is None:
          weights = built.get_weights(sess)
        else:
          built.set_weights(sess, weights)
        batch = built.pad(goldens.data(name, num_seqs=6))
        results[on] = sess.run(
          {"report": built.report, "grads": built.grads, "total": built.total_loss}, built.feed(batch, train=True)
        )
    for loss, (summed, inv) in results[False]["report"].items():
      np.testing.assert_allclose(results[True]["report"][loss][0], summed, rtol=1e-5, err_msg=f"{name} {loss}")
      np.testing.assert_allclose(results[True]["report"][loss][1], inv, rtol=1e-6, err_msg=f"{name} {loss}")
    for var, grad in results[False]["grads"].items():
      np.testing.assert_allclose(
        results[True]["grads"][var], grad, rtol=1e-5, atol=1e-5 * max(1e-3, np.abs(grad).max()), err_msg=f"{name} {var}"
      )
    # Every [B,T,...] loss was rewritten, and with the switch off none was ([B] and time-major [T,B] losses
    # are not rewritten: their values are packed or masked as before).
    frame_losses = [
      k for k, loss in built.train_graph.losses.items() if rc.packing.loss.frame_loss_dims(loss.loss) is None
    ]
    self.assertEqual(bool(frame_losses), name not in ("seq_classifier", "ctc_acoustic"), msg=f"{name}: {frame_losses}")
    for loss in frame_losses:
      self.assertTrue(reports[True][loss].rewritten, msg=f"{name} {loss}: {reports[True][loss]}")
      self.assertFalse(reports[False][loss].rewritten)
    if name in ("char_lm", "two_losses"):
      rebuilt = {graph.get_operation_by_name(op).type for r in reports[True].values() for op in r.packed_ops}
      self.assertIn("MatMul", rebuilt)  # the output projection runs on packed rows
      # The index-hash dropout mask (rc.dropout batch_axis=0) before the projection: its uniform numbers are
      # packed at the frontier, the comparison with the drop probability runs on packed rows.
      self.assertIn("GreaterEqual", rebuilt)
      frontier = [t for r in reports[True].values() for t in r.frontier]
      self.assertTrue(any(re.search(r"dropout(_\d+)?/mask_hash/", t) for t in frontier), msg=f"{name}: {frontier}")


if __name__ == "__main__":
  absltest.main()


class ExplicitPackTest(tf.test.TestCase):
  """``rc.pack`` / ``rc.unpack`` and a loss on the packed dim."""

  def _graph(self, order="BTF"):
    x = tf.compat.v1.placeholder(tf.float32, [None, None, F])
    lens = tf.compat.v1.placeholder(tf.int32, [None])
    time_dim, feat = rc.Dim(lens, name="time"), rc.Dim(F, name="feat")
    raw = tf.matmul(x, WEIGHTS["w2"])  # [B,T,F]
    dims = [rc.batch_dim, time_dim, feat]
    if order == "TBF":
      raw, dims = tf.transpose(raw, [1, 0, 2]), [time_dim, rc.batch_dim, feat]
    return x, lens, rc.Tensor("h", dims, "float32", raw_tensor=raw, feature_dim=feat), time_dim, feat

  def test_pack_mark_as_loss_unpack(self):
    valid = np.arange(X.shape[1])[None, :] < LENS[:, None]
    h_np = X @ WEIGHTS["w2"]
    for order in ("BTF", "TBF"):
      graph = tf.Graph()
      with graph.as_default():
        x, lens, h, time_dim, feat = self._graph(order)
        packed = rc.pack(h)
        self.assertIsInstance(packed.dims[0], rc.packing.PackedDim)
        self.assertIs(packed.dims[1], feat)
        self.assertIs(packed.feature_dim, feat)
        self.assertFalse(packed.dims[0].is_dynamic())
        flattens = [op.type for op in graph.get_operations()].count("FlattenWithSeqLenMask")
        ctx = rc.init_train_step_run_ctx(train_flag=True)
        try:
          ctx.mark_as_loss(packed, "packed_loss")
          loss = ctx.losses["packed_loss"]
          summed, inv = loss.get_summed_loss().get_raw(), loss.get_inv_norm_factor().get_raw()
        finally:
          rc.reset_run_ctx()
        self.assertEqual([op.type for op in graph.get_operations()].count("FlattenWithSeqLenMask"), flattens)
        unpacked = rc.unpack(packed)
        self.assertEqual(unpacked.dims, (rc.batch_dim, time_dim, feat))
        rewritten = rc.packing.report(packed.dims[0].source).rewritten
        with tf.compat.v1.Session() as sess:
          got = sess.run({"p": packed.raw_tensor, "s": summed, "n": inv, "u": unpacked.raw_tensor}, {x: X, lens: LENS})
      np.testing.assert_allclose(got["p"], h_np[valid], rtol=1e-5, err_msg=order)
      np.testing.assert_allclose(got["s"], h_np[valid].sum(), rtol=1e-5, err_msg=order)
      self.assertEqual(got["n"], LENS.sum() * F)
      np.testing.assert_allclose(got["u"], np.where(valid[:, :, None], h_np, 0), rtol=1e-5, err_msg=order)
      self.assertEqual(rewritten, order == "BTF")  # the matmul ran on packed frames (TBF: a transpose first)

  def test_bad_input(self):
    with tf.Graph().as_default():
      x, _, h, time_dim, _ = self._graph()
      with self.assertRaisesRegex(TypeError, "rc.pack: expected an rc.Tensor"):
        rc.pack(x)
      with self.assertRaisesRegex(ValueError, "has no batch dim"):
        rc.pack(rc.Tensor("n", [time_dim], "float32", raw_tensor=x[0, :, 0]))
      other = rc.Dim(tf.constant([1, 1]), name="other")
      two = rc.Tensor("two", [rc.batch_dim, time_dim, other], "float32", raw_tensor=x[:, :, :2])
      with self.assertRaisesRegex(ValueError, "2 dynamic dims; pass dim="):
        rc.pack(two)
      with self.assertRaisesRegex(ValueError, "only one can be packed"):
        rc.pack(two, time_dim)
      with self.assertRaisesRegex(ValueError, "exactly one packed dim"):
        rc.unpack(h)
      packed = rc.pack(h)
      with self.assertRaisesRegex(ValueError, "is a packed dim; it has no per-sequence sizes"):
        packed.dims[0].dyn_size = tf.constant([1])
