"""Batching invariance (the masking check of RETURNN's test harness): with the train flag off, the
per-sequence outputs and per-sequence loss frames of a padded batch equal those of each sequence
run alone; the batch's summed loss and inverse norm factor are the sums over the sequences."""

import numpy as np
from absl.testing import absltest, parameterized

from tests.conformance import goldens


class BatchingTest(parameterized.TestCase):
  @parameterized.named_parameters(*goldens.named_parameters())
  def test_batch_equals_single_sequences(self, name):
    built = goldens.cached_build(name)
    seqs = goldens.data(name)
    sess = built.session(self)
    fetches = {
      "losses": {k: (info.raw, info.dyn_axes) for k, info in built.losses.items()},
      "report": built.report,
      "outputs": built.outputs,
    }
    lengths = {tuple(np.shape(v)) for seq in seqs for v in seq.values()}
    self.assertGreater(len(lengths), 1, msg=f"{name}: test sequences of equal shapes prove nothing")

    batch = sess.run(fetches, built.feed(built.pad(seqs), train=False))
    singles = [sess.run(fetches, built.feed(built.pad([seq]), train=False)) for seq in seqs]

    for loss, info in built.losses.items():
      summed, inv_norm = batch["report"][loss]
      np.testing.assert_allclose(
        summed, sum(s["report"][loss][0] for s in singles), rtol=1e-5, atol=1e-5, err_msg=f"{name}: summed {loss}"
      )
      np.testing.assert_allclose(
        inv_norm, sum(s["report"][loss][1] for s in singles), rtol=1e-6, err_msg=f"{name}: inv norm {loss}"
      )
      if info.batch_axis < 0:
        continue
      raw, dyn = batch["losses"][loss]
      for b, single in enumerate(singles):
        raw_1, dyn_1 = single["losses"][loss]
        got = goldens.per_seq(raw, info.batch_axis, dyn, b)
        want = goldens.per_seq(raw_1, info.batch_axis, dyn_1, 0)
        self.assertEqual(got.shape, want.shape, msg=f"{name}: loss {loss} seq {b}")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{name}: loss {loss} seq {b}")
        np.testing.assert_allclose(
          np.sum(got, dtype=np.float64),
          single["report"][loss][0],
          rtol=1e-5,
          atol=1e-5,
          err_msg=f"{name}: per-sequence contribution of {loss}, seq {b}",
        )

    for out, (batch_axis, dyn) in built.output_dims.items():
      lens = {axis: batch["outputs"][key] for axis, key in dyn.items()}
      for b, single in enumerate(singles):
        lens_1 = {axis: single["outputs"][key] for axis, key in dyn.items()}
        got = goldens.per_seq(batch["outputs"][out], batch_axis, lens, b)
        want = goldens.per_seq(single["outputs"][out], batch_axis, lens_1, 0)
        self.assertEqual(got.shape, want.shape, msg=f"{name}: output {out} seq {b}")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: output {out} seq {b}")


if __name__ == "__main__":
  absltest.main()
