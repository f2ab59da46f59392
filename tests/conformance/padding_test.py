"""Garbage in padded frames: NaN / +Inf / -Inf in every padded element of every float input, huge and
negative ids in every padded element of every int input. The graph must not crash, and losses,
figures, gradients (w.r.t. every trainable variable) and the valid frames of the outputs must stay
finite and equal to those with clean (zero) padding, with the train flag off and on (dropout masks
are stateless: the same in both runs)."""

import numpy as np
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import graph_module
from tests.conformance import goldens


class PaddingGarbageTest(parameterized.TestCase):
  def test_corrupt_padding_covers_float_inputs(self):
    """The float branch of the helper, on a template of its own."""
    template = rc.TensorDict(
      {"x": rc.Tensor("x", [rc.batch_dim, rc.Dim(None, name="t"), rc.Dim(2, name="f")], "float32")}
    )
    batch = graph_module.pad_batch(template, [{"x": np.ones([3, 2], np.float32)}, {"x": np.ones([1, 2], np.float32)}])
    dirty, count = goldens.corrupt_padding(template, batch)
    self.assertEqual(count, 4)
    np.testing.assert_array_equal(dirty["x"][0], 1.0)
    np.testing.assert_array_equal(dirty["x"][1, :1], 1.0)
    self.assertFalse(np.isfinite(dirty["x"][1, 1:]).any())
    self.assertTrue(np.isnan(dirty["x"]).any() and np.isinf(dirty["x"]).any())

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_garbage_padding(self, name):
    built = goldens.cached_build(name)
    seqs = goldens.data(name)
    batch = built.pad(seqs)
    sess = built.session(self)
    fetches = {"report": built.report, "total": built.total_loss, "grads": built.grads, "outputs": built.outputs}
    for train in (False, True):
      clean = sess.run(fetches, built.feed(batch, train=train))
      self.assertTrue(np.isfinite(clean["total"]))
      for variant in range(3):
        dirty_batch, count = goldens.corrupt_padding(built.template, batch, variant)
        self.assertGreater(count, 0, msg=f"{name}: the test data has no padding")
        dirty = sess.run(fetches, built.feed(dirty_batch, train=train))
        what = f"{name} train={train} garbage variant {variant}"
        np.testing.assert_allclose(dirty["total"], clean["total"], rtol=1e-6, err_msg=what)
        for loss, values in clean["report"].items():
          self.assertTrue(np.isfinite(dirty["report"][loss]).all(), msg=f"{what}: loss {loss}")
          np.testing.assert_allclose(dirty["report"][loss], values, rtol=1e-6, err_msg=f"{what}: loss {loss}")
        for var, grad in clean["grads"].items():
          self.assertTrue(np.isfinite(dirty["grads"][var]).all(), msg=f"{what}: gradient of {var}")
          np.testing.assert_allclose(dirty["grads"][var], grad, rtol=1e-5, atol=1e-7, err_msg=f"{what}: {var}")
        for out, (batch_axis, dyn) in built.output_dims.items():
          lens = {axis: clean["outputs"][key] for axis, key in dyn.items()}
          for b in range(len(seqs)):
            got = goldens.per_seq(dirty["outputs"][out], batch_axis, lens, b)
            want = goldens.per_seq(clean["outputs"][out], batch_axis, lens, b)
            self.assertTrue(np.isfinite(got).all(), msg=f"{what}: output {out} seq {b}")
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{what}: output {out} seq {b}")


if __name__ == "__main__":
  absltest.main()
