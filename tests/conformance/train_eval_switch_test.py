"""One finalized graph per golden: train <-> eval <-> train switches through the symbolic train flag.

Checked for both kinds of train flag (placeholder fed per run, bool variable assigned):
evaluation figures and forward outputs are deterministic and identical across switches when no
train step ran in between; a train step changes the weights (and so the figures); the flag really
switches the train-only parts (dropout) on; nothing is added to the graph.
"""

import numpy as np
from absl.testing import absltest, parameterized

from returnn_rc import graph_state
from tests.conformance import goldens

_KINDS = (graph_state.TRAIN_FLAG_PLACEHOLDER, graph_state.TRAIN_FLAG_VARIABLE)


def _params():
  return [(f"{name}_{kind}", name, kind) for name in goldens.names() for kind in _KINDS]


class TrainEvalSwitchTest(parameterized.TestCase):
  @parameterized.named_parameters(*_params())
  def test_switches(self, name, kind):
    built = goldens.cached_build(name, kind)
    self.assertTrue(built.graph.finalized)
    sess = built.session(self)
    batch = built.pad(goldens.data(name))

    def run(fetches, *, train):
      built.gs.set_train_flag(sess, train)  # variable kind (no-op for the placeholder)
      return sess.run(fetches, built.feed(batch, train=train))

    def evaluate():
      return run({"report": built.report, "outputs": built.outputs, "total": built.total_loss}, train=False)

    def train_step():
      run(built.train_op, train=True)

    eval_1, eval_2 = evaluate(), evaluate()
    _assert_same(eval_1, eval_2, "eval twice, no train step")
    weights_0 = built.trainable_weights(sess)
    in_train_mode = run(built.total_loss, train=True)  # flag on, no update
    # The flag switches a train-only part (dropout) on. Every golden uses rc.dropout (the contract of
    # graphs/__init__.py): a golden without a random op upstream of the loss fails here, as this check
    # would prove nothing for it.
    random_ops = [op.name for op in goldens.upstream_ops([built.total_loss]) if goldens.is_random_op(op)]
    self.assertNotEmpty(random_ops, msg=f"{name}: no random op (dropout) upstream of total_loss")
    self.assertNotEqual(float(in_train_mode), float(eval_1["total"]), msg=f"{name}: the train flag changed nothing")
    _assert_same(eval_1, evaluate(), "eval after a train-mode run without update")

    train_step()
    self.assertEqual(built.gs.get_step(sess), 1)
    weights_1 = built.trainable_weights(sess)
    changed = [k for k in weights_0 if not np.array_equal(weights_0[k], weights_1[k])]
    self.assertTrue(changed, msg="a train step changed no weight")
    eval_3, eval_4 = evaluate(), evaluate()
    _assert_same(eval_3, eval_4, "eval twice after a train step")
    self.assertNotEqual(float(eval_1["total"]), float(eval_3["total"]))
    self.assertEqual(built.trainable_weights(sess).keys(), weights_1.keys())
    for k, v in built.trainable_weights(sess).items():  # evaluation changed nothing
      np.testing.assert_array_equal(v, weights_1[k], err_msg=k)

    train_step()
    self.assertEqual(built.gs.get_step(sess), 2)
    eval_5 = evaluate()
    self.assertNotEqual(float(eval_3["total"]), float(eval_5["total"]))
    _assert_same(eval_5, evaluate(), "eval twice after the second train step")
    self.assertLen(built.graph.get_operations(), built.num_ops_built)


def _assert_same(a, b, what):
  flat_a, flat_b = _flatten(a), _flatten(b)
  assert flat_a.keys() == flat_b.keys(), (what, flat_a.keys(), flat_b.keys())
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=f"{what}: {key}")


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}/{k}"))
    return out
  if isinstance(tree, (tuple, list)):
    out = {}
    for i, v in enumerate(tree):
      out.update(_flatten(v, f"{prefix}/{i}"))
    return out
  return {prefix: np.asarray(tree)}


if __name__ == "__main__":
  absltest.main()
