"""returnn_rc.forward (padding, npz formats) and the command lines tools/export.py, tools/forward.py."""

import json
import os
import re
import subprocess
import sys

import numpy as np
from absl.testing import absltest

from returnn_rc import export, graph_module
from returnn_rc.export import forwarding as forward
from tests.export import export_test_util as util
from tests.export import tiny_graph

_TINY = os.path.join("tests", "export", "tiny_graph.py")


def _desc():
  return {
    "data": {
      "dtype": "float32",
      "batch_axis": 0,
      "dynamic_axes": [1],
      "dims": [
        {"kind": "batch"},
        {"kind": "dynamic", "name": "time", "size_key": "data:size1"},
        {"kind": "static", "name": "f", "size": 2},
      ],
    },
    "ids": {
      "dtype": "int32",
      "batch_axis": 0,
      "dynamic_axes": [1],
      "dims": [{"kind": "batch"}, {"kind": "dynamic", "name": "time", "size_key": "data:size1"}],
    },
  }


class PaddingTest(absltest.TestCase):
  def test_pad_unpad_round_trip(self):
    seqs = [
      {"data": np.arange(6, dtype=np.float32).reshape(3, 2), "ids": np.array([1, 2, 3], np.int32)},
      {"data": np.ones([1, 2], np.float32), "ids": np.array([7], np.int32)},
    ]
    padded = forward.pad_sequences(seqs, _desc())
    self.assertEqual(sorted(padded), ["data", "data:size1", "ids", "ids:size1"])
    self.assertEqual(padded["data"].shape, (2, 3, 2))
    np.testing.assert_array_equal(padded["data:size1"], [3, 1])
    np.testing.assert_array_equal(padded["ids"], [[1, 2, 3], [7, 0, 0]])
    self.assertEqual(padded["data:size1"].dtype, np.int32)
    back = forward.unpad_sequences(padded, _desc())
    for got, expected in zip(back, seqs):
      for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    feed = forward.feed_from_padded(padded, _desc())  # the shared time dim: one size key
    self.assertEqual(sorted(feed), ["data", "data:size1", "ids"])

  def test_shared_dim_lengths_must_agree(self):
    seqs = [{"data": np.ones([3, 2], np.float32), "ids": np.array([1, 2], np.int32)}]
    padded = forward.pad_sequences(seqs, _desc())
    with self.assertRaisesRegex(
      ValueError,
      r"'ids' axis 1 shares its dim 'time' with 'data:size1', but the "
      r"lengths differ: \[2\] vs \[3\]",
    ):
      forward.feed_from_padded(padded, _desc())

  def test_read_npz_formats(self):
    tmp = self.create_tempdir().full_path
    seqs = [{"data": np.ones([2, 2], np.float32), "ids": np.array([4, 5], np.int32)}]
    per_seq_path = os.path.join(tmp, "per_seq.npz")
    np.savez(per_seq_path, **{f"seq0/{k}": v for k, v in seqs[0].items()})
    padded_path = os.path.join(tmp, "padded.npz")
    np.savez(padded_path, **forward.pad_sequences(seqs, _desc()))
    for path in (per_seq_path, padded_path):
      got = forward.read_sequences_npz(path, _desc())
      self.assertLen(got, 1)
      np.testing.assert_array_equal(got[0]["ids"], [4, 5])
    bad_path = os.path.join(tmp, "bad.npz")
    np.savez(bad_path, other=np.zeros(3))
    with self.assertRaisesRegex(ValueError, r"bad.npz': no 'data' in the given arrays.*padded format"):
      forward.read_sequences_npz(bad_path, _desc())

  def test_read_npz_checks_sizes(self):
    tmp = self.create_tempdir().full_path
    seqs = [
      {"data": np.ones([3, 2], np.float32), "ids": np.array([4, 5, 6], np.int32)},
      {"data": np.ones([1, 2], np.float32), "ids": np.array([7], np.int32)},
    ]
    good = forward.pad_sequences(seqs, _desc())
    cases = [
      (
        "above the padded length",
        {"ids:size1": np.array([4, 1], np.int32)},
        r"sizes 'ids:size1': sequence 0 has size 4, outside \[0, 3\] \(the padded length of 'ids' at axis 1\)",
      ),
      ("negative", {"data:size1": np.array([3, -2], np.int32)}, r"sizes 'data:size1': sequence 1 has size -2"),
      ("float", {"data:size1": np.array([3.0, 1.0])}, r"sizes 'data:size1' must be integers, got dtype float64"),
      (
        "wrong count",
        {"data:size1": np.array([3], np.int32)},
        r"sizes 'data:size1' must have shape \[2\] \(one per sequence of 'data'\), got shape \[1\]",
      ),
    ]
    path = os.path.join(tmp, "good.npz")
    np.savez(path, **good)
    self.assertLen(forward.read_sequences_npz(path, _desc()), 2)  # positive control
    for what, change, regex in cases:
      with self.subTest(what):
        path = os.path.join(tmp, f"{what.replace(' ', '_')}.npz")
        np.savez(path, **dict(good, **change))
        with self.assertRaisesRegex(ValueError, re.escape(path) + r"': " + regex):
          forward.read_sequences_npz(path, _desc())
    with self.assertRaisesRegex(ValueError, r"input file '.*nope.npz' does not exist"):
      forward.read_sequences_npz(os.path.join(tmp, "nope.npz"), _desc())

  def test_output_path_checked(self):
    tmp = self.create_tempdir().full_path
    for bad, regex in [
      (os.path.join(tmp, "out"), r"must be a path ending with '.npz', got"),
      (os.path.join(tmp, "no_dir", "out.npz"), r"directory '.*no_dir' does not exist"),
    ]:
      with self.assertRaisesRegex(ValueError, regex):
        forward.write_outputs_npz(bad, [], _desc())
    self.assertEqual(os.listdir(tmp), [])


