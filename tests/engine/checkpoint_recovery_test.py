"""A broken latest checkpoint never restarts training silently, and never costs a checkpoint that restores.

Each case trains epochs 1-2 (two checkpoints kept), breaks something, and starts the engine again: it
resumes from the newest checkpoint that restores with a warning naming what was broken, or refuses with
an error naming the file and how to proceed; the files of every checkpoint that restores are unchanged.
"""

import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from returnn_rc import engine
from returnn_rc.engine import checkpoints
from tests.engine import testing_graphs

_LENGTHS = [1, 2, 3, 5, 8]


def _engine(train_dir, **kwargs):
  kwargs.setdefault("num_epochs", 2)
  kwargs.setdefault("keep_checkpoints", 2)
  config = engine.EngineConfig(train_dir=train_dir, batch_size=2, learning_rate=0.1, log_every_secs=1e9, **kwargs)
  return engine.Engine(
    testing_graphs.make_sum_graph(), config, train_data=testing_graphs.sum_data(_LENGTHS), dev_data=[]
  )


def _files(train_dir, *, but=()):
  """name → bytes of every file in ``train_dir`` but the events files and ``but``."""
  out = {}
  for name in sorted(os.listdir(train_dir)):
    if not name.startswith("events.") and name not in but:
      with open(os.path.join(train_dir, name), "rb") as f:
        out[name] = f.read()
  return out


