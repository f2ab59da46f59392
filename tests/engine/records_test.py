"""Record files and the file pipeline: round trip against the in-memory pipeline, the README writer,
per-epoch order, bucket bounds, corrupt records, worker split, a module's own dataset factory."""

import json
import os
import types
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from graphs import char_lm, seq_classifier, two_losses
from returnn_rc import engine
from returnn_rc.engine import data, records
from returnn_rc.tensor import size_key
from tests.engine import testing_graphs


def _mixed_template():
  """Inputs of several dtypes and ranks: [T,3] float32, [T] float64 sharing T, a scalar int64, [2] bool."""
  time = rc.Dim(None, name="time")
  return rc.TensorDict(
    {
      "feat": rc.Tensor("feat", [rc.batch_dim, time, rc.Dim(3, name="f")], "float32"),
      "weight": rc.Tensor("weight", [rc.batch_dim, time], "float64"),
      "label": rc.Tensor("label", [rc.batch_dim], "int64"),
      "flags": rc.Tensor("flags", [rc.batch_dim, rc.Dim(2, name="two")], "bool"),
    }
  )


def _mixed_data(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    t = int(rng.integers(1, 9))
    out.append(
      {
        "feat": rng.normal(size=[t, 3]).astype(np.float32),
        "weight": rng.normal(size=[t]),
        "label": np.int64(rng.integers(-5, 5)),
        "flags": rng.integers(0, 2, size=[2]).astype(bool),
      }
    )
  return out


def _batches(ds, epoch=1, order_seed=None):
  """All batches of ``ds`` (built in the current graph) for the fed epoch."""
  it = tf.compat.v1.data.make_initializable_iterator(ds)
  nxt = it.get_next()
  out = []
  with tf.compat.v1.Session() as sess:
    sess.run(it.initializer, {order_seed: epoch} if order_seed is not None else None)
    while True:
      try:
        out.append(sess.run(nxt))
      except tf.errors.OutOfRangeError:
        return out


def _seqs_of(batches, template):
  """The sequences of padded batches, unpadded, in batch order."""
  out = []
  for b in batches:
    for i in range(len(next(iter(b.values())))):
      seq = {}
      for name, tmpl in template.items():
        index = [i] + [
          slice(0, b[size_key(name, a)][i]) if d.is_dynamic() else slice(None) for a, d in enumerate(tmpl.dims) if a > 0
        ]
        seq[name] = b[name][tuple(index)]
      out.append(seq)
  return out


def _key(seq):
  return tuple((k, seq[k].tobytes()) for k in sorted(seq))


class RoundTripTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("two_losses", two_losses.extern_data_template, lambda: two_losses.default_data("dev", 30), 3, False),
    ("seq_classifier", seq_classifier.extern_data_template, lambda: seq_classifier.default_data("dev", 30), 4, False),
    ("char_lm", char_lm.extern_data_template, lambda: char_lm.default_data("dev", 40), 2, False),
    ("char_lm_pad_to_bucket", char_lm.extern_data_template, lambda: char_lm.default_data("dev", 40), 2, True),
    ("mixed_dtypes", _mixed_template, lambda: _mixed_data(25), 5, False),
  )
  def test_files_give_the_memory_batches(self, make_template, make_data, num_shards, pad_to_bucket_boundary):
    """Within one bucketing window (here: the whole data) the batches are the memory source's (in another order)."""
    seqs = make_data()
    tmp = self.create_tempdir().full_path
    records.write_shards(tmp, make_template(), seqs, num_shards=num_shards, prefix="dev")
    template = make_template()
    files = data.scan_files(os.path.join(tmp, "dev-*"), template, what="test")
    self.assertEqual(files.num_seqs, len(seqs))
    self.assertLen(files.files, num_shards)
    opts = dict(batch_size=4, shuffle=False, seed=1, pad_to_bucket_boundary=pad_to_bucket_boundary)
    with tf.Graph().as_default():
      order = tf.compat.v1.placeholder(tf.int64, ())
      from_files = _batches(data.make_file_dataset(template, files, order_seed=order, **opts), order_seed=order)
      from_memory = _batches(data.make_dataset(template, seqs, order_seed=order, **opts), order_seed=order)
    for b in from_files:
      for key, value in b.items():
        self.assertEqual(value.dtype, from_memory[0][key].dtype, key)

    def as_bytes(batch):
      return tuple((k, batch[k].shape, batch[k].tobytes()) for k in sorted(batch))

    self.assertCountEqual([as_bytes(b) for b in from_files], [as_bytes(b) for b in from_memory])
    self.assertCountEqual([_key(s) for s in _seqs_of(from_files, template)], [_key(s) for s in seqs])

  def test_windows_bucket_and_pad_minimally(self):
    """More data than one window: every batch holds sequences of one bucket, padded to its longest."""
    seqs = char_lm.default_data("dev", 300)
    tmp = self.create_tempdir().full_path
    records.write_shards(tmp, char_lm.extern_data_template(), seqs, num_shards=3)
    template = char_lm.extern_data_template()
    files = data.scan_files(os.path.join(tmp, "*"), template, what="test")
    bounds = data.bucket_boundaries([len(s["data"]) for s in seqs])
    with mock.patch.object(data, "WINDOW_BATCHES", 4), tf.Graph().as_default():  # windows of 16 sequences
      order = tf.compat.v1.placeholder(tf.int64, ())
      batches = _batches(
        data.make_file_dataset(template, files, batch_size=4, order_seed=order, shuffle=True, seed=2), order_seed=order
      )
    self.assertGreater(len(batches), 300 / 4)  # partial batches at the window ends
    for b in batches:
      lens = b["data:size1"]
      self.assertLessEqual(len(lens), 4)
      self.assertEqual(b["data"].shape[1], max(lens))
      self.assertLen(set(np.searchsorted(bounds, lens, side="right")), 1, lens)
      for row, n in zip(b["data"], lens):
        self.assertFalse(np.any(row[n:]))
    self.assertCountEqual([_key(s) for s in _seqs_of(batches, template)], [_key(s) for s in seqs])

  def test_readme_writer_example(self):
    """Files written with plain TF/numpy as the README shows are read back."""
    path = os.path.join(self.create_tempdir().full_path, "train-00000-of-00001.tfrecord")
    sequences = [np.array([0, 5, 7, 0], np.int32), np.array([0, 9, 0], np.int32)]

    def feature(values):
      if isinstance(values, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[values]))
      return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    schema = {
      "format": "returnn_rc.records",
      "version": 1,
      "inputs": [{"name": "data", "dtype": "int32", "shape": [None], "dims": ["time"], "sparse_dim": 96}],
    }
    with tf.io.TFRecordWriter(path) as w:
      w.write(
        tf.train.Example(
          features=tf.train.Features(feature={"returnn_rc/schema": feature(json.dumps(schema).encode())})
        ).SerializeToString()
      )
      for ids in sequences:
        w.write(
          tf.train.Example(
            features=tf.train.Features(
              feature={"data/value": feature(ids.astype("<i4").tobytes()), "data/shape": feature(ids.shape)}
            )
          ).SerializeToString()
        )
    template = char_lm.extern_data_template()
    files = data.scan_files(path, template, what="test")
    self.assertEqual(files.num_seqs, 2)
    with tf.Graph().as_default():
      order = tf.compat.v1.placeholder(tf.int64, ())
      batches = _batches(
        data.make_file_dataset(template, files, batch_size=8, order_seed=order, shuffle=False, seed=0), order_seed=order
      )
    got = sorted(_seqs_of(batches, template), key=lambda s: len(s["data"]))
    np.testing.assert_array_equal(got[0]["data"], sequences[1])
    np.testing.assert_array_equal(got[1]["data"], sequences[0])


