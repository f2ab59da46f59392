"""Bad input to the export and to the served model: each error names the value and what was expected."""

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import export
from returnn_rc.export import forward_graph
from returnn_rc.export import forwarding as forward
from tests.export import export_test_util as util
from tests.export import tiny_graph


def _mark_one(name):
  def forward_step(*, model, extern_data):
    data = extern_data["data"]
    rc.get_run_ctx().mark_as_output(rc.Tensor("x", data.dims, "float32", raw_tensor=data.get_raw() * model.b[0]), name)

  return forward_step


class ExportErrorsTest(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.export_dir = os.path.join(self.tmp, "sm")

  def _export(self, module, checkpoint_path=None, **kwargs):
    return export.export_saved_model(module, checkpoint_path=checkpoint_path, export_dir=self.export_dir, **kwargs)

  def test_no_marked_output(self):
    module = util.variant(forward_step=lambda *, model, extern_data: None, model_outputs_template=None)
    with self.assertRaisesRegex(ValueError, r"tiny_variant\.forward_step marked no output.*mark_as_output"):
      self._export(module)
    self.assertFalse(os.path.exists(self.export_dir))

  @parameterized.parameters("my out", "a/b", "x:y", "1st", "")
  def test_invalid_output_name(self, name):
    module = util.variant(forward_step=_mark_one(name), model_outputs_template=None)
    with self.assertRaises((ValueError, TypeError)) as cm:
      self._export(module)
    if name:  # an empty name is refused by mark_as_output already
      self.assertIn(f"output name {name!r} is not a valid signature key", str(cm.exception))

  def test_invalid_input_name(self):
    def extern_data_template():
      return rc.TensorDict({"in put": rc.Tensor("in put", [rc.batch_dim, rc.Dim(3, name="f")], "float32")})

    module = util.variant(extern_data_template=extern_data_template)
    with self.assertRaisesRegex(ValueError, r"extern-data input name 'in put' is not a valid signature key"):
      self._export(module)

  def test_output_not_matching_template(self):
    def model_outputs_template(extern_data):
      out = tiny_graph.model_outputs_template(extern_data)
      out["labels"] = rc.Tensor("labels", out["labels"].dims, "int64", sparse_dim=out["labels"].sparse_dim)
      return out

    module = util.variant(model_outputs_template=model_outputs_template)
    with self.assertRaisesRegex(ValueError, r"mark_as_output\('labels'\): dtype int32 but int64 expected"):
      self._export(module)

  def test_expected_output_not_marked(self):
    def model_outputs_template(extern_data):
      out = tiny_graph.model_outputs_template(extern_data)
      out["extra"] = rc.Tensor("extra", [rc.batch_dim], "float32")
      return out

    module = util.variant(model_outputs_template=model_outputs_template)
    with self.assertRaisesRegex(RuntimeError, r"outputs \['extra'\] were expected but not marked"):
      self._export(module)

  def test_output_depending_on_other_placeholder(self):
    def forward_step(*, model, extern_data):
      scale = tf.compat.v1.placeholder_with_default(1.0, [], name="my_scale")
      data = extern_data["data"]
      rc.get_run_ctx().mark_as_output(
        rc.Tensor("x", data.dims, "float32", raw_tensor=data.get_raw() * scale * model.b[0]), "x"
      )

    module = util.variant(forward_step=forward_step, model_outputs_template=None)
    with self.assertRaisesRegex(
      RuntimeError, r"output 'x' depends on placeholder 'my_scale'.*not an extern-data input"
    ):
      self._export(module)

  def test_checkpoint_shape_mismatch(self):
    class WideModel:
      def __init__(self):
        with tf.compat.v1.variable_scope("tiny"):
          tf.compat.v1.get_variable("w", [tiny_graph.FEATURES + 1, tiny_graph.VOCAB])
          tf.compat.v1.get_variable("b", [tiny_graph.VOCAB])

    ckpt = util.make_checkpoint(util.variant(get_model=lambda *, epoch, step: WideModel()), self.tmp)
    with self.assertRaisesRegex(
      ValueError,
      re.escape(
        "does not match the forward graph: variable 'tiny/w' has shape [4, 5] in the "
        "checkpoint, the graph expects [3, 5]"
      ),
    ):
      self._export(tiny_graph, ckpt)
    self.assertFalse(os.path.exists(self.export_dir))

  def test_checkpoint_missing_variable(self):
    class HalfModel:
      def __init__(self):
        with tf.compat.v1.variable_scope("tiny"):
          tf.compat.v1.get_variable("b", [tiny_graph.VOCAB])

    ckpt = util.make_checkpoint(util.variant(get_model=lambda *, epoch, step: HalfModel()), self.tmp)
    with self.assertRaisesRegex(ValueError, re.escape("missing variable 'tiny/w' (shape [3, 5])")):
      self._export(tiny_graph, ckpt)

  def test_checkpoint_does_not_exist(self):
    with self.assertRaisesRegex(ValueError, r"checkpoint '.*nope' does not exist"):
      self._export(tiny_graph, os.path.join(self.tmp, "nope"))
    with self.assertRaisesRegex(ValueError, r"checkpoint directory '.*' holds no checkpoint"):
      self._export(tiny_graph, self.tmp)

  def test_checkpoint_directory_and_values(self):
    ckpt = util.make_checkpoint(tiny_graph, self.tmp)
    desc = self._export(tiny_graph, self.tmp)  # a directory: its latest checkpoint
    self.assertEqual(desc["checkpoint"], ckpt)
    reader = tf.train.load_checkpoint(ckpt)
    loaded = tf.saved_model.load(self.export_dir)
    by_name = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    np.testing.assert_array_equal(by_name["tiny/w"], reader.get_tensor("tiny/w"))

  def test_export_dir_not_empty(self):
    os.makedirs(self.export_dir)
    with open(os.path.join(self.export_dir, "old.txt"), "w", encoding="utf-8") as f:
      f.write("x")
    with self.assertRaisesRegex(ValueError, r"export_dir '.*sm' already exists and is not empty; pass overwrite=True"):
      self._export(tiny_graph)
    # overwrite replaces only an earlier export: anything else is refused and nothing is deleted
    with self.assertRaisesRegex(
      ValueError,
      r"export_dir '.*sm' is not an earlier returnn_rc export \(unexpected: "
      r"\['old.txt', .*nothing was deleted",
    ):
      self._export(tiny_graph, overwrite=True)
    self.assertEqual(os.listdir(self.export_dir), ["old.txt"])
    self.assertEqual(sorted(os.listdir(self.tmp)), ["sm"])  # no temporary dir left behind

  def test_overwrite_replaces_an_earlier_export(self):
    self._export(tiny_graph)  # random weights
    ckpt = util.make_checkpoint(tiny_graph, self.tmp)
    desc = self._export(tiny_graph, ckpt, overwrite=True)
    self.assertEqual(desc["checkpoint"], ckpt)
    self.assertEqual(export.load_dims(self.export_dir)["checkpoint"], ckpt)
    loaded = tf.saved_model.load(self.export_dir)
    by_name = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    np.testing.assert_array_equal(by_name["tiny/w"], tf.train.load_checkpoint(ckpt).get_tensor("tiny/w"))
    self.assertEqual(
      sorted(n for n in os.listdir(self.tmp) if not n.startswith("model.ckpt")), ["checkpoint", "sm"]
    )  # no temporary dir, no moved-aside export left behind

  @parameterized.parameters(
    "notes.txt", os.path.join("variables", "extra.bin"), os.path.join("assets.extra", "mine.json")
  )
  def test_overwrite_refuses_an_export_with_other_files(self, extra):
    self._export(tiny_graph)
    with open(os.path.join(self.export_dir, extra), "w", encoding="utf-8") as f:
      f.write("mine")
    before = sorted(
      os.path.relpath(os.path.join(r, n), self.export_dir) for r, _, files in os.walk(self.export_dir) for n in files
    )
    with self.assertRaisesRegex(
      ValueError,
      r"is not an earlier returnn_rc export \(unexpected: \[.*"
      + re.escape(extra.replace(os.sep, "/"))
      + r".*nothing was deleted",
    ):
      self._export(tiny_graph, overwrite=True)
    after = sorted(
      os.path.relpath(os.path.join(r, n), self.export_dir) for r, _, files in os.walk(self.export_dir) for n in files
    )
    self.assertEqual(before, after)

  @parameterized.parameters(
    ("epoch", 0, ValueError, r"epoch must be an int in \[1, 2\*\*63\), got 0"),
    ("step", -1, ValueError, r"step must be an int in \[0, 2\*\*63\), got -1"),
    ("epoch", 1.5, TypeError, r"epoch must be None or an int, got 1.5"),
    ("overwrite", "yes", TypeError, r"overwrite must be a bool, got 'yes'"),
  )
  def test_bad_options(self, option, value, exc, regex):
    with self.assertRaisesRegex(exc, regex):
      self._export(tiny_graph, **{option: value})
    self.assertFalse(os.path.exists(self.export_dir))

  def test_empty_export_dir_is_fine(self):
    os.makedirs(self.export_dir)
    self._export(tiny_graph)
    self.assertTrue(os.path.exists(os.path.join(self.export_dir, "saved_model.pb")))

  def test_load_dims_of_foreign_dir(self):
    with self.assertRaisesRegex(ValueError, r"has no returnn_rc dims description"):
      export.load_dims(self.tmp)

  def test_non_core_op_types(self):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.node.add(name="a", op="Const")
    graph_def.node.add(name="packed", op="FlattenWithSeqLenMask")
    graph_def.node.add(name="b", op="SomeUnknownOp")
    self.assertEqual(
      forward_graph.non_core_op_types(graph_def), {"FlattenWithSeqLenMask": "packed", "SomeUnknownOp": "b"}
    )


class ServingErrorsTest(absltest.TestCase):
  """Wrong dtype / rank at serving time, through both TF loaders and through returnn_rc.forward."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=absltest.TEST_TMPDIR.value)  # class fixture: under absltest's temp dir
    cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
    cls.export_dir = os.path.join(cls.tmp, "sm")
    export.export_saved_model(tiny_graph, checkpoint_path=None, export_dir=cls.export_dir)
    cls.good = {"data": np.zeros([2, 4, 3], np.float32), "data:size1": np.array([4, 2], np.int32)}

  def test_tf1_loader_wrong_rank(self):
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
      meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], self.export_dir)
      sig = meta.signature_def["serving_default"]
      data = graph.get_tensor_by_name(sig.inputs["data"].name)
      sizes = graph.get_tensor_by_name(sig.inputs["data:size1"].name)
      fetch = graph.get_tensor_by_name(sig.outputs["logits"].name)
      with self.assertRaisesRegex(
        ValueError,
        r"Cannot feed value of shape \(2, 4\) for Tensor extern_data/data:0, "
        r"which has shape \(None, None, 3\)",
      ):
        sess.run(fetch, {data: np.zeros([2, 4], np.float32), sizes: self.good["data:size1"]})

  def test_tf2_loader_wrong_rank(self):
    fn = tf.saved_model.load(self.export_dir).signatures["serving_default"]
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError,
      r"Shape of tensor extern_data_data \[2,4\] is not compatible with expected shape "
      r"\[\?,\?,3\]",
    ):
      fn(**{"data": tf.zeros([2, 4]), "data:size1": tf.constant([4, 2])})

  def test_tf2_loader_wrong_dtype(self):
    # TF's own message names the input by position (signature keys sorted: "data" is #0), not by key.
    fn = tf.saved_model.load(self.export_dir).signatures["serving_default"]
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError, r"input #0\(zero-based\) was expected to be a float tensor but is a int32 tensor"
    ):
      fn(**{"data": tf.zeros([2, 4, 3], tf.int32), "data:size1": tf.constant([4, 2])})

  def test_tf2_loader_missing_input(self):
    fn = tf.saved_model.load(self.export_dir).signatures["serving_default"]
    with self.assertRaisesRegex(TypeError, r"missing a required argument: 'data'"):
      fn(**{"data:size1": tf.constant([4, 2])})

  def _serving_fns(self):
    """``feed dict → outputs`` through the TF2 loader and through the TF1 loader + Session.run."""
    fn2 = tf.saved_model.load(self.export_dir).signatures["serving_default"]
    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    self.addCleanup(sess.close)
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], self.export_dir)
    sig = meta.signature_def["serving_default"]
    inputs = {k: graph.get_tensor_by_name(v.name) for k, v in sig.inputs.items()}
    fetches = {k: graph.get_tensor_by_name(v.name) for k, v in sig.outputs.items()}
    return {
      "tf2": lambda feed: fn2(**{k: tf.constant(v) for k, v in feed.items()}),
      "tf1": lambda feed: sess.run(fetches, {inputs[k]: v for k, v in feed.items()}),
    }

  def test_signature_checks_sizes_at_run_time(self):
    cases = [
      ([5, 2], r"size input data:size1 must be <= the padded length of input data at axis 1"),
      ([4, -1], r"size input data:size1 \(dim time\) must be >= 0"),
      ([4, 2, 1], r"size input data:size1 must have one size per sequence of input data \(its batch "),
      ([4], r"size input data:size1 must have one size per sequence of input data"),
    ]
    for loader, fn in self._serving_fns().items():
      out = fn(self.good)  # positive control: good sizes are echoed back
      np.testing.assert_array_equal(np.asarray(out["logits:size1"]), [4, 2], err_msg=loader)
      for sizes, regex in cases:
        with self.subTest(loader=loader, sizes=sizes):
          with self.assertRaisesRegex(tf.errors.InvalidArgumentError, regex):
            fn(dict(self.good, **{"data:size1": np.array(sizes, np.int32)}))
    with self.assertRaisesRegex(
      tf.errors.InvalidArgumentError,
      r"Shape of tensor .* \[1,2\] is not compatible "
      r"with expected shape \[\?\]",
    ):
      self._serving_fns()["tf2"](dict(self.good, **{"data:size1": np.array([[4, 2]], np.int32)}))

  def test_forward_graph_checks_sizes_at_run_time(self):
    fg = forward_graph.build_forward_graph(tiny_graph)
    with forward_graph.make_session(fg, None) as sess:
      self.assertEqual(set(fg.run(sess, self.good)), set(fg.fetches))
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"size input data:size1 must be <= the padded"):
        fg.run(sess, dict(self.good, **{"data:size1": np.array([9, 2], np.int32)}))

  def test_forwarder_checks(self):
    with forward.SavedModelForwarder(self.export_dir) as fwd:
      self.assertEqual(
        set(fwd(self.good)), {"logits", "logits:size1", "labels", "labels:size1", "pooled", "strided", "strided:size1"}
      )
      with self.assertRaisesRegex(ValueError, r"input 'data' must have dtype float32, got int32"):
        fwd(dict(self.good, data=np.zeros([2, 4, 3], np.int32)))
      with self.assertRaisesRegex(ValueError, r"input 'data' must have shape \(None, None, 3\).*got \(2, 4\)"):
        fwd(dict(self.good, data=np.zeros([2, 4], np.float32)))
      with self.assertRaisesRegex(ValueError, r"input 'data:size1' must have dtype int32, got int64"):
        fwd(dict(self.good, **{"data:size1": np.array([4, 2])}))
      with self.assertRaisesRegex(ValueError, r"missing \['data:size1'\], unknown \['classes'\]"):
        fwd({"data": self.good["data"], "classes": np.zeros([2, 4], np.int32)})
      seqs = [{"data": np.zeros([3, 3], np.float64)}]
      with self.assertRaisesRegex(ValueError, r"sequence 0: 'data' must have dtype float32, got float64"):
        forward.forward_sequences(fwd, seqs, batch_size=1)
      with self.assertRaisesRegex(ValueError, r"sequence 0: 'data' axis 2 \('feature'\) must have size 3"):
        forward.forward_sequences(fwd, [{"data": np.zeros([3, 2], np.float32)}], batch_size=1)
      with self.assertRaisesRegex(ValueError, r"batch_size must be an int >= 1, got 0"):
        forward.forward_sequences(fwd, seqs, batch_size=0)
      with self.assertRaisesRegex(ValueError, r"log_every_s must be a finite number of seconds > 0, got 0"):
        forward.forward_sequences(fwd, seqs, batch_size=1, log_every_s=0)

  def test_forwarder_checks_sizes(self):
    cases = [
      (
        [5, 2],
        r"sizes 'data:size1': sequence 0 has size 5, outside \[0, 4\] \(the padded length of 'data' "
        r"at axis 1\)",
      ),
      ([4, -1], r"sizes 'data:size1': sequence 1 has size -1, outside \[0, 4\]"),
      ([4, 2, 1], r"sizes 'data:size1' must have shape \[2\] \(one per sequence of 'data'\), got shape \[3\]"),
    ]
    with forward.SavedModelForwarder(self.export_dir) as fwd:
      for sizes, regex in cases:
        with self.assertRaisesRegex(ValueError, regex):
          fwd(dict(self.good, **{"data:size1": np.array(sizes, np.int32)}))


if __name__ == "__main__":
  absltest.main()