def _weights(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_002(d):
  for name in os.listdir(d):
    if name.startswith("model.002."):
      os.remove(os.path.join(d, name))


def _garbage_state_file(d):
  with open(os.path.join(d, "checkpoint"), "w", encoding="utf-8") as f:
    f.write("this is \x00 not { a checkpoint state")


def _truncate_002_index(d):
  _truncate(os.path.join(d, "model.002.index"))


def _truncate_002_data(d):
  _truncate(os.path.join(d, "model.002.data-00000-of-00001"))


def _garbage_train_state(d):
  with open(os.path.join(d, "train_state.json"), "w", encoding="utf-8") as f:
    f.write("{not json")


def _missing_train_state(d):
  os.remove(os.path.join(d, "train_state.json"))


class BrokenCheckpointTest(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.train_dir = self.create_tempdir().full_path
    with _engine(self.train_dir) as eng:
      self.history = [r.to_json() for r in eng.train()]
    self.good = {n: _weights(os.path.join(self.train_dir, n)) for n in ("model.001", "model.002")}

  @parameterized.named_parameters(
    (
      "model_002_deleted",
      _delete_002,
      "model.001",
      r"checkpoint 'model.002' \(listed in 'checkpoint'\) has no "
      r".index file",
    ),
    (
      "model_002_index_truncated",
      _truncate_002_index,
      "model.001",
      r"checkpoint model.002 \(.*Error: .*\) does not restore; skipped",
    ),
    (
      "model_002_data_truncated",
      _truncate_002_data,
      "model.001",
      r"checkpoint model.002 \(OutOfRangeError: Read less bytes than requested\) does not restore",
    ),
    (
      "garbage_state_file",
      _garbage_state_file,
      "model.002",
      r"the checkpoint state file 'checkpoint' is unreadable \(not a checkpoint state\); the checkpoints were "
      r"found by their file names",
    ),
    (
      "garbage_train_state",
      _garbage_train_state,
      "model.002",
      r"train_state.json is unusable \(it is not valid JSON .*\): the graph name is not checked",
    ),
    ("missing_train_state", _missing_train_state, "model.002", r"train_state.json is unusable \(it is missing\)"),
  )
  def test_resumes_from_newest_that_restores(self, damage, resumed_from, warning):
    damage(self.train_dir)
    before = _files(self.train_dir)
    with self.assertLogs(level="WARNING") as logs:
      eng = _engine(self.train_dir)
    with eng:
      self.assertEqual(eng.latest_checkpoint(), os.path.join(self.train_dir, resumed_from))
      self.assertEqual(eng.completed_epoch, int(resumed_from[-3:]))
      self.assertLen(eng.restore_warnings, 1)
      self.assertRegex(eng.restore_warnings[0], warning)
      self.assertRegex("\n".join(logs.output), warning)
      # resuming changed no checkpoint (one that restores is never deleted or overwritten); the state file
      # names the checkpoint that was restored
      before.pop("checkpoint", None)
      self.assertEqual(_files(self.train_dir, but=["checkpoint"]), before)
      self.assertEqual(tf.compat.v1.train.latest_checkpoint(self.train_dir), os.path.join(self.train_dir, resumed_from))
      eng.train()  # trains the missing epoch (if any)
      self.assertEqual(eng.completed_epoch, 2)
    # resuming is exact: the epoch-2 checkpoint equals the one of the uninterrupted run
    for name, value in self.good["model.002"].items():
      np.testing.assert_array_equal(_weights(os.path.join(self.train_dir, "model.002"))[name], value, err_msg=name)
    for name, value in self.good["model.001"].items():  # model.001 restores: still there, unchanged
      np.testing.assert_array_equal(_weights(os.path.join(self.train_dir, "model.001"))[name], value, err_msg=name)
    self.assertEqual(tf.compat.v1.train.latest_checkpoint(self.train_dir), os.path.join(self.train_dir, "model.002"))

  @parameterized.named_parameters(
    ("index_truncated", "model.001.index", r"model.001 \(.*Error: .*\)"),
    ("data_truncated", "model.001.data-00000-of-00001", r"model.001 \(OutOfRangeError: .*\)"),
  )
  def test_refuses_when_none_restores(self, truncate, named):
    _delete_002(self.train_dir)
    _truncate(os.path.join(self.train_dir, truncate))
    before = _files(self.train_dir)
    sessions = []

    class RecordingSession(tf.compat.v1.Session):
      def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sessions.append(self)

    with mock.patch.object(tf.compat.v1, "Session", RecordingSession):
      with self.assertRaisesRegex(
        RuntimeError,
        r"holds checkpoint files but no checkpoint restores: .*"
        + named
        + r".*Nothing was changed. .* to start over, pass fresh=True \(--fresh",
      ):
        _engine(self.train_dir)
    self.assertLen(sessions, 1)
    self.assertTrue(sessions[0]._closed)  # pylint: disable=protected-access  (no session leak)
    self.assertEqual(_files(self.train_dir), before)
    with _engine(self.train_dir, fresh=True) as eng:  # the way out the message names
      self.assertEqual(eng.completed_epoch, 0)

  def test_rotation_knows_the_checkpoints_after_a_restart(self):
    _garbage_state_file(self.train_dir)  # rotation must not depend on the state file
    with _engine(self.train_dir, num_epochs=3) as eng:
      self.assertEqual(eng.completed_epoch, 2)
      eng.train()
    names = sorted(n for n in os.listdir(self.train_dir) if n.startswith("model."))
    self.assertEqual(
      names, ["model.002.data-00000-of-00001", "model.002.index", "model.003.data-00000-of-00001", "model.003.index"]
    )
    state = tf.compat.v1.train.get_checkpoint_state(self.train_dir)
    self.assertEqual([os.path.basename(p) for p in state.all_model_checkpoint_paths], ["model.002", "model.003"])

  def test_another_models_checkpoint_is_refused(self):
    config = engine.EngineConfig(train_dir=self.train_dir, num_epochs=2, batch_size=2)
    other = testing_graphs.make_sum_graph("sum_graph")  # same graph name, one more variable
    get_model = other.get_model

    def get_model_with_v(*, epoch, step):
      tf.compat.v1.get_variable("v", [3])
      return get_model(epoch=epoch, step=step)

    other.get_model = get_model_with_v
    before = _files(self.train_dir)
    with self.assertRaisesRegex(
      ValueError,
      r"holds the checkpoint of another model: missing variable 'v' "
      r"\(shape \[3\]\).*\(found in model.002\)",
    ):
      engine.Engine(other, config, train_data=testing_graphs.sum_data(_LENGTHS), dev_data=[])
    self.assertEqual(_files(self.train_dir), before)

  def test_crash_leftovers_are_cleaned_and_ignored(self):
    leftovers = [
      "model.003.index.tempstate123",
      "model.003.data-00000-of-00001.tempstate456",
      "checkpoint.tmp" + "0" * 32,
      ".train_state.json.abc_123.tmp",
    ]
    for name in leftovers:
      with open(os.path.join(self.train_dir, name), "wb") as f:
        f.write(b"partial")
    with _engine(self.train_dir) as eng:
      self.assertEqual(eng.completed_epoch, 2)
      self.assertEqual(eng.restore_warnings, [])
    self.assertEqual([n for n in leftovers if os.path.exists(os.path.join(self.train_dir, n))], [])


class FreshTest(absltest.TestCase):
  def test_fresh_deletes_only_the_engines_files(self):
    train_dir = self.create_tempdir().full_path
    user_files = [
      "model.py",
      "model.txt",
      "model.001.py",
      "model.1.index",
      "notes.json",
      "checkpoint.bak",
      "events.out.tfevents.123.host",
      "train_state.json.bak",
    ]
    for name in user_files:
      with open(os.path.join(train_dir, name), "w", encoding="utf-8") as f:
        f.write("mine")
    os.makedirs(os.path.join(train_dir, "model.009.index"))  # a directory, even with an engine-like name
    with _engine(train_dir) as eng:
      eng.train()
    own = sorted(set(os.listdir(train_dir)) - set(user_files) - {"model.009.index"})
    self.assertContainsSubset(
      ["checkpoint", "model.001.index", "model.001.data-00000-of-00001", "train_state.json"], own
    )
    self.assertTrue(any(n.startswith("events.out.tfevents.") and n.endswith(".returnn_rc") for n in own))
    for name in own:  # marks the old files: a new events file may get the old one's name (same second)
      with open(os.path.join(train_dir, name), "ab") as f:
        f.write(b"<old>")
    with _engine(train_dir, fresh=True) as eng:
      self.assertEqual(eng.completed_epoch, 0)
      survivors = []
      for name in sorted(set(os.listdir(train_dir)) & set(own)):
        with open(os.path.join(train_dir, name), "rb") as f:
          if f.read().endswith(b"<old>"):
            survivors.append(name)
      self.assertEqual(survivors, [])  # all of the engine's old files went
    self.assertContainsSubset(user_files + ["model.009.index"], os.listdir(train_dir))
    for name in user_files:
      with open(os.path.join(train_dir, name), encoding="utf-8") as f:
        self.assertEqual(f.read(), "mine", name)

  def test_own_file_names(self):
    for name in (
      "checkpoint",
      "train_state.json",
      "model.001.index",
      "model.1234.data-00000-of-00001",
      "model.002.index.tempstate987",
      "checkpoint.tmp" + "a" * 32,
      "events.out.tfevents.1700000000.my.host.returnn_rc",
    ):
      self.assertTrue(checkpoints.is_own_file(name), name)
    for name in (
      "model.py",
      "model.01.index",
      "model.001.meta",
      "model.001",
      "checkpoints",
      "model.001.index.bak",
      "events.out.tfevents.1700000000.host",
      "train_state.json~",
      "checkpoint.tmp",
    ):
      self.assertFalse(checkpoints.is_own_file(name), name)

  def test_home_and_root_are_refused(self):
    home = self.create_tempdir().full_path
    with open(os.path.join(home, "model.py"), "w", encoding="utf-8") as f:
      f.write("mine")
    with mock.patch.dict(os.environ, {"HOME": home}):
      for train_dir in (home, "~", os.path.join(home, ".")):
        with self.assertRaisesRegex(ValueError, r"train_dir '.*' is the home directory"):
          _engine(os.path.expanduser(train_dir), fresh=True)
    self.assertEqual(os.listdir(home), ["model.py"])
    with self.assertRaisesRegex(ValueError, r"train_dir '/' is the filesystem root '/'"):
      _engine("/", fresh=True)
    with self.assertRaisesRegex(ValueError, r"train_dir '/\.\./\.' is the filesystem root"):
      _engine("/../.", fresh=True)


if __name__ == "__main__":
  absltest.main()
