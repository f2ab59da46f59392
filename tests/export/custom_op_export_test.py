"""A forward graph using the custom op FlattenWithSeqLenMask exports with its pure-TF fallback."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest
from tensorflow.core.protobuf import saved_model_pb2

import returnn_rc as rc
from returnn_rc import export, ops
from returnn_rc.export import forward_graph
from returnn_rc.export import forwarding as forward
from tests.export import export_test_util as util
from tests.export import tiny_graph


def _forward_step(*, model, extern_data):
  """``seq_sum`` ``[B,V]``: logits summed over the valid frames, through the packing op."""
  data = extern_data["data"]
  time = data.dims[1]
  logits = tf.einsum("btf,fv->btv", data.get_raw(), model.w) + model.b  # [B,T,V]
  packed = rc.ops.flatten_with_seq_len_mask(logits, time.get_dyn_size(), batch_dim_axis=0, time_dim_axis=1)
  segments = tf.repeat(tf.range(tf.size(time.get_dyn_size())), time.get_dyn_size())  # [sum(T)]
  seq_sum = tf.math.unsorted_segment_sum(packed, segments, tf.size(time.get_dyn_size()))  # [B,V]
  vocab = extern_data["classes"].sparse_dim
  rc.get_run_ctx().mark_as_output(rc.Tensor("seq_sum", [rc.batch_dim, vocab], "float32", raw_tensor=seq_sum), "seq_sum")


class CustomOpExportTest(absltest.TestCase):
  def test_exports_with_fallback(self):
    tmp = self.create_tempdir().full_path
    module = util.variant(forward_step=_forward_step, model_outputs_template=None)
    export_dir = os.path.join(tmp, "sm")
    export.export_saved_model(module, checkpoint_path=None, export_dir=export_dir)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
    graph_def = proto.meta_graphs[0].graph_def
    op_types = {n.op for n in graph_def.node} | {n.op for fn in graph_def.library.function for n in fn.node_def}
    self.assertNotIn("FlattenWithSeqLenMask", op_types)
    self.assertNotIn("UnflattenWithSeqLenMask", op_types)
    self.assertEqual(forward_graph.non_core_op_types(graph_def), {})
    self.assertFalse(ops.use_fallback())  # the switch is scoped to the export build

    seqs = tiny_graph.default_data("dev")
    with forward.SavedModelForwarder(export_dir) as fwd:
      got = forward.forward_sequences(fwd, seqs, batch_size=2)
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    w, b = reader.get_tensor("tiny/w"), reader.get_tensor("tiny/b")
    for g, s in zip(got, seqs):
      np.testing.assert_allclose(g["seq_sum"], (s["data"] @ w + b).sum(axis=0), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
