"""rc.dropout with static and symbolic train flags: run-time switching without graph changes."""

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
      grad, = tf.gradients(tf.reduce_sum(y), [x])
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


if __name__ == "__main__":
  absltest.main()