class EpochOrderTest(tf.test.TestCase):
  def _epochs(self, files, template, epochs, seed=3):
    with tf.Graph().as_default():
      order = tf.compat.v1.placeholder(tf.int64, ())
      ds = data.make_file_dataset(
        template, files, batch_size=4, order_seed=order, shuffle=True, seed=seed, shuffle_buffer=16
      )
      out = []
      for e in epochs:
        out.append([_key(s) for s in _seqs_of(_batches(ds, e, order), template)])
    return out

  def test_order_is_a_function_of_seed_and_epoch(self):
    seqs = two_losses.default_data("train", 60)
    tmp = self.create_tempdir().full_path
    records.write_shards(tmp, two_losses.extern_data_template(), seqs, num_shards=4)
    template = two_losses.extern_data_template()
    files = data.scan_files(os.path.join(tmp, "*.tfrecord"), template, what="test")
    e1, e2, e1_again = self._epochs(files, template, [1, 2, 1])
    (e1_other_run,) = self._epochs(files, template, [1])  # a new graph (a resumed run)
    (e1_other_seed,) = self._epochs(files, template, [1], seed=4)
    self.assertEqual(e1, e1_again)
    self.assertEqual(e1, e1_other_run)
    self.assertNotEqual(e1, e2)
    self.assertNotEqual(e1, e1_other_seed)
    for epoch in (e1, e2, e1_other_seed):  # every sequence exactly once
      self.assertCountEqual(epoch, [_key(s) for s in seqs])


