"""rc.dropout with static and symbolic train flags: run-time switching without graph changes; stateless
masks (also in loop / cond bodies), resume exactness, input checks."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc

_COND_OPS = {"If", "StatelessIf", "Switch", "Merge", "Cond"}
_RANDOM_OPS = {"RandomUniform", "RandomStandardNormal", "StatelessRandomUniformV2", "RandomUniformInt"}


def _op_types(graph):
  return {op.type for op in graph.get_operations()}


class DropoutTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_static_false_no_ops(self):
    graph = tf.Graph()
    with graph.as_default():
      x = tf.ones([4, 8])
      rc.init_train_step_run_ctx(train_flag=False)
      n_ops = len(graph.get_operations())
      self.assertIs(rc.dropout(x, 0.5), x)
      self.assertLen(graph.get_operations(), n_ops)
      self.assertEmpty(_op_types(graph) & (_COND_OPS | _RANDOM_OPS))

  def test_static_true(self):
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.set_random_seed(1)
      rc.init_train_step_run_ctx(train_flag=True)
      y = rc.dropout(tf.ones([100, 100]), 0.25)
      self.assertEmpty(_op_types(graph) & _COND_OPS)
      with self.cached_session() as sess:
        y_v = sess.run(y)
    self.assertAllClose(np.unique(y_v), [0.0, 1 / 0.75])
    self.assertAllClose(np.mean(y_v == 0), 0.25, atol=0.02)

  @parameterized.parameters("placeholder", "variable")
  def test_symbolic_flag_switches_in_finalized_graph(self, kind):
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.set_random_seed(2)
      gs = rc.graph_state.get_graph_state(train_flag_kind=kind)
      rc.init_train_step_run_ctx(train_flag=gs.train_flag)
      x_np = np.random.RandomState(0).normal(size=[64, 32]).astype(np.float32)
      x = tf.constant(x_np)
      y = rc.dropout(x, 0.5)
      (grad,) = tf.gradients(tf.reduce_sum(y), [x])
      self.assertEmpty(_op_types(graph) & _COND_OPS)
      init = tf.compat.v1.global_variables_initializer()
      graph.finalize()
      with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(init)
        results = {}
        for train in (False, True, False, True):
          gs.set_train_flag(sess, train)
          results.setdefault(train, []).append(sess.run([y, grad], feed_dict=gs.feed_dict(train=train)))
    for y_v, g_v in results[False]:
      self.assertAllEqual(y_v, x_np)  # exactly identity when off
      self.assertAllEqual(g_v, np.ones_like(x_np))
    for y_v, g_v in results[True]:
      dropped = y_v == 0
      self.assertAllClose(np.mean(dropped), 0.5, atol=0.05)
      self.assertAllClose(y_v[~dropped], 2 * x_np[~dropped])
      self.assertAllEqual(g_v, np.where(dropped, 0.0, 2.0))  # gradient = mask * scale
    self.assertNotAllEqual(results[True][0][0], results[True][1][0])

  def test_func_override_disables_dropout_only(self):
    graph = tf.Graph()
    with graph.as_default():
      ctx = rc.init_train_step_run_ctx(train_flag=True)
      x = tf.ones([3])
      with ctx.train_flag_ctx(False, func=rc.dropout):
        with ctx.train_flag_ctx(True):
          self.assertIs(rc.dropout(x, 0.5), x)
          self.assertIs(ctx.train_flag, True)
      self.assertIsNot(rc.dropout(x, 0.5), x)

  def test_on_forward(self):
    with tf.Graph().as_default():
      rc.init_forward_step_run_ctx()
      x = tf.ones([1000])
      self.assertIs(rc.dropout(x, 0.5), x)
      y = rc.dropout(x, 0.5, on_forward=True)
      with self.cached_session() as sess:
        self.assertAllClose(np.mean(sess.run(y) == 0), 0.5, atol=0.06)

  def test_axis_broadcast_and_rc_tensor(self):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      t = rc.Dim(tf.constant([5, 5]), name="t")
      f = rc.Dim(50, name="f")
      x = rc.Tensor("x", [rc.batch_dim, t, f], "float32", raw_tensor=tf.ones([2, 5, 50]), feature_dim=f)
      y = rc.dropout(x, 0.5, axis=f)
      y_true = rc.dropout(x, 0.5, axis=True)
      y_raw = rc.dropout(tf.ones([2, 5, 50]), 0.5, axis=[0, -1])
      self.assertIsInstance(y, rc.Tensor)
      self.assertEqual(y.dims, x.dims)
      with self.cached_session() as sess:
        y_v, y_true_v, y_raw_v = sess.run([y.raw_tensor, y_true.raw_tensor, y_raw])
    for v in (y_v, y_true_v, y_raw_v):
      self.assertAllEqual(v, np.broadcast_to(v[:, :1, :], v.shape))  # same mask over time
    self.assertFalse(np.all(y_v[0] == y_v[1]) and np.all(y_raw_v[0] == y_raw_v[1]))

  @parameterized.parameters(np.float16, np.float64)
  def test_dtypes(self, dtype):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      y = rc.dropout(tf.ones([10], dtype), 0.5)
      self.assertEqual(y.dtype, tf.as_dtype(dtype))

  def test_tensor_drop_prob(self):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      prob = tf.compat.v1.placeholder_with_default(0.0, [])
      y = rc.dropout(tf.ones([1000]), prob)
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(y), np.ones([1000]))
        self.assertAllClose(np.mean(sess.run(y, {prob: 0.75}) == 0), 0.75, atol=0.06)

  def test_bad_input(self):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(ValueError, r"drop_prob must be in \[0, 1\), got 1.0"):
        rc.dropout(tf.ones([2]), 1.0)
      with self.assertRaisesRegex(TypeError, "x must be a float tensor, got dtype int32"):
        rc.dropout(tf.ones([2], tf.int32), 0.5)
      with self.assertRaisesRegex(ValueError, "axis 2 out of range for rank 1"):
        rc.dropout(tf.ones([2]), 0.5, axis=2)
      with self.assertRaisesRegex(ValueError, "axis=True needs an rc.Tensor with a feature_dim"):
        rc.dropout(tf.ones([2]), 0.5, axis=True)


class GraphStateTest(tf.test.TestCase):
  def test_global_step_advanced_by_optimizer(self):
    graph = tf.Graph()
    with graph.as_default():
      gs = rc.graph_state.get_graph_state()
      self.assertIs(rc.graph_state.get_graph_state(), gs)
      w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.constant_initializer(1.0))
      train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(w * w, global_step=gs.step_var)
      with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        self.assertEqual((gs.get_step(sess), gs.get_epoch(sess)), (0, 1))
        for _ in range(3):
          sess.run(train_op)
        gs.set_epoch(sess, 4)
        self.assertEqual((gs.get_step(sess), gs.get_epoch(sess)), (3, 4))
        gs.set_step(sess, 10)
        self.assertEqual(sess.run(gs.step), 10)
        with self.assertRaisesRegex(ValueError, "epoch must be >= 1, got 0"):
          gs.set_epoch(sess, 0)

  def test_kind_errors(self):
    with tf.Graph().as_default():
      rc.graph_state.get_graph_state(train_flag_kind="variable")
      with self.assertRaisesRegex(ValueError, "already has a train flag of kind 'variable'"):
        rc.graph_state.get_graph_state()
      with self.assertRaisesRegex(ValueError, "train_flag_kind must be"):
        rc.graph_state.GraphState(tf.compat.v1.get_default_graph(), "feed")


def _all_op_types(graph):
  """Op types of every node, including the bodies of loops, conds and functions."""
  graph_def = graph.as_graph_def()
  types = {n.op for n in graph_def.node}
  for fn in graph_def.library.function:
    types.update(n.op for n in fn.node_def)
  return types


_STATEFUL_RANDOM = {"RandomUniform", "RandomStandardNormal", "RandomUniformInt", "TruncatedNormal"}


def _build_control_flow_graph(seed=None):
  """Dropout in a tf.while_loop body (4 iterations, two call sites), a tf.cond branch and a tf.map_fn body;
  the run context's step is the graph's step tensor (no explicit stateless seed)."""
  graph = tf.Graph()
  with graph.as_default():
    if seed is not None:
      tf.compat.v1.set_random_seed(seed)
    gs = rc.graph_state.get_graph_state()
    rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
    x = tf.ones([64])

    def body(i, acc_a, acc_b):
      return i + 1, acc_a.write(i, rc.dropout(x, 0.5)), acc_b.write(i, rc.dropout(x, 0.5))

    arrays = [tf.TensorArray(tf.float32, size=4) for _ in range(2)]
    _, acc_a, acc_b = tf.while_loop(lambda i, *_: i < 4, body, [tf.constant(0)] + arrays)
    fetches = {
      "loop_a": acc_a.stack(),
      "loop_b": acc_b.stack(),
      "cond": tf.cond(tf.constant(True), lambda: rc.dropout(x, 0.5), lambda: x),
      "map_fn": tf.map_fn(lambda row: rc.dropout(row, 0.5), tf.ones([3, 64])),
      "plain": rc.dropout(x, 0.5),
    }
    init = tf.compat.v1.global_variables_initializer()
  return graph, gs, fetches, init


class StatelessControlFlowTest(tf.test.TestCase):
  """Dropout masks inside tf.while_loop / tf.cond / tf.map_fn bodies are stateless: f(seed, op, step, iteration)."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _run(self, steps, *, eval_first=False, seed=None):
    graph, gs, fetches, init = _build_control_flow_graph(seed)
    out = []
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(init)
      if eval_first:
        self.assertAllEqual(sess.run(fetches["loop_a"], gs.feed_dict(train=False)), np.ones([4, 64]))
      for step in steps:
        gs.set_step(sess, step)
        out.append(sess.run(fetches, gs.feed_dict(train=True)))
    return graph, out

  def test_no_stateful_random_op_in_any_body(self):
    graph, _ = self._run([])
    types = _all_op_types(graph)
    self.assertIn("StatelessRandomUniformV2", types)
    self.assertEmpty(types & _STATEFUL_RANDOM)

  def test_same_step_same_masks_in_another_graph_and_session(self):
    _, (first, second) = self._run([5, 6])
    _, (again,) = self._run([5], eval_first=True)  # another graph (other body names), an eval run first
    for key in first:
      self.assertAllEqual(first[key], again[key], msg=key)
      self.assertNotAllEqual(first[key], second[key], msg=key)  # the step changes the masks

  def test_masks_differ_per_iteration_and_call_site(self):
    _, (out,) = self._run([3])
    for key in ("loop_a", "loop_b", "map_fn"):
      rows = out[key]
      self.assertAllClose(np.mean(rows == 0), 0.5, atol=0.15)
      for i in range(len(rows)):
        for j in range(i):
          self.assertNotAllEqual(rows[i], rows[j], msg=f"{key}: iterations {i} and {j} have the same mask")
    self.assertNotAllEqual(out["loop_a"], out["loop_b"])
    self.assertNotAllEqual(out["cond"], out["plain"])

  def test_seed_selects_masks(self):
    """Explicit seed, else the graph-level seed, else the default seed."""

    def mask(graph_seed=None, explicit=None):
      rc.reset_run_ctx()
      with tf.Graph().as_default() as graph:
        if graph_seed is not None:
          tf.compat.v1.set_random_seed(graph_seed)
        if explicit is not None:
          rc.nn.set_stateless_dropout_seed(explicit)
        gs = rc.graph_state.get_graph_state()
        rc.init_train_step_run_ctx(train_flag=True, step=gs.step)
        y = rc.dropout(tf.ones([128]), 0.5)
        with tf.compat.v1.Session(graph=graph) as sess:
          sess.run(tf.compat.v1.global_variables_initializer())
          return sess.run(y)

    default, seeded = mask(), mask(graph_seed=123)
    self.assertAllEqual(default, mask(explicit=rc.nn.DEFAULT_STATELESS_SEED))
    self.assertNotAllEqual(default, seeded)
    self.assertAllEqual(seeded, mask(graph_seed=123))
    self.assertAllEqual(seeded, mask(graph_seed=7, explicit=123))  # the explicit seed wins


