"""SessionRunHooks in the engine's train loop, and keeping the best N checkpoints by a dev figure."""

import json
import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from returnn_rc import engine
from returnn_rc.engine import best_checkpoints
from tests.engine import testing_graphs

_DATA = testing_graphs.sum_data([3, 3, 3, 3, 3, 3, 3])  # one length, batch size 2: 4 batches per epoch


def _config(tmp, **kwargs):
  kwargs.setdefault("num_epochs", 2)
  kwargs.setdefault("batch_size", 2)
  kwargs.setdefault("log_every_secs", 1e9)
  return engine.EngineConfig(train_dir=tmp, **kwargs)


class RecordingHook(tf.compat.v1.train.SessionRunHook):
  """Requests the global step and the learning rate, feeds a placeholder it made in ``begin``, records calls."""

  def __init__(self, train_graph):
    self.tg = train_graph
    self.calls, self.steps, self.rates, self.doubled = [], [], [], []

  def begin(self):
    self.calls.append("begin")
    self.fed = tf.compat.v1.placeholder_with_default(tf.constant(0.0), [], name="hook_fed")
    self.twice = self.fed * 2.0

  def after_create_session(self, session, coord):
    del coord
    self.calls.append("after_create_session")
    self.initial_step = session.run(self.tg.graph_state.step)

  def before_run(self, run_context):
    self.calls.append("before_run")
    self.requested_feed = float(len(self.steps))
    return tf.compat.v1.train.SessionRunArgs(
      {"step": self.tg.graph_state.step, "lr": self.tg.learning_rate, "twice": self.twice},
      feed_dict={self.fed: self.requested_feed},
    )

  def after_run(self, run_context, run_values):
    self.calls.append("after_run")
    self.steps.append(int(run_values.results["step"]))
    self.rates.append(float(run_values.results["lr"]))
    self.doubled.append((self.requested_feed, float(run_values.results["twice"])))

  def end(self, session):
    self.calls.append("end")
    self.final_step = session.run(self.tg.graph_state.step)


class HooksTest(tf.test.TestCase):
  def test_hook_protocol_fetches_and_feeds(self):
    hooks = []
    logged = []

    def make_hooks(tg):
      hooks.append(RecordingHook(tg))
      logging_hook = tf.compat.v1.train.LoggingTensorHook(
        {"step": tg.graph_state.step}, every_n_iter=1, formatter=lambda values: logged.append(values["step"]) or ""
      )
      return [hooks[0], logging_hook]

    with engine.Engine(
      testing_graphs.make_sum_graph(),
      _config(self.create_tempdir().full_path, lr_warmup_steps=4),
      train_data=_DATA,
      dev_data=[],
      hooks=make_hooks,
    ) as eng:
      eng.train()
    (hook,) = hooks
    self.assertEqual(hook.calls[:3], ["begin", "after_create_session", "before_run"])
    self.assertEqual(hook.calls[-1], "end")
    self.assertEqual(hook.calls.count("before_run"), 8 + 2)  # + the run of each epoch that finds the data exhausted
    self.assertEqual(hook.calls.count("after_run"), 8)
    self.assertEqual(hook.steps, list(range(8)))  # the step of each run, fetched in the same Session.run
    self.assertAllClose(hook.rates, [1e-3 * min(1, (s + 1) / 4) for s in range(8)], rtol=1e-6)
    self.assertEqual(hook.doubled, [(float(i), 2.0 * i) for i in range(8)])
    self.assertEqual((hook.initial_step, hook.final_step), (0, 8))
    self.assertEqual([int(v) for v in logged], list(range(8)))

  def test_request_stop_ends_cleanly_and_resume_is_exact(self):
    tmp = self.create_tempdir().full_path
    stop = tf.compat.v1.train.StopAtStepHook(last_step=6)  # in epoch 2 (steps 4..7)
    with engine.Engine(
      testing_graphs.make_sum_graph(), _config(tmp, learning_rate=0.01), train_data=_DATA, dev_data=_DATA, hooks=[stop]
    ) as eng:
      history = eng.train()
      self.assertEqual([r.epoch for r in history], [1])
      self.assertEqual(eng.step, 6)
      self.assertTrue(eng.latest_checkpoint().endswith("model.001"))
    with engine.Engine(
      testing_graphs.make_sum_graph(), _config(tmp, learning_rate=0.01), train_data=_DATA, dev_data=_DATA
    ) as eng:
      resumed = eng.train()
    with engine.Engine(
      testing_graphs.make_sum_graph(),
      _config(self.create_tempdir().full_path, learning_rate=0.01),
      train_data=_DATA,
      dev_data=_DATA,
    ) as eng:
      uninterrupted = eng.train()
    self.assertEqual([r.epoch for r in resumed], [1, 2])
    for a, b in zip(resumed, uninterrupted):
      self.assertEqual(a.step, b.step)
      self.assertEqual(a.train, b.train)
      self.assertEqual(a.dev, b.dev)

  def test_not_a_hook(self):
    with self.assertRaisesRegex(TypeError, r"hooks\[0\] must be a tf.compat.v1.train.SessionRunHook, got str"):
      engine.Engine(
        testing_graphs.make_sum_graph(),
        _config(self.create_tempdir().full_path),
        train_data=_DATA,
        dev_data=[],
        hooks=["profile"],
      )


