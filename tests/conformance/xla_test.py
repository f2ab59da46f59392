"""XLA: the train step compiled with ``jit_scope`` (as ``EngineConfig(xla=True)`` does) computes the
same losses, gradients and updates as the plain graph, and the custom op runs inside the compiled
clusters.

Op-in-cluster check: in the XLA build every ``FlattenWithSeqLenMask`` / ``UnflattenWithSeqLenMask``
node carries ``_XlaCompile=True``; after TF's rewrite (``RunOptions.output_partition_graphs``) no such
node is left in the partition graphs that the executor runs, ``_XlaRun`` nodes are, and the
``FULL_TRACE`` step stats show ``_XlaRun`` executed and no custom-op node executed on the plain
executor (also not in the lazy-compilation fallback ``PartitionedCall``). Positive control: the same
trace of the plain build does show the custom op executed.
"""

import collections
import re

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from tests.conformance import goldens

CUSTOM_OPS = ("FlattenWithSeqLenMask", "UnflattenWithSeqLenMask")
_LABEL_OP = re.compile(r"=\s*([A-Za-z0-9_]+)\(")


def _traced_run(built, sess, fetches, feed):
  """Runs with a full trace; returns (result, Counter of executed op types, partition graph op types)."""
  options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE, output_partition_graphs=True)
  meta = tf.compat.v1.RunMetadata()
  result = sess.run(fetches, feed, options=options, run_metadata=meta)
  node_types = {n.name: n.op for pg in meta.partition_graphs for n in pg.node}
  graph_types = {op.name: op.type for op in built.graph.get_operations()}
  executed = collections.Counter()
  for dev in meta.step_stats.dev_stats:
    for stats in dev.node_stats:
      op_type = node_types.get(stats.node_name) or graph_types.get(stats.node_name)
      if op_type is None:
        match = _LABEL_OP.search(stats.timeline_label)
        op_type = match.group(1) if match else stats.node_name
      executed[op_type] += 1
  partition_types = collections.Counter(node_types.values())
  return result, executed, partition_types


def _fetches(built, train):
  """Loss, figures and gradients (values before the update), plus the update itself when training."""
  out = {"total": built.total_loss, "report": built.report, "grads": built.grads}
  if train:
    out["train_op"] = built.train_op
  return out


class XlaTest(parameterized.TestCase):
  """One session per XLA build for both tests: XLA compiles once per session (and shape)."""

  _xla_sessions = {}

  @classmethod
  def tearDownClass(cls):
    for sess in cls._xla_sessions.values():
      sess.close()
    cls._xla_sessions.clear()
    super().tearDownClass()

  def _xla_session(self, xla):
    if xla.name not in self._xla_sessions:
      self._xla_sessions[xla.name] = xla.session()
    sess = self._xla_sessions[xla.name]
    sess.run(xla.init_op)  # fresh weights and step 0
    return sess

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_xla_equals_plain(self, name):
    plain = goldens.cached_build(name)
    xla = goldens.cached_build(name, xla=True)
    sess, sess_x = plain.session(self), self._xla_session(xla)
    xla.set_weights(sess_x, plain.get_weights(sess))
    batch = plain.pad(goldens.data(name))
    for step in range(2):
      for train in (True, False):  # with train=True the update runs in the same Session.run
        want = sess.run(_fetches(plain, train), plain.feed(batch, train=train))
        got = sess_x.run(_fetches(xla, train), xla.feed(batch, train=train))
        what = f"{name} step {step} train={train}"
        np.testing.assert_allclose(got["total"], want["total"], rtol=1e-4, err_msg=what)
        for loss, (summed, inv_norm) in want["report"].items():
          np.testing.assert_allclose(got["report"][loss][0], summed, rtol=1e-4, atol=1e-5, err_msg=f"{what} {loss}")
          self.assertEqual(got["report"][loss][1], inv_norm, msg=f"{what} {loss}")
        for var, grad in want["grads"].items():
          scale = max(float(np.max(np.abs(grad))), 1e-3)
          np.testing.assert_allclose(got["grads"][var], grad, rtol=1e-3, atol=1e-4 * scale, err_msg=f"{what} {var}")
    self.assertEqual(xla.gs.get_step(sess_x), 2)
    want_w, got_w = plain.trainable_weights(sess), xla.trainable_weights(sess_x)
    for var, value in want_w.items():
      np.testing.assert_allclose(got_w[var], value, rtol=1e-4, atol=1e-5, err_msg=f"{name} {var} after 2 steps")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_custom_op_runs_in_xla_cluster(self, name):
    xla = goldens.cached_build(name, xla=True)
    custom = [op for op in xla.graph.get_operations() if op.type in CUSTOM_OPS]
    for op in custom:
      self.assertTrue(op.get_attr("_XlaCompile"), msg=f"{op.name} is not marked for XLA")
    batch = xla.pad(goldens.data(name))
    sess_x = self._xla_session(xla)
    for _ in range(2):  # the second run: after any lazy-compilation warm-up
      _, executed, partition = _traced_run(xla, sess_x, _fetches(xla, True), xla.feed(batch, train=True))
    self.assertGreater(executed["_XlaRun"], 0, msg=f"nothing ran compiled; executed: {dict(executed)}")
    for op_type in CUSTOM_OPS:
      self.assertEqual(executed[op_type], 0, msg=f"{op_type} executed outside XLA")
      self.assertEqual(partition[op_type], 0, msg=f"{op_type} left in the partition graphs (not clustered)")

    plain = goldens.cached_build(name)
    _, executed_plain, _ = _traced_run(
      plain, plain.session(self), [plain.train_op, plain.report], plain.feed(batch, train=True)
    )
    num_custom_plain = sum(executed_plain[t] for t in CUSTOM_OPS)
    self.assertEqual(num_custom_plain > 0, bool(custom), msg=f"positive control: {dict(executed_plain)}")
    self.assertEqual(executed_plain["_XlaRun"], 0)


if __name__ == "__main__":
  absltest.main()
