"""SavedModel round trip (in-process; tests/export does the fresh-process, plain-TF check): export a
checkpoint of the golden, load it with ``tf.saved_model.load`` and compare the signature's outputs
with the forward outputs of the training graph (train flag off) with the same weights."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import export
from tests.conformance import goldens


class SavedModelTest(parameterized.TestCase):
  @parameterized.named_parameters(*goldens.named_parameters())
  def test_round_trip(self, name):
    tmp = self.create_tempdir().full_path
    built = goldens.cached_build(name)
    batch = built.pad(goldens.data(name))
    sess = built.session(self)
    sess.run(built.train_op, built.feed(batch, train=True))  # weights other than the initial ones
    built.gs.set_epoch(sess, 2)
    with built.graph.as_default():  # the v1 Saver checks for graph mode
      ckpt = built.saver.save(sess, os.path.join(tmp, "ckpt", "model"), write_meta_graph=False)
    want = sess.run(built.outputs, built.feed(batch, train=False))
    self.assertTrue(want, msg=f"{name}: forward_step marked no output")

    export_dir = os.path.join(tmp, "saved_model")
    desc = export.export_saved_model(goldens.module(name), checkpoint_path=ckpt, export_dir=export_dir)
    self.assertEqual((desc["step"], desc["epoch"]), (1, 2))
    loaded = tf.saved_model.load(export_dir)
    fn = loaded.signatures[export.SIGNATURE_KEY]
    input_keys = sorted(fn.structured_input_signature[1])
    self.assertTrue(set(input_keys) <= set(batch), msg=f"signature inputs {input_keys}, batch {sorted(batch)}")
    got = {k: v.numpy() for k, v in fn(**{k: tf.constant(batch[k]) for k in input_keys}).items()}
    self.assertEqual(set(got), set(want))
    for key, value in want.items():
      self.assertEqual(got[key].dtype, value.dtype, msg=key)
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")


if __name__ == "__main__":
  absltest.main()