class BucketBoundsTest(absltest.TestCase):
  def test_counts_give_the_quantile_bounds(self):
    rng = np.random.default_rng(0)
    for trial in range(200):
      lengths = rng.integers(0, int(rng.integers(1, 300)), size=int(rng.integers(1, 400)))
      qs = np.quantile(lengths, np.linspace(0, 1, 9)[1:-1])
      reference = sorted({int(q) + 1 for q in qs})
      self.assertEqual(data.bucket_boundaries_from_counts(np.bincount(lengths)), reference, trial)
      self.assertEqual(data.bucket_boundaries(lengths), reference, trial)


def _corrupt(path, record_index, *, byte=20):
  """Flips a byte in the payload of record ``record_index`` (0: the schema record)."""
  raw = bytearray(open(path, "rb").read())
  offset = 0
  for _ in range(record_index):
    (length,) = np.frombuffer(bytes(raw[offset : offset + 8]), "<u8")
    offset += 16 + int(length)
  raw[offset + 12 + byte] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(raw))


class CorruptRecordTest(tf.test.TestCase):
  def _write(self, n=24, shards=2):
    tmp = self.create_tempdir().full_path
    seqs = two_losses.default_data("train", n)
    paths = records.write_shards(tmp, two_losses.extern_data_template(), seqs, num_shards=shards)
    return tmp, seqs, paths

  def test_crc_error_names_file_and_record(self):
    tmp, _, paths = self._write()
    _corrupt(paths[1], 3)
    with self.assertRaisesRegex(
      ValueError,
      rf"record file '{paths[1]}' has corrupt records: record 3 \(unreadable: "
      r"corrupted record at \d+",
    ):
      data.scan_files(os.path.join(tmp, "*"), two_losses.extern_data_template(), what="test")

  def test_bad_record_content_names_file_and_record(self):
    tmp, _, paths = self._write()
    template = two_losses.extern_data_template()
    schema = records.schema_of(template)
    with tf.io.TFRecordWriter(paths[0]) as w:  # rewrite shard 0 with a bad record 2
      w.write(records.schema_record(schema))
      w.write(records.encode_sequence(two_losses.default_data("train", 1)[0], schema))
      w.write(
        records._example({"data/value": b"\0" * 12, "data/shape": [3], "tags/value": b"\0" * 8, "tags/shape": [2]})
      )
    with self.assertRaisesRegex(
      ValueError,
      r"record 2 \(input 'tags' axis 0: dynamic dim 'time' has length 2 here "
      r"but 3",
    ):
      data.scan_files(os.path.join(tmp, "*"), template, what="test")

  def test_skip_counts_and_reads_the_rest(self):
    tmp, seqs, paths = self._write(n=24, shards=2)  # 12 sequences per file
    _corrupt(paths[1], 5)  # TF's reader drops records 5..12 of file 1: 8 sequences
    template = two_losses.extern_data_template()
    files = data.scan_files(os.path.join(tmp, "*"), template, what="test", skip_corrupt=True)
    self.assertEqual(files.num_skipped, 8)
    self.assertEqual(files.num_seqs, 16)
    with tf.Graph().as_default():
      order = tf.compat.v1.placeholder(tf.int64, ())
      got = _seqs_of(
        _batches(
          data.make_file_dataset(template, files, batch_size=5, order_seed=order, shuffle=True, seed=0),
          order_seed=order,
        ),
        template,
      )
    expected = seqs[0::2] + seqs[1::2][:4]  # file 0 whole, file 1 up to its record 4 (sequence record 4 = 4th)
    self.assertCountEqual([_key(s) for s in got], [_key(s) for s in expected])