class BestCheckpointsTest(tf.test.TestCase):
  def test_keeps_the_best_independent_of_the_rotation(self):
    tmp = self.create_tempdir().full_path
    # loss x * w * epoch with learning rate 0: the figure grows with the epoch, so epochs 1 and 2 are the best
    cfg = _config(tmp, num_epochs=4, learning_rate=0.0, keep_checkpoints=1, keep_best_checkpoints=2)
    with engine.Engine(testing_graphs.make_sum_graph(times_epoch=True), cfg, train_data=_DATA, dev_data=_DATA) as eng:
      history = eng.train()
      self.assertEqual(eng.best_checkpoint(), os.path.join(tmp, "best", "model.001"))
    best_dir = os.path.join(tmp, "best")
    self.assertEqual(tf.train.latest_checkpoint(best_dir), os.path.join(best_dir, "model.001"))
    self.assertFalse(os.path.exists(os.path.join(tmp, "model.001.index")))  # rotated away in the train dir ...
    kept = sorted(f for f in os.listdir(best_dir) if f.startswith("model."))
    self.assertEqual(
      kept, ["model.001.data-00000-of-00001", "model.001.index", "model.002.data-00000-of-00001", "model.002.index"]
    )  # ... but kept here
    reader = tf.train.load_checkpoint(os.path.join(best_dir, "model.001"))
    self.assertEqual(reader.get_tensor("returnn_rc_state/epoch"), 1)
    with open(os.path.join(best_dir, best_checkpoints.STATE_FILE)) as f:
      state = json.load(f)
    self.assertEqual(state["loss"], "x")
    self.assertEqual(
      [(e["epoch"], e["figure"]) for e in state["entries"]], [(r.epoch, r.dev["x"]) for r in history[:2]]
    )

  def test_a_better_epoch_replaces_the_worst(self):
    tmp = self.create_tempdir().full_path
    kept = best_checkpoints.BestCheckpoints(tmp, keep=2, loss_name="ce")
    for epoch, figure in ((1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0), (5, float("nan"))):
      prefix = os.path.join(tmp, f"model.{epoch:03d}")
      for suffix in (".index", ".data-00000-of-00001"):
        with open(prefix + suffix, "w") as f:
          f.write(str(epoch))
      kept.update(prefix, epoch=epoch, figure=figure)
    self.assertEqual([e["epoch"] for e in kept.entries], [2, 3])
    foreign = os.path.join(tmp, "best", "notes.txt")
    with open(foreign, "w") as f:
      f.write("mine")
    self.assertCountEqual(
      os.listdir(os.path.join(tmp, "best")),
      [
        "model.002.index",
        "model.002.data-00000-of-00001",
        "model.003.index",
        "model.003.data-00000-of-00001",
        "checkpoint",
        best_checkpoints.STATE_FILE,
        "notes.txt",
      ],
    )
    with open(os.path.join(tmp, "best", "model.003.index")) as f:
      self.assertEqual(f.read(), "3")
    kept.delete_all()
    self.assertEqual(os.listdir(os.path.join(tmp, "best")), ["notes.txt"])  # a file it did not write stays

  def test_a_hand_edited_state_deletes_only_checkpoint_files_of_best(self):
    tmp = self.create_tempdir().full_path
    kept = best_checkpoints.BestCheckpoints(tmp, keep=1, loss_name="ce")
    kept.update(self._fake_checkpoint(tmp), epoch=1, figure=1.0)
    best_dir = os.path.join(tmp, "best")
    for name in ("notes.txt", "model.001.py"):
      with open(os.path.join(best_dir, name), "w") as f:
        f.write("mine")
    with open(os.path.join(tmp, "outside.index"), "w") as f:
      f.write("mine")
    state_path = os.path.join(best_dir, best_checkpoints.STATE_FILE)
    with open(state_path) as f:
      state = json.load(f)
    state["entries"][0]["files"] += ["notes.txt", "model.001.py", "../outside.index", "/etc/hostname"]
    with open(state_path, "w") as f:
      json.dump(state, f)
    best_checkpoints.delete_best(tmp)
    self.assertCountEqual(os.listdir(best_dir), ["notes.txt", "model.001.py"])  # model.001.index went
    self.assertTrue(os.path.exists(os.path.join(tmp, "outside.index")))
    self.assertTrue(os.path.exists("/etc/hostname"))

  def test_ranked_by_another_loss_is_refused(self):
    tmp = self.create_tempdir().full_path
    best_checkpoints.BestCheckpoints(tmp, keep=1, loss_name="ce").update(
      self._fake_checkpoint(tmp), epoch=1, figure=1.0
    )
    with self.assertRaisesRegex(ValueError, r"keeps the best checkpoints by loss 'ce', this run ranks by 'fer'"):
      best_checkpoints.BestCheckpoints(tmp, keep=1, loss_name="fer")

  @staticmethod
  def _fake_checkpoint(tmp):
    prefix = os.path.join(tmp, "model.001")
    open(prefix + ".index", "w").close()
    return prefix

  def test_unknown_best_loss(self):
    tmp = os.path.join(self.create_tempdir().full_path, "td")
    with self.assertRaisesRegex(ValueError, r"unknown loss name 'ce'; the graph's losses are \['x'\]"):
      engine.Engine(
        testing_graphs.make_sum_graph(),
        _config(tmp, keep_best_checkpoints=1, best_checkpoint_loss="ce"),
        train_data=_DATA,
        dev_data=[],
      )
    self.assertFalse(os.path.exists(tmp))


if __name__ == "__main__":
  np.set_printoptions(precision=6)
  absltest.main()
