"""Engine: exact epoch figures, epoch tensor, train flag, resume, XLA, checkpoints, TensorBoard."""

import glob
import json
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from returnn_rc import engine
from tests.engine import testing_graphs

_LENGTHS = [1, 2, 3, 5, 8, 13, 21]


def _config(tmp, **kwargs):
  kwargs.setdefault("num_epochs", 1)
  kwargs.setdefault("batch_size", 2)
  kwargs.setdefault("log_every_secs", 1e9)
  return engine.EngineConfig(train_dir=tmp, **kwargs)


def _variables(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


class EpochFiguresTest(absltest.TestCase):
  def test_epoch_figure_is_sum_over_sum(self):
    data = testing_graphs.sum_data(_LENGTHS)
    total = sum(float(np.sum(seq["x"])) for seq in data)
    frames = sum(_LENGTHS)
    with engine.Engine(
      testing_graphs.make_sum_graph(),
      _config(self.create_tempdir().full_path, learning_rate=0.0),
      train_data=data,
      dev_data=data,
    ) as eng:
      (result,) = eng.train()
      batches = eng.evaluate_batches("dev")
    self.assertGreater(len({n for _, n in (b["x"] for b in batches)}), 1)  # batches of different sizes
    self.assertAlmostEqual(sum(n for _, n in (b["x"] for b in batches)), frames)
    self.assertAlmostEqual(result.train["x"], total / frames, places=4)
    self.assertAlmostEqual(result.dev["x"], total / frames, places=4)
    mean_of_means = np.mean([f["x"] for f in result.batch_figures])
    self.assertNotAlmostEqual(result.train["x"], mean_of_means, places=2)
    summed = [s for s, _ in (b["x"] for b in batches)]
    inv = [n for _, n in (b["x"] for b in batches)]
    np.testing.assert_allclose(sorted(f["x"] for f in result.batch_figures), sorted(np.divide(summed, inv)), rtol=1e-6)

  def test_loss_times_epoch_gives_ratio_1_2_3(self):
    data = testing_graphs.sum_data(_LENGTHS)
    with engine.Engine(
      testing_graphs.make_sum_graph(times_epoch=True),
      _config(self.create_tempdir().full_path, learning_rate=0.0, num_epochs=3),
      train_data=data,
      dev_data=data,
    ) as eng:
      history = eng.train()
    train = [r.train["x"] for r in history]
    dev = [r.dev["x"] for r in history]
    np.testing.assert_allclose(np.array(train) / train[0], [1, 2, 3], rtol=1e-5)
    np.testing.assert_allclose(np.array(dev) / dev[0], [1, 2, 3], rtol=1e-5)

  def test_scale_and_normalization_do_not_change_figures(self):
    from graphs import two_losses  # pylint: disable=import-outside-toplevel

    with engine.Engine(
      two_losses, _config(self.create_tempdir().full_path, learning_rate=0.0, batch_size=8, max_seqs=40)
    ) as eng:
      eng.train()
      batches = eng.evaluate_batches("dev")
      figures = eng.evaluate("dev")
      self.assertEqual(eng.error_names, ["tag_err"])
    for name in ("tag_ce", "aux_ce"):  # Σ summed / Σ frames, whatever the scale / normalisation
      summed = sum(float(b[name][0]) for b in batches)
      frames = sum(float(b[name][1]) for b in batches)
      self.assertAlmostEqual(figures[name], summed / frames, places=5)
      self.assertEqual(frames, sum(float(b["tag_err"][1]) for b in batches))


class TrainFlagTest(absltest.TestCase):
  def test_eval_deterministic_train_not(self):
    from graphs import char_lm  # pylint: disable=import-outside-toplevel

    data = char_lm.default_data("dev", max_seqs=24)
    with mock.patch.object(char_lm, "DROPOUT", 0.9):
      with engine.Engine(
        char_lm,
        _config(self.create_tempdir().full_path, learning_rate=0.0, num_epochs=2, batch_size=8),
        train_data=data,
        dev_data=data,
      ) as eng:
        self.assertTrue(eng.graph.finalized)
        eval1 = eng.evaluate("dev")
        history = eng.train()
        eval2 = eng.evaluate("dev")
    self.assertEqual(eval1, eval2)  # flag off: no dropout, same numbers (lr 0: same weights)
    self.assertEqual(history[0].dev, eval1)
    self.assertNotEqual(history[0].train["ce"], history[1].train["ce"])  # flag on: masks differ per step
    self.assertGreater(history[0].train["ce"], eval1["ce"])  # dropout 0.9 hurts


class ResumeTest(absltest.TestCase):
  def test_resume_equals_uninterrupted(self):
    from graphs import two_losses  # pylint: disable=import-outside-toplevel

    # lr_decay_threshold 10: the rate halves after every epoch, so resume must restore it.
    kwargs = dict(num_epochs=3, batch_size=8, max_seqs=48, learning_rate=0.01, lr_decay_threshold=10.0)
    dir_a, dir_b = self.create_tempdir().full_path, self.create_tempdir().full_path
    with engine.Engine(two_losses, _config(dir_a, **kwargs)) as eng:
      full = eng.train()
      ckpt_a = eng.latest_checkpoint()
    with engine.Engine(two_losses, _config(dir_b, **kwargs)) as eng:
      eng.train(num_epochs=1)
    with engine.Engine(two_losses, _config(dir_b, **kwargs)) as eng:
      self.assertEqual(eng.completed_epoch, 1)
      self.assertAlmostEqual(eng.learning_rate, 0.01)  # the first epoch only sets the reference figure
      resumed = eng.train()
      ckpt_b = eng.latest_checkpoint()
    # decays after epochs 2 and 3: needs the restored reference figure of epoch 1
    np.testing.assert_allclose([r.learning_rate for r in resumed], [0.01, 0.01, 0.005])
    for a, b in zip(full, resumed):
      self.assertEqual((a.epoch, a.step, a.learning_rate), (b.epoch, b.step, b.learning_rate))
      self.assertEqual(a.train, b.train)
      self.assertEqual(a.dev, b.dev)
    vars_a, vars_b = _variables(ckpt_a), _variables(ckpt_b)
    self.assertEqual(sorted(vars_a), sorted(vars_b))
    for name, value in vars_a.items():
      np.testing.assert_array_equal(value, vars_b[name], err_msg=name)

  def test_finished_run_is_a_no_op(self):
    data = testing_graphs.sum_data(_LENGTHS)
    tmp = self.create_tempdir().full_path
    with engine.Engine(testing_graphs.make_sum_graph(), _config(tmp), train_data=data, dev_data=data) as eng:
      first = eng.train()
    with engine.Engine(testing_graphs.make_sum_graph(), _config(tmp), train_data=data, dev_data=data) as eng:
      again = eng.train()
      self.assertIn("train x", eng.table())
    self.assertEqual([r.to_json() for r in first], [r.to_json() for r in again])


class XlaTest(absltest.TestCase):
  def test_xla_matches_non_xla(self):
    from graphs import two_losses  # pylint: disable=import-outside-toplevel

    results = {}
    for xla in (False, True):
      with engine.Engine(
        two_losses, _config(self.create_tempdir().full_path, xla=xla, batch_size=16, max_seqs=32, num_epochs=1)
      ) as eng:
        compiled = [op for op in eng.graph.get_operations() if op.node_def.attr["_XlaCompile"].b]
        self.assertEqual(bool(compiled), xla)
        results[xla] = (eng.train(), _variables(eng.latest_checkpoint()))
    for a, b in zip(results[False][0], results[True][0]):
      for split in ("train", "dev"):
        for name, value in getattr(a, split).items():
          self.assertAlmostEqual(
            value, getattr(b, split)[name], delta=1e-4 * max(1.0, abs(value)), msg=f"{split} {name}"
          )
    for name, value in results[False][1].items():
      np.testing.assert_allclose(value, results[True][1][name], rtol=1e-3, atol=1e-4, err_msg=name)


class CheckpointsAndSummariesTest(absltest.TestCase):
  def test_files(self):
    data = testing_graphs.sum_data(_LENGTHS)
    tmp = self.create_tempdir().full_path
    with engine.Engine(
      testing_graphs.make_sum_graph(), _config(tmp, num_epochs=3, keep_checkpoints=2), train_data=data, dev_data=data
    ) as eng:
      eng.train()
    names = sorted(os.listdir(tmp))
    self.assertNotIn(True, [n.startswith(".tmp") for n in names])
    self.assertEqual(tf.compat.v1.train.latest_checkpoint(tmp), os.path.join(tmp, "model.003"))
    self.assertEmpty(glob.glob(os.path.join(tmp, "model.001.*")))  # only the last 2 are kept
    self.assertNotEmpty(glob.glob(os.path.join(tmp, "model.002.index")))
    with open(os.path.join(tmp, "train_state.json"), encoding="utf-8") as f:
      state = json.load(f)
    self.assertEqual(state["graph"], "sum_graph")
    self.assertEqual(state["variables"]["w"], [])
    self.assertEqual([h["epoch"] for h in state["history"]], [1, 2, 3])
    tags = set()
    for path in glob.glob(os.path.join(tmp, "events.out.tfevents.*")):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(v.tag for v in event.summary.value)
    self.assertContainsSubset({"train/x", "epoch_train/x", "epoch_dev/x", "epoch/learning_rate"}, tags)

  def test_forward_outputs(self):
    data = testing_graphs.sum_data(_LENGTHS)
    with engine.Engine(
      testing_graphs.make_sum_graph(), _config(self.create_tempdir().full_path), train_data=data, dev_data=data
    ) as eng:
      batches = list(eng.forward("dev"))
    self.assertEqual(sum(len(b["output:size1"]) for b in batches), len(_LENGTHS))
    got = sorted(float(np.sum(b["output"][i, :n])) for b in batches for i, n in enumerate(b["output:size1"]))
    np.testing.assert_allclose(got, sorted(float(np.sum(s["x"])) for s in data), rtol=1e-5)


if __name__ == "__main__":
  absltest.main()
