"""Committed golden artefacts (``tests/conformance/artefacts/<golden>/``, made by
``python -m tests.conformance.generate_artefacts``) still load and give the recorded numbers.

- Every golden of ``graphs/`` has artefacts.
- The checkpoint holds exactly the variables (names and shapes) of the engine's train graph; a
  fresh train graph restores it and gives the recorded dev figures, total loss, gradient and output
  fingerprints and, after one more train step (Adam slots restored), the recorded figures (relative
  tolerance :data:`RTOL`).
- The export's forward graph restores it and gives the train graph's forward outputs.
- A fresh SavedModel export from it has the committed dims JSON.

So a change of variable names, of the export format or of the numerics fails here; regenerate the
artefacts only for a deliberate change.
"""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import export
from returnn_rc.export import forward_graph
from tests.conformance import artefacts, goldens

RTOL = 1e-5


def _restored(test, name):
  """A fresh train graph of ``name`` (artefact sizes) and a session with the committed checkpoint restored."""
  built = goldens.build(name)
  sess = tf.compat.v1.Session(graph=built.graph)
  test.addCleanup(sess.close)
  with built.graph.as_default():  # the v1 Saver checks for graph mode
    built.saver.restore(sess, artefacts.checkpoint_path(name))
  return built, sess


class ArtefactsTest(parameterized.TestCase):
  def test_every_golden_has_artefacts(self):
    wanted = [artefacts.DIMS_JSON, artefacts.FIGURES_JSON, *artefacts.CHECKPOINT_FILES]
    for name in goldens.names():
      missing = [f for f in wanted if not os.path.isfile(os.path.join(artefacts.golden_dir(name), f))]
      self.assertEmpty(
        missing,
        msg=f"golden {name!r} lacks artefacts {missing} in {artefacts.golden_dir(name)}; "
        f"run {artefacts.GENERATE_CMD} --graphs={name}",
      )

  def test_no_artefacts_of_unknown_goldens(self):
    self.assertContainsSubset(
      os.listdir(artefacts.ARTEFACTS_DIR),
      goldens.names(),
      msg=f"artefacts of goldens no longer in graphs/ in {artefacts.ARTEFACTS_DIR}",
    )

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_checkpoint_variables_match_the_train_graph(self, name):
    stored = dict(tf.train.list_variables(artefacts.checkpoint_path(name)))
    default = {v.op.name: v.shape.as_list() for v in goldens.cached_build(name).variables}
    self.assertEqual(sorted(stored), sorted(default), msg=f"{name}: variable names of the checkpoint vs the graph")
    with artefacts.sizes(name):
      small = {v.op.name: v.shape.as_list() for v in goldens.build(name).variables}
    self.assertEqual(stored, small, msg=f"{name}: variable shapes of the checkpoint vs the graph")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_train_graph_gives_recorded_figures(self, name):
    want = artefacts.read_json(name, artefacts.FIGURES_JSON)
    with artefacts.sizes(name):
      built, sess = _restored(self, name)
    self.assertEqual(built.gs.get_step(sess), artefacts.TRAIN_STEPS)
    got = artefacts.figures(built, sess)
    self.assertEqual(built.gs.get_step(sess), artefacts.TRAIN_STEPS + 1)
    self.assertEqual(set(got), set(want))
    np.testing.assert_allclose(got["total"], want["total"], rtol=RTOL, err_msg=f"{name}: total loss")
    for part in ("dev", "dev_after_step", "grads", "outputs"):
      self.assertEqual(set(got[part]), set(want[part]), msg=f"{name}: {part}")
      for key, values in want[part].items():
        np.testing.assert_allclose(got[part][key], values, rtol=RTOL, err_msg=f"{name}: {part} {key}")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_forward_graph_restores(self, name):
    ckpt = artefacts.checkpoint_path(name)
    with artefacts.sizes(name):
      built, sess = _restored(self, name)
      saved = forward_graph.read_step_epoch(ckpt)
      fg = forward_graph.build_forward_graph(goldens.module(name), epoch=saved["epoch"], step=saved["step"])
    batch = artefacts.dev_batch(built)
    want = sess.run(built.outputs, built.feed(batch, train=False))
    with forward_graph.make_session(fg, ckpt) as fsess:
      got = fg.run(fsess, {k: batch[k] for k in fg.inputs})
    self.assertEqual(set(got), set(want))
    for key, value in want.items():
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_export_has_committed_dims(self, name):
    export_dir = os.path.join(self.create_tempdir().full_path, "saved_model")
    with artefacts.sizes(name):
      desc = export.export_saved_model(
        goldens.module(name), checkpoint_path=artefacts.checkpoint_path(name), export_dir=export_dir
      )
    want = artefacts.read_json(name, artefacts.DIMS_JSON)
    self.assertEqual(artefacts.stable_dims(desc), want)
    self.assertEqual(artefacts.stable_dims(export.load_dims(export_dir)), want)


if __name__ == "__main__":
  absltest.main()