def _build_rnn(dropout_in_loop=True):
  """A tanh RNN over 5 frames with dropout on its input inside the tf.while_loop body; SGD on the graph's
  step; a user loop with rc.graph_state (graph seed set, no explicit stateless seed)."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(11)
    gs = rc.graph_state.get_graph_state()
    ctx = rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
    rng = np.random.RandomState(0)
    x = tf.constant(rng.normal(size=[5, 4, 8]).astype(np.float32))  # [T,B,F]
    w = tf.compat.v1.get_variable("w", initializer=tf.constant(rng.normal(size=[8, 8]).astype(np.float32) * 0.3))
    u = tf.compat.v1.get_variable("u", initializer=tf.constant(rng.normal(size=[8, 8]).astype(np.float32) * 0.3))

    def body(t, h):
      x_t = x[t]
      if dropout_in_loop:
        x_t = rc.dropout(x_t, 0.3)
      return t + 1, tf.tanh(tf.matmul(x_t, w) + tf.matmul(h, u))

    _, h = tf.while_loop(lambda t, h: t < 5, body, [tf.constant(0), tf.zeros([4, 8])])
    ctx.mark_as_loss(tf.reduce_sum(tf.square(h - 0.5), axis=-1), "mse", dims=[rc.batch_dim])
    loss = ctx.losses["mse"].get_summed_loss().raw_tensor
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.05).minimize(
      ctx.total_loss().raw_tensor, global_step=gs.step_var
    )
    saver = tf.compat.v1.train.Saver()
    init = tf.compat.v1.global_variables_initializer()
  return graph, gs, loss, train_op, saver, init


class RnnResumeTest(tf.test.TestCase):
  """Resume is exact for an RNN with dropout in its while_loop: a restarted run (new graph, new session,
  an evaluation run first) gives the same losses and weights as an uninterrupted one."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _train(self, sess, gs, loss, train_op, n):
    return [sess.run([loss, train_op], gs.feed_dict(train=True))[0] for _ in range(n)]

  def test_resume_exact(self):
    ckpt = os.path.join(self.create_tempdir().full_path, "model")
    graph, gs, loss, train_op, saver, init = _build_rnn()
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(init)
      straight = self._train(sess, gs, loss, train_op, 4)
      straight_weights = sess.run(graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES))
    graph, gs, loss, train_op, saver, init = _build_rnn()
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(init)
      first = self._train(sess, gs, loss, train_op, 2)
      saver.save(sess, ckpt)
    graph, gs, loss, train_op, saver, init = _build_rnn()
    with tf.compat.v1.Session(graph=graph) as sess:
      saver.restore(sess, ckpt)
      self.assertEqual(gs.get_step(sess), 2)
      sess.run(loss, gs.feed_dict(train=False))  # an evaluation run before training goes on
      rest = self._train(sess, gs, loss, train_op, 2)
      weights = sess.run(graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES))
    self.assertAllEqual(first + rest, straight)
    for got, want in zip(weights, straight_weights):
      self.assertAllEqual(got, want)
    self.assertNotAllClose(straight[2], straight[3])  # dropout is on: the control can fail