class ToolsTest(absltest.TestCase):
  def test_export_then_forward_saved_model(self):
    tmp = self.create_tempdir().full_path
    export_dir = os.path.join(tmp, "sm")
    code, log = util.run_python(["tools/export.py", f"--graph={_TINY}", "--fresh_init", f"--export_dir={export_dir}"])
    self.assertEqual(code, 0, msg=log[-3000:])
    summary = json.loads(log.strip().splitlines()[-1])
    self.assertEqual(summary["inputs"], ["data"])
    self.assertEqual(summary["outputs"], ["labels", "logits", "pooled", "strided"])

    code, log = util.run_python(
      ["-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir", export_dir], env={"PYTHONPATH": ""}
    )
    self.assertEqual(code, 0, msg=log[-3000:])
    self.assertIn("signature_def['serving_default']", log)
    for key in (
      "inputs['data']",
      "inputs['data:size1']",
      "outputs['logits']",
      "outputs['logits:size1']",
      "outputs['strided:size1']",
      "Method name is: tensorflow/serving/predict",
    ):
      self.assertIn(key, log)
    self.assertIn("name: extern_data/data:0", log)

    seqs = tiny_graph.default_data("dev")
    in_path = os.path.join(tmp, "in.npz")
    np.savez(in_path, **{f"seq{i}/data": s["data"] for i, s in enumerate(seqs)})
    out_path = os.path.join(tmp, "out.npz")
    code, log = util.run_python(
      [
        "tools/forward.py",
        f"--saved_model={export_dir}",
        f"--input={in_path}",
        f"--output={out_path}",
        "--batch_size=2",
      ]
    )
    self.assertEqual(code, 0, msg=log[-3000:])
    self.assertIn("forward: batch 3/3, 5/5 sequences", log)
    with forward.SavedModelForwarder(export_dir) as fwd:
      expected = forward.forward_sequences(fwd, seqs, batch_size=3)
      outputs_desc = fwd.description["outputs"]
    with np.load(out_path) as data:
      written = {k: data[k] for k in data.files}
    self.assertEqual(
      sorted(written), ["labels", "labels:size1", "logits", "logits:size1", "pooled", "strided", "strided:size1"]
    )
    np.testing.assert_array_equal(written["logits:size1"], [len(s["data"]) for s in seqs])
    got = forward.unpad_sequences(written, outputs_desc)
    for g, e in zip(got, expected):
      for key in e:
        np.testing.assert_array_equal(g[key], e[key])

  def test_forward_graph_module_checkpoint(self):
    tmp = self.create_tempdir().full_path
    ckpt = util.make_checkpoint(tiny_graph, tmp)
    out_path = os.path.join(tmp, "out.npz")
    code, log = util.run_python(
      ["tools/forward.py", f"--graph={_TINY}", f"--checkpoint={tmp}", f"--output={out_path}", "--max_seqs=3"]
    )
    self.assertEqual(code, 0, msg=log[-3000:])
    with forward.GraphModuleForwarder(tiny_graph, ckpt) as fwd:
      expected = forward.forward_sequences(fwd, tiny_graph.default_data("dev")[:3], batch_size=8)
      with np.load(out_path) as data:
        got = forward.unpad_sequences({k: data[k] for k in data.files}, fwd.description["outputs"])
    self.assertLen(got, 3)
    for g, e in zip(got, expected):
      for key in e:
        np.testing.assert_array_equal(g[key], e[key])

  def _run_tool(self, tool, *args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=util.REPO_ROOT)
    proc = subprocess.run(
      [sys.executable, os.path.join(util.REPO_ROOT, "tools", tool), *args],
      cwd=cwd,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      timeout=300,
      check=False,
    )
    return proc.returncode, proc.stdout

  def test_export_tool_replaces_only_an_earlier_export(self):
    tmp = self.create_tempdir().full_path
    for name in ("notes.txt", "model.py"):
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        f.write("mine")
    os.makedirs(os.path.join(tmp, "sm"))
    with open(os.path.join(tmp, "sm", "keep.txt"), "w", encoding="utf-8") as f:
      f.write("mine")
    graph = os.path.join(util.REPO_ROOT, _TINY)
    for export_dir, regex in (
      (".", r"export_dir '.' is the current directory or one above it"),
      (
        "sm",
        r"export_dir 'sm' is not an earlier returnn_rc export \(unexpected: "
        r"\['keep.txt'.*nothing was deleted",
      ),
    ):
      code, log = self._run_tool(
        "export.py", f"--graph={graph}", "--fresh_init", f"--export_dir={export_dir}", "--overwrite", cwd=tmp
      )
      self.assertNotEqual(code, 0)
      self.assertRegex(log, regex)
    self.assertEqual(sorted(os.listdir(tmp)), ["model.py", "notes.txt", "sm"])
    self.assertEqual(os.listdir(os.path.join(tmp, "sm")), ["keep.txt"])

  def test_forward_tool_checks_input_sizes(self):
    tmp = self.create_tempdir().full_path
    export_dir = os.path.join(tmp, "sm")
    export.export_saved_model(tiny_graph, checkpoint_path=None, export_dir=export_dir)
    in_path, out_path = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
    np.savez(in_path, **{"data": np.zeros([2, 4, 3], np.float32), "data:size1": np.array([5, 2], np.int32)})
    code, log = self._run_tool(
      "forward.py", f"--saved_model={export_dir}", f"--input={in_path}", f"--output={out_path}", cwd=tmp
    )
    self.assertNotEqual(code, 0)
    self.assertIn(
      "sizes 'data:size1': sequence 0 has size 5, outside [0, 4] (the padded length of 'data' at axis 1)", log
    )
    code, log = self._run_tool(
      "forward.py", f"--saved_model={export_dir}", f"--input={in_path}", f"--output={os.path.join(tmp, 'out')}", cwd=tmp
    )
    self.assertNotEqual(code, 0)
    self.assertIn("output file must be a path ending with '.npz'", log)
    self.assertEqual(sorted(os.listdir(tmp)), ["in.npz", "sm"])

  def test_forward_usage_errors(self):
    code, log = util.run_python(["tools/forward.py", "--output=/dev/null"])
    self.assertNotEqual(code, 0)
    self.assertIn("give either --saved_model, or --graph with --checkpoint or --fresh_init", log)

  def test_import_graph_module(self):
    self.assertEqual(graph_module.load_graph_module(_TINY).VOCAB, tiny_graph.VOCAB)
    with self.assertRaisesRegex(ValueError, r"graph module 'graphs.no_such_graph' not found"):
      graph_module.load_graph_module("graphs.no_such_graph")


if __name__ == "__main__":
  absltest.main()
