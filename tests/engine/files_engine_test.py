"""The engine on record files: resume is exact, evaluation of a checkpoint from files equals memory and the
engine's own evaluation, and leaves the checkpoint untouched."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest

from graphs import two_losses
from returnn_rc import engine
from returnn_rc.engine import evaluation, records
from tests.engine import testing_graphs

_TRAIN = two_losses.default_data("train", 48)
_DEV = two_losses.default_data("dev", 24)


def _files(test):
  tmp = test.create_tempdir().full_path
  template = two_losses.extern_data_template()
  records.write_shards(tmp, template, _TRAIN, num_shards=3, prefix="train")
  records.write_shards(tmp, template, _DEV, num_shards=2, prefix="dev")
  return os.path.join(tmp, "train-*"), os.path.join(tmp, "dev-*")


def _config(train_dir, **kwargs):
  kwargs.setdefault("batch_size", 8)
  kwargs.setdefault("log_every_secs", 1e9)
  kwargs.setdefault("shuffle_buffer", 16)
  return engine.EngineConfig(train_dir=train_dir, **kwargs)


def _variables(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _snapshot(directory):
  return {
    f: (os.path.getsize(os.path.join(directory, f)), os.path.getmtime(os.path.join(directory, f)))
    for f in sorted(os.listdir(directory))
  }


class FilesEngineTest(tf.test.TestCase):
  def test_resume_from_files_is_exact(self):
    train, dev = _files(self)
    resumed_dir, whole_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    for num_epochs in (1, 2):
      with engine.Engine(
        two_losses, _config(resumed_dir, num_epochs=num_epochs, train_data=train, dev_data=dev)
      ) as eng:
        self.assertEqual(eng.num_seqs, {"train": 48, "dev": 24})
        resumed = eng.train()
    with engine.Engine(two_losses, _config(whole_dir, num_epochs=2, train_data=train, dev_data=dev)) as eng:
      whole = eng.train()
      whole_ckpt = eng.latest_checkpoint()
    self.assertEqual(
      [(r.epoch, r.step, r.train, r.dev) for r in resumed], [(r.epoch, r.step, r.train, r.dev) for r in whole]
    )
    self.assertNotEqual(whole[0].train, whole[1].train)
    a, b = _variables(os.path.join(resumed_dir, "model.002")), _variables(whole_ckpt)
    for name in b:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)

  def test_evaluation_files_memory_engine_agree(self):
    train, dev = _files(self)
    train_dir = self.create_tempdir().full_path
    with engine.Engine(
      two_losses, _config(train_dir, num_epochs=1, train_data=train, dev_data=dev, optimizer="momentum")
    ) as eng:
      eng.train()
      engine_dev = eng.evaluate("dev")
      checkpoint = eng.latest_checkpoint()
    before = _snapshot(train_dir)
    from_files = evaluation.evaluate_checkpoint(two_losses, train_dir, data=dev, batch_size=2)
    from_memory = evaluation.evaluate_checkpoint(two_losses, checkpoint, seqs=_DEV, batch_size=24)
    self.assertEqual(_snapshot(train_dir), before)  # read-only
    self.assertEqual(from_files.checkpoint, checkpoint)
    self.assertEqual((from_files.num_seqs, from_memory.num_seqs), (24, 24))
    self.assertNotEqual(from_files.num_batches, from_memory.num_batches)
    for name in ("tag_ce", "aux_ce", "tag_err"):
      self.assertAllClose(from_files.figures()[name], from_memory.figures()[name], rtol=1e-6)
      self.assertAllClose(from_files.figures()[name], engine_dev[name], rtol=1e-6)
      self.assertAllClose(from_files.losses[name]["inv_norm"], sum(len(s["data"]) for s in _DEV))
    self.assertTrue(from_files.losses["tag_err"]["as_error"])
    self.assertIn("tag_err(err)", from_files.table())

  def test_evaluation_refuses_another_models_checkpoint(self):
    train_dir = self.create_tempdir().full_path
    with engine.Engine(
      testing_graphs.make_sum_graph(),
      _config(train_dir, num_epochs=1),
      train_data=testing_graphs.sum_data([2, 3]),
      dev_data=[],
    ) as eng:
      eng.train()
    with self.assertRaisesRegex(
      ValueError,
      r"does not match the graph's model: missing variable .*"
      r"missing variable 'two_losses/embedding' \(shape \[10, 32\]\)",
    ):
      evaluation.evaluate_checkpoint(two_losses, train_dir, seqs=_DEV)
    with self.assertRaisesRegex(ValueError, r"checkpoint '/nonexistent/model.001' does not exist"):
      evaluation.evaluate_checkpoint(two_losses, "/nonexistent/model.001", seqs=_DEV)

  def test_skip_corrupt_records_trains_on_the_rest(self):
    tmp = self.create_tempdir().full_path
    (path,) = records.write_shards(tmp, two_losses.extern_data_template(), _TRAIN[:10])
    raw = bytearray(open(path, "rb").read())
    offset = 0
    for _ in range(8):  # to record 8: TF's reader then skips records 8..10
      offset += 16 + int(np.frombuffer(bytes(raw[offset : offset + 8]), "<u8")[0])
    raw[offset + 20] ^= 0xFF
    with open(path, "wb") as f:
      f.write(bytes(raw))
    with self.assertRaisesRegex(ValueError, r"has corrupt records: record 8 \(unreadable"):
      engine.Engine(two_losses, _config(self.create_tempdir().full_path, train_data=path), dev_data=[])
    with engine.Engine(
      two_losses,
      _config(self.create_tempdir().full_path, num_epochs=1, train_data=path, skip_corrupt_records=True),
      dev_data=[],
    ) as eng:
      self.assertEqual(eng.num_skipped_records, {"train": 3})
      self.assertEqual(eng.num_seqs["train"], 7)
      eng.train()
      frames = sum(inv_norm for _, inv_norm in (b["tag_ce"] for b in eng.evaluate_batches("train")))
    self.assertEqual(frames, sum(len(s["data"]) for s in _TRAIN[:7]))  # the 7 sequences before the corrupt record

  def test_max_seqs_and_data_given_twice(self):
    train, dev = _files(self)
    with engine.Engine(
      two_losses, _config(self.create_tempdir().full_path, num_epochs=1, train_data=train, dev_data=dev, max_seqs=20)
    ) as eng:
      self.assertEqual(eng.num_seqs, {"train": 20, "dev": 2})
      eng.train()
      self.assertEqual(sum(len(b["output"]) for b in eng.forward("dev")), 2)
    with self.assertRaisesRegex(ValueError, r"train data given twice: as a list of sequences and as files"):
      engine.Engine(two_losses, _config(self.create_tempdir().full_path, train_data=train), train_data=_TRAIN)


if __name__ == "__main__":
  absltest.main()