class EvalRunDoesNotChangeMasksTest(tf.test.TestCase):
  """A user loop with rc.graph_state (step tensor, no explicit seed): stateless by default, so one
  evaluation run before training changes no later mask."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _masks(self, eval_first):
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.set_random_seed(5)
      gs = rc.graph_state.get_graph_state()
      rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
      y = rc.dropout(tf.ones([256]), 0.5)
      advance = tf.compat.v1.assign_add(gs.step_var, 1)
      with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        if eval_first:
          self.assertAllEqual(sess.run(y, gs.feed_dict(train=False)), np.ones([256]))
        out = []
        for _ in range(3):
          out.append(sess.run(y, gs.feed_dict(train=True)))
          sess.run(advance)
    self.assertNotIn("RandomUniform", _op_types(graph))
    return out

  def test_eval_first_same_masks(self):
    plain, after_eval = self._masks(False), self._masks(True)
    for a, b in zip(plain, after_eval):
      self.assertAllEqual(a, b)
    self.assertNotAllEqual(plain[0], plain[1])


class DropoutValidationTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  @parameterized.parameters(1.0, -0.1, 1.5, np.nan)
  def test_tensor_drop_prob_checked_at_run_time(self, bad):
    with tf.Graph().as_default():
      gs = rc.graph_state.get_graph_state()
      rc.init_train_step_run_ctx(train_flag=gs.train_flag)
      prob = tf.compat.v1.placeholder(tf.float32, [])
      y = rc.dropout(tf.ones([8]), prob)
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(y, {prob: 0.25, **gs.feed_dict(train=False)}), np.ones([8]))
        for train in (True, False):
          with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "drop_prob is out of range"):
            sess.run(y, {prob: bad, **gs.feed_dict(train=train)})

  def test_tensor_drop_prob_shape_and_dtype(self):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(ValueError, r"a tensor drop_prob must be a scalar, got shape \(2,\)"):
        rc.dropout(tf.ones([2]), tf.constant([0.1, 0.2]))
      with self.assertRaisesRegex(TypeError, "a tensor drop_prob must be a float tensor, got dtype int32"):
        rc.dropout(tf.ones([2]), tf.constant(0))
      with self.assertRaisesRegex(TypeError, "on_forward must be a bool, got str"):
        rc.dropout(tf.ones([2]), 0.5, on_forward="yes")
      y = rc.dropout(tf.ones([2]), np.float32(0.5))  # numpy scalars are numbers
      self.assertIsNot(y, None)
      with self.assertRaisesRegex(ValueError, r"drop_prob must be in \[0, 1\), got nan"):
        rc.dropout(tf.ones([2]), float("nan"))

  def test_seed_validation(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(TypeError, "seed must be an int, got float"):
        rc.nn.set_stateless_dropout_seed(1.5)
      with self.assertRaisesRegex(ValueError, r"seed must be in \[0, 2\*\*63\), got -1"):
        rc.nn.set_stateless_dropout_seed(-1)
      with self.assertRaisesRegex(TypeError, "graph must be a tf.Graph, got str"):
        rc.nn.set_stateless_dropout_seed(1, graph="g")

  def test_graph_state_validation(self):
    with tf.Graph().as_default():
      gs = rc.graph_state.get_graph_state()
      with self.assertRaisesRegex(TypeError, "train must be a bool, got str"):
        gs.feed_dict(train="False")
      with self.cached_session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        with self.assertRaisesRegex(TypeError, "epoch must be an int, got float"):
          gs.set_epoch(sess, 1.5)
        with self.assertRaisesRegex(TypeError, "step must be an int, got bool"):
          gs.set_step(sess, True)
        with self.assertRaisesRegex(ValueError, "step must be >= 0, got -2"):
          gs.set_step(sess, -2)
      with self.assertRaisesRegex(TypeError, "graph must be a tf.Graph, got str"):
        rc.graph_state.get_graph_state("graph")


if __name__ == "__main__":
  absltest.main()