class WorkerSplitTest(tf.test.TestCase):
  def test_parts_are_contiguous_and_make_the_global_batch(self):
    with tf.Graph().as_default():
      size = tf.compat.v1.placeholder(tf.int32, [])
      batch = {"x": tf.reshape(tf.range(size * 3), [size, 3]), "x:size1": tf.range(size)}
      parts = {(i, n): data.split_global_batch(batch, i, n) for n in (1, 2, 3, 4) for i in range(n)}
      with tf.compat.v1.Session() as sess:
        for b in range(8):
          got = sess.run(parts, {size: b})
          for n in (1, 2, 3, 4):
            xs = [got[(i, n)]["x"] for i in range(n)]
            np.testing.assert_array_equal(np.concatenate(xs), np.arange(b * 3).reshape([b, 3]))
            np.testing.assert_array_equal(np.concatenate([got[(i, n)]["x:size1"] for i in range(n)]), np.arange(b))
            sizes = [len(x) for x in xs]
            self.assertLessEqual(max(sizes) - min(sizes), 1)
            self.assertEqual(sizes, [b * (i + 1) // n - b * i // n for i in range(n)])

  def test_shard_batches_in_tf_data(self):
    template = two_losses.extern_data_template()
    seqs = two_losses.default_data("dev", 20)
    with tf.Graph().as_default():
      order = tf.compat.v1.placeholder(tf.int64, ())
      ds = data.make_dataset(template, seqs, batch_size=3, order_seed=order, shuffle=True, seed=5)
      whole = _batches(ds, 1, order)
      parts = [_batches(data.shard_batches(ds, i, 2), 1, order) for i in range(2)]
    for k, b in enumerate(whole):
      for key in b:
        np.testing.assert_array_equal(np.concatenate([parts[0][k][key], parts[1][k][key]]), b[key])

  def test_bad_worker_arguments(self):
    with self.assertRaisesRegex(ValueError, r"worker_index must be an int in \[0, 2\), got 2"):
      data.split_global_batch({"x": tf.zeros([2])}, 2, 2)
    with self.assertRaisesRegex(ValueError, r"num_workers must be an int >= 1, got 0"):
      data.split_global_batch({"x": tf.zeros([2])}, 0, 0)


def _text_graph():
  """The sum graph reading its own format: text files, one sequence of floats per line."""
  module = testing_graphs.make_sum_graph("text_sum")

  def dataset_from_files(files, *, extern_data):
    del extern_data
    lines = files.interleave(
      tf.data.TextLineDataset, cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return lines.map(
      lambda line: {"x": tf.strings.to_number(tf.strings.split(line), tf.float32)},
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )

  module.dataset_from_files = dataset_from_files
  return module


class DatasetHookTest(tf.test.TestCase):
  def test_module_format_trains_like_memory(self):
    tmp = self.create_tempdir().full_path
    seqs = testing_graphs.sum_data([1, 2, 3, 5, 8, 13, 4])
    for shard in range(2):
      with open(os.path.join(tmp, f"part{shard}.txt"), "w") as f:
        for seq in seqs[shard::2]:
          f.write(" ".join(repr(float(v)) for v in seq["x"]) + "\n")
    results = []
    for kwargs in (dict(train_data=os.path.join(tmp, "*.txt"), dev_data=os.path.join(tmp, "*.txt")), {}):
      cfg = engine.EngineConfig(
        train_dir=self.create_tempdir().full_path, num_epochs=1, batch_size=2, learning_rate=0.0, **kwargs
      )
      given = {} if kwargs else dict(train_data=seqs, dev_data=seqs)
      with engine.Engine(_text_graph(), cfg, **given) as eng:
        self.assertEqual(eng.num_seqs, {"train": len(seqs), "dev": len(seqs)})
        results.append(eng.train()[0])
    expected = sum(float(np.sum(s["x"])) for s in seqs) / sum(len(s["x"]) for s in seqs)
    for r in results:
      self.assertAllClose(r.train["x"], expected, rtol=1e-6)
      self.assertAllClose(r.dev["x"], expected, rtol=1e-6)

  def test_wrong_element_spec(self):
    module = types.SimpleNamespace(**vars(_text_graph()))
    module.__name__ = "bad_text"
    module.dataset_from_files = lambda files, *, extern_data: files.map(lambda f: {"x": tf.zeros([2, 2])})
    tmp = self.create_tempdir().full_path
    open(os.path.join(tmp, "a.txt"), "w").close()
    with self.assertRaisesRegex(
      ValueError,
      r"dataset_from_files yields 'x' as float32 \(2, 2\), extern_data expects "
      r"float32 \(None,\)",
    ):
      data.scan_files(
        os.path.join(tmp, "*"), module.extern_data_template(), what="test", reader=module.dataset_from_files
      )


if __name__ == "__main__":
  absltest.main()
