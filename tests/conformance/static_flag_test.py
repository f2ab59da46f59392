"""Static (Python bool) and dynamic (tensor) train flag builds: no conditionals, no dropout when off.

- With the train flag a Python ``True`` or ``False``, the graph (train step, gradients, update,
  forward) has no conditional op (``If``, ``StatelessIf``, ``Switch``, ``Merge``) anywhere, also not in
  function bodies; with ``False`` nothing that a run fetches depends on a random op (dropout is gone;
  the variable initialisers are random but not upstream of any fetch).
- The dynamic-flag build (placeholder, and bool variable) has no conditional op either.
- The static ``False`` build computes the same figures, gradients and outputs as the dynamic build
  with the flag fed ``False``.
"""

import numpy as np
from absl.testing import absltest, parameterized

from returnn_rc import graph_state
from tests.conformance import goldens


def _cond_ops(built):
  return [(name, op) for name, op in goldens.all_node_op_types(built.graph) if op in goldens.COND_OP_TYPES]


def _random_upstream(built):
  return sorted(
    f"{op.name} ({op.type})" for op in goldens.upstream_ops(goldens.fetches_of(built)) if goldens.is_random_op(op)
  )


class StaticFlagTest(parameterized.TestCase):
  @parameterized.named_parameters(*goldens.named_parameters())
  def test_no_cond_ops_in_any_build(self, name):
    for flag in (True, False, graph_state.TRAIN_FLAG_PLACEHOLDER, graph_state.TRAIN_FLAG_VARIABLE):
      built = goldens.cached_build(name, flag)
      self.assertEmpty(_cond_ops(built), msg=f"{name}, train_flag={flag!r}: conditional ops")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_flag_false_has_no_random_ops(self, name):
    self.assertEmpty(
      _random_upstream(goldens.cached_build(name, False)),
      msg=f"{name}: random ops upstream of the fetches with train_flag=False",
    )
    # Positive control: the detector finds dropout where it is. Every golden uses rc.dropout (the contract
    # of graphs/__init__.py), so the flag-on and the dynamic build have random ops upstream of the
    # fetches, the same number in both.
    on = _random_upstream(goldens.cached_build(name, True))
    dynamic = _random_upstream(goldens.cached_build(name))
    self.assertNotEmpty(
      on,
      msg=f"{name}: no random op found upstream of the fetches with train_flag=True; every "
      f"golden must use rc.dropout, else this test proves nothing",
    )
    self.assertLen(dynamic, len(on), msg=f"{name}: random ops with the dynamic flag {dynamic} vs static True {on}")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_static_false_equals_dynamic_false(self, name):
    static = goldens.cached_build(name, False)
    dynamic = goldens.cached_build(name)
    sess_d = dynamic.session(self)
    sess_s = static.session(self)
    static.set_weights(sess_s, dynamic.get_weights(sess_d))
    batch = dynamic.pad(goldens.data(name))

    def fetch(built, sess):
      return sess.run(
        {"report": built.report, "total": built.total_loss, "grads": built.grads, "outputs": built.outputs},
        built.feed(batch, train=False),
      )

    got, want = fetch(static, sess_s), fetch(dynamic, sess_d)
    self.assertEqual(set(got["grads"]), set(want["grads"]))
    np.testing.assert_allclose(got["total"], want["total"], rtol=1e-6)
    for loss in want["report"]:
      np.testing.assert_allclose(got["report"][loss], want["report"][loss], rtol=1e-6, err_msg=loss)
    for var in want["grads"]:
      np.testing.assert_allclose(got["grads"][var], want["grads"][var], rtol=1e-5, atol=1e-7, err_msg=var)
    for key in want["outputs"]:
      np.testing.assert_allclose(got["outputs"][key], want["outputs"][key], rtol=1e-6, atol=1e-7, err_msg=key)


if __name__ == "__main__":
  absltest.main()
