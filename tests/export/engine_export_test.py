"""The SavedModel of a checkpoint written by returnn_rc.engine equals the engine's own forwarding
(its training graph, train flag fed off), bit for bit."""

import os
from unittest import mock

import numpy as np
from absl.testing import absltest

from returnn_rc import engine, export
from returnn_rc.export import forwarding as forward
from tests.export import tiny_graph


class EngineExportTest(absltest.TestCase):
  def test_engine_checkpoint_round_trip(self):
    tmp = self.create_tempdir().full_path
    train_dir = os.path.join(tmp, "train")
    dev = tiny_graph.default_data("dev")
    # The losses may use the custom op; the fallback keeps this test independent of its build.
    with mock.patch.dict(os.environ, {"RETURNN_RC_OPS_FALLBACK": "1"}):
      cfg = engine.EngineConfig(train_dir=train_dir, num_epochs=1, batch_size=2)
      with engine.Engine(tiny_graph, cfg, dev_data=dev) as eng:
        eng.train()
        batches = list(eng.forward("dev"))
    desc = export.export_saved_model(tiny_graph, checkpoint_path=train_dir, export_dir=os.path.join(tmp, "sm"))
    self.assertEqual(desc["epoch"], 1)
    self.assertGreater(desc["step"], 0)
    by_len = {len(s["data"]): s for s in dev}  # the dev lengths are distinct
    self.assertLen(by_len, len(dev))
    with forward.SavedModelForwarder(os.path.join(tmp, "sm")) as fwd:
      inputs = fwd.description["inputs"]
      n = 0
      for batch in batches:
        seqs = [by_len[int(size)] for size in batch["logits:size1"]]
        n += len(seqs)
        got = fwd(forward.feed_from_padded(forward.pad_sequences(seqs, inputs), inputs))
        self.assertEqual(set(got), set(batch))
        for key, value in batch.items():
          np.testing.assert_array_equal(got[key], value, err_msg=key)
    self.assertEqual(n, len(dev))


if __name__ == "__main__":
  absltest.main()
