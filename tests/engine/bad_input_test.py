"""Bad input: each problem gives a clear message naming it, and no partial checkpoint."""

import os

import numpy as np
from absl.testing import absltest

from returnn_rc import engine
from tests.engine import testing_graphs

_LENGTHS = [2, 3, 5]


def _config(tmp, **kwargs):
  kwargs.setdefault("num_epochs", 1)
  kwargs.setdefault("batch_size", 2)
  return engine.EngineConfig(train_dir=tmp, **kwargs)


class BadInputTest(absltest.TestCase):
  def test_graph_module_missing_function(self):
    with self.assertRaisesRegex(ValueError, r"'broken' is missing function\(s\) \['train_step'\]"):
      engine.Engine(
        testing_graphs.make_sum_graph("broken", drop_input="train_step"),
        _config(self.create_tempdir().full_path),
        train_data=testing_graphs.sum_data(_LENGTHS),
      )

  def test_unknown_graph_name(self):
    with self.assertRaisesRegex(ValueError, r"graph module 'graphs.no_such_graph' not found"):
      engine.load_graph_module("graphs.no_such_graph")

  def test_load_graph_module_by_name_and_path(self):
    self.assertEqual(engine.graph_name_of(engine.load_graph_module("graphs.two_losses")), "two_losses")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "graphs", "seq_classifier.py")
    self.assertEqual(engine.graph_name_of(engine.load_graph_module(path)), "seq_classifier")

  def _engine(self, data, **kwargs):
    return engine.Engine(
      testing_graphs.make_sum_graph(), _config(self.create_tempdir().full_path, **kwargs), train_data=data, dev_data=[]
    )

  def test_data_missing_name(self):
    with self.assertRaisesRegex(ValueError, r"sequence 1 has no input 'x' of extern_data; it has \['y'\]"):
      self._engine([{"x": np.ones([2], np.float32)}, {"y": np.ones([2], np.float32)}])

  def test_data_wrong_rank(self):
    with self.assertRaisesRegex(ValueError, r"sequence 0, input 'x': rank 2 .* expects rank 1"):
      self._engine([{"x": np.ones([2, 3], np.float32)}])

  def test_data_wrong_dtype(self):
    with self.assertRaisesRegex(TypeError, r"sequence 0, input 'x': dtype int32 .* expects float32"):
      self._engine([{"x": np.ones([2], np.int32)}])

  def test_unknown_lr_control_loss(self):
    with self.assertRaisesRegex(ValueError, r"unknown loss name 'ce'; the graph's losses are \['x'\]"):
      self._engine(testing_graphs.sum_data(_LENGTHS), lr_control_loss="ce")

  def test_train_dir_of_another_model(self):
    tmp = self.create_tempdir().full_path
    from graphs import two_losses  # pylint: disable=import-outside-toplevel

    with engine.Engine(two_losses, _config(tmp, max_seqs=8)) as eng:
      eng.train()
    with self.assertRaisesRegex(
      ValueError,
      r"holds the checkpoint of another model: graph 'two_losses' "
      r"\(this run: 'sum_graph'\).*missing variable 'w' \(shape \[\]\)",
    ):
      engine.Engine(testing_graphs.make_sum_graph(), _config(tmp), train_data=testing_graphs.sum_data(_LENGTHS))
    # --fresh starts over
    with engine.Engine(
      testing_graphs.make_sum_graph(), _config(tmp, fresh=True), train_data=testing_graphs.sum_data(_LENGTHS)
    ) as eng:
      self.assertEqual(eng.completed_epoch, 0)

  def test_nan_loss_stops_with_epoch_step_and_name(self):
    tmp = self.create_tempdir().full_path
    data = testing_graphs.sum_data([2] * 8)  # one bucket, batch_size 2: 4 steps per epoch
    with engine.Engine(
      testing_graphs.make_sum_graph(nan_at_step=5), _config(tmp, num_epochs=3), train_data=data, dev_data=[]
    ) as eng:
      with self.assertRaisesRegex(
        engine.NonFiniteLossError, r"loss 'x' is not finite \(summed=nan.*in epoch 2, step 5 \(batch 1 of the epoch\)"
      ):
        eng.train()
      self.assertEqual(eng.latest_checkpoint(), os.path.join(tmp, "model.001"))
    self.assertEqual(
      sorted(f for f in os.listdir(tmp) if f.startswith("model.")), ["model.001.data-00000-of-00001", "model.001.index"]
    )


if __name__ == "__main__":
  absltest.main()
