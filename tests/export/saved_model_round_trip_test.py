"""Round trip of every graph (tests/export/tiny_graph.py and each module of graphs/): export to a
SavedModel, serve it in a fresh process with only TensorFlow, compare bit for bit with in-session
forwarding of the graph module + checkpoint."""

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized
from tensorflow.core.protobuf import saved_model_pb2

from returnn_rc import export
from returnn_rc.export import forward_graph
from returnn_rc.export import forwarding as forward
from tests.export import export_test_util as util
from tests.export import tiny_graph

_MODULES = util.graph_module_names()


def _key_params():
  return [(name.replace(".", "_"), name) for name in _MODULES]


class RoundTripTest(parameterized.TestCase):
  """Per graph module: export, in-session forward, and (all at once) the plain-TF server subprocess."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=absltest.TEST_TMPDIR.value)  # class fixture: under absltest's temp dir
    cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
    cls.cases = {}
    jobs = []
    for i, name in enumerate(_MODULES):
      case = {"name": name}
      cls.cases[name] = case
      try:
        module = util.import_module(name)
        base = os.path.join(cls.tmp, f"m{i}")
        os.makedirs(os.path.join(base, "ckpt"))
        case["ckpt"] = util.make_checkpoint(module, os.path.join(base, "ckpt"))
        case["export_dir"] = os.path.join(base, "saved_model")
        case["desc"] = export.export_saved_model(
          module, checkpoint_path=os.path.join(base, "ckpt"), export_dir=case["export_dir"]
        )
        seqs = module.default_data("dev")[: util.NUM_SEQS]
        case["seqs"] = seqs
        with forward.GraphModuleForwarder(module, case["ckpt"]) as fwd:
          inputs_desc = fwd.description["inputs"]
          case["feeds"] = [
            forward.feed_from_padded(forward.pad_sequences(seqs[b : b + util.BATCH_SIZE], inputs_desc), inputs_desc)
            for b in range(0, len(seqs), util.BATCH_SIZE)
          ]
          case["in_session"] = [fwd(feed) for feed in case["feeds"]]
          case["per_seq"] = forward.forward_sequences(fwd, seqs, batch_size=util.BATCH_SIZE)
        feeds_path = os.path.join(base, "feeds.npz")
        np.savez(feeds_path, **{f"{b}/{k}": v for b, feed in enumerate(case["feeds"]) for k, v in feed.items()})
        case["served_path"] = os.path.join(base, "served.npz")
        jobs.append({"export_dir": case["export_dir"], "feeds": feeds_path, "out": case["served_path"]})
      except Exception as exc:  # pylint: disable=broad-except
        case["error"] = exc
    jobs_path = os.path.join(cls.tmp, "jobs.json")
    with open(jobs_path, "w", encoding="utf-8") as f:
      json.dump(jobs, f)
    # A fresh process with only TensorFlow: no PYTHONPATH to this repo.
    cls.server_rc, cls.server_log = util.run_python(
      [os.path.join(util.HERE, "serve_plain_tf.py"), jobs_path], env={"PYTHONPATH": ""}, timeout=300
    )

  def _case(self, name):
    case = self.cases[name]
    if "error" in case:
      raise case["error"]
    return case

  def _served(self, name):
    case = self._case(name)
    self.assertEqual(self.server_rc, 0, msg=self.server_log[-3000:])
    with np.load(case["served_path"]) as data:
      return {k: data[k] for k in data.files}

  def test_graphs_found(self):
    self.assertIn("tiny_graph", _MODULES)
    self.assertGreaterEqual(len(_MODULES), 1)

  @parameterized.named_parameters(*_key_params())
  def test_served_without_returnn_rc(self, name):
    served = self._served(name)
    self.assertFalse(bool(served["returnn_rc_imported"]))

  @parameterized.named_parameters(*_key_params())
  def test_both_loaders_bit_exact(self, name):
    case = self._case(name)
    served = self._served(name)
    for loader in ("tf1", "tf2"):
      for b, expected in enumerate(case["in_session"]):
        got_keys = {k.split("/", 2)[2] for k in served if k.startswith(f"{loader}/{b}/")}
        self.assertEqual(got_keys, set(expected), msg=f"{loader} batch {b}")
        for key, value in expected.items():
          got = served[f"{loader}/{b}/{key}"]
          self.assertEqual(got.dtype, value.dtype, msg=f"{loader} batch {b} {key}")
          np.testing.assert_array_equal(got, value, err_msg=f"{name}: {loader} batch {b} {key!r}")

  @parameterized.named_parameters(*_key_params())
  def test_train_flag_cannot_be_flipped(self, name):
    case = self._case(name)
    served = self._served(name)
    flipped = {k: v for k, v in served.items() if k.startswith("tf1_train_flag/")}
    self.assertTrue(flipped, msg="the graph state's train flag placeholder should still be in the graph")
    for b, expected in enumerate(case["in_session"]):
      for key, value in expected.items():
        np.testing.assert_array_equal(served[f"tf1_train_flag/{b}/{key}"], value, err_msg=f"{name} {key}")

  @parameterized.named_parameters(*_key_params())
  def test_outputs_depend_only_on_signature_inputs(self, name):
    case = self._case(name)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
      meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], case["export_dir"])
      sig = meta.signature_def["serving_default"]
      inputs = {graph.get_tensor_by_name(v.name).op for v in sig.inputs.values()}
      fetches = [graph.get_tensor_by_name(v.name) for v in sig.outputs.values()]
      placeholders = {op for op in forward_graph.upstream_ops(fetches) if op.type.startswith("Placeholder")}
    self.assertTrue(placeholders)
    self.assertEqual(placeholders, inputs)
    self.assertNotIn("returnn_rc_state/train_flag", {op.name for op in placeholders})

  @parameterized.named_parameters(*_key_params())
  def test_saved_graph_has_only_core_ops(self, name):
    case = self._case(name)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(case["export_dir"], "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    graph_def = proto.meta_graphs[0].graph_def
    op_types = {n.op for n in graph_def.node}
    op_types |= {n.op for fn in graph_def.library.function for n in fn.node_def}
    self.assertNotIn("FlattenWithSeqLenMask", op_types)
    self.assertNotIn("UnflattenWithSeqLenMask", op_types)
    self.assertEqual(forward_graph.non_core_op_types(graph_def), {})

  @parameterized.named_parameters(*_key_params())
  def test_signature_and_dims(self, name):
    case = self._case(name)
    desc = export.load_dims(case["export_dir"])
    self.assertEqual(desc, json.loads(json.dumps(case["desc"])))
    self.assertEqual((desc["epoch"], desc["step"]), (util.CKPT_EPOCH, util.CKPT_STEP))
    out_keys = set()
    for out_name, t in desc["outputs"].items():
      out_keys.add(out_name)
      out_keys.update(export.size_key(out_name, a) for a in t["dynamic_axes"])
    self.assertEqual(out_keys, set(case["in_session"][0]))
    views = export.tensors_from_outputs(case["export_dir"], case["in_session"][0])
    for out_name, t in desc["outputs"].items():
      view = views[out_name]
      self.assertEqual(view.dtype, t["dtype"])
      self.assertEqual([d.name for d in view.dims], [d["name"] for d in t["dims"]])
      np.testing.assert_array_equal(view.raw_tensor.numpy(), case["in_session"][0][out_name])
      for axis in t["dynamic_axes"]:
        np.testing.assert_array_equal(
          view.dims[axis].dyn_size.numpy(), case["in_session"][0][export.size_key(out_name, axis)]
        )

  @parameterized.named_parameters(*_key_params())
  def test_forward_saved_model_equals_graph_module(self, name):
    case = self._case(name)
    with forward.SavedModelForwarder(case["export_dir"]) as fwd:
      per_seq = forward.forward_sequences(fwd, case["seqs"], batch_size=util.BATCH_SIZE)
    self.assertLen(per_seq, len(case["seqs"]))
    for i, (got, expected) in enumerate(zip(per_seq, case["per_seq"])):
      self.assertEqual(set(got), set(expected))
      for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name} seq {i} {key}")


class TinyGraphDetailsTest(absltest.TestCase):
  """What only the tiny graph shows: pruned inputs, shared and derived dims."""

  def test_description(self):
    tmp = self.create_tempdir().full_path
    desc = export.export_saved_model(tiny_graph, checkpoint_path=None, export_dir=os.path.join(tmp, "sm"))
    self.assertEqual(list(desc["inputs"]), ["data"])  # "classes" is not used by forward_step
    data = desc["inputs"]["data"]
    self.assertEqual([d["kind"] for d in data["dims"]], ["batch", "dynamic", "static"])
    self.assertEqual(data["dims"][1]["size_key"], "data:size1")
    self.assertEqual(data["feature_axis"], 2)
    outs = desc["outputs"]
    self.assertEqual(outs["labels"]["sparse_dim"]["size"], tiny_graph.VOCAB)
    self.assertEqual(outs["logits"]["dims"][1]["dim_id"], data["dims"][1]["dim_id"])  # same time dim
    self.assertNotEqual(outs["strided"]["dims"][1]["dim_id"], data["dims"][1]["dim_id"])
    self.assertEqual(outs["strided"]["dims"][1]["size_key"], "strided:size1")
    self.assertEqual(outs["pooled"]["dynamic_axes"], [])
    self.assertEqual((desc["epoch"], desc["step"], desc["checkpoint"]), (1, 0, None))


if __name__ == "__main__":
  absltest.main()
