"""The engine with MirroredStrategy over two logical CPU devices of one process: the figures and weights of
one device (two_losses: summed, normalised and error losses, dropout on)."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from graphs import two_losses as graph
from returnn_rc import engine
from returnn_rc.engine import distributed
from tests.distributed import split_dependent_two_losses


def _train(train_dir, dist, module=graph, **options):
  options.setdefault("num_epochs", 2)
  cfg = engine.EngineConfig(train_dir=train_dir, batch_size=16, max_seqs=48, seed=5, log_every_secs=1e9, **options)
  with engine.Engine(module, cfg, distribution=dist) as eng:
    eng.train()
    values = eng.session.run({v.op.name: v for v in eng.train_graph.variables})
    return [h.train for h in eng.history] + [h.dev for h in eng.history], values


class MirroredTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("plain", {}),
    # exact accumulation over 2 batches, clipping active, AdamW: on the summed gradients
    (
      "accumulation_clipping_adamw",
      dict(accum_grad_multiple_step=2, grad_clip_global_norm=0.5, optimizer="adamw", weight_decay=0.01),
    ),
  )
  def test_two_cpu_devices_equal_one(self, options):
    one = _train(self.create_tempdir().full_path, None, **options)
    dist = distributed.mirrored(["/cpu:0", "/cpu:1"], session_config=distributed.device_count_config(2))
    self.assertEqual(dist.num_replicas, 2)
    two = _train(self.create_tempdir().full_path, dist, **options)
    for a, b in zip(one[0], two[0]):
      self.assertEqual(sorted(a), sorted(b))
      for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, err_msg=name)
    self.assertEqual(sorted(one[1]), sorted(two[1]))  # the same variables (names) as one device
    for name in one[1]:
      np.testing.assert_allclose(two[1][name], one[1][name], rtol=1e-5, atol=1e-7, err_msg=name)

  def test_negative_control_split_dependent_dropout(self):
    """A dropout mask drawn for the shape of each replica's part: 2 devices differ from 1, so the comparisons
    here and in workers_train_test.py can fail."""
    one = _train(self.create_tempdir().full_path, None, split_dependent_two_losses, num_epochs=1)
    dist = distributed.mirrored(["/cpu:0", "/cpu:1"], session_config=distributed.device_count_config(2))
    two = _train(self.create_tempdir().full_path, dist, split_dependent_two_losses, num_epochs=1)
    a, b = one[0][0]["tag_ce"], two[0][0]["tag_ce"]
    self.assertGreater(abs(a - b) / abs(a), 1e-4)

  def test_the_builder_needs_a_global_batch(self):
    dist = distributed.mirrored(["/cpu:0", "/cpu:1"])
    with tf.Graph().as_default():
      x = graph.extern_data_template()
      with self.assertRaisesRegex(TypeError, "extern_data must be a GlobalBatch"):
        engine.build_train_graph(graph, x, engine.TrainGraphConfig(), strategy=dist.strategy)


if __name__ == "__main__":
  absltest.main()
