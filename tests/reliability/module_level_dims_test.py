"""A graph module with module-level dims (RETURNN config style), used by ``extern_data_template`` and by
``train_step`` / ``forward_step`` directly: every graph built from it in one process gets its own sizes
(two forward graphs, two exports, engine training then export). The module is loaded from a ``.py``
path and also holds a ``@dataclass`` under ``from __future__ import annotations``."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import absltest

import returnn_rc as rc
from returnn_rc import engine, export
from returnn_rc.graph_module import load_graph_module

MODULE_SOURCE = """
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

import returnn_rc as rc

time_dim = rc.Dim(None, name="time")
feat_dim = rc.Dim(3, name="feat")
out_dim = rc.Dim(2, name="out")


@dataclasses.dataclass
class Model:
  w: tf.Variable
  scale: float = 1.0


def extern_data_template():
  return rc.TensorDict({"x": rc.Tensor("x", [rc.batch_dim, time_dim, feat_dim], "float32", feature_dim=feat_dim)})


def get_model(*, epoch, step):
  del epoch, step
  w = tf.compat.v1.get_variable("w", initializer=tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2) / 10))
  return Model(w=w)


def _logits(model, extern_data):
  y = tf.einsum("btf,fo->bto", extern_data["x"].get_raw(), model.w) * model.scale
  return rc.Tensor("logits", [rc.batch_dim, time_dim, out_dim], "float32", raw_tensor=y, feature_dim=out_dim)


def train_step(*, model, extern_data):
  frame_loss = tf.reduce_sum(tf.square(_logits(model, extern_data).raw_tensor - 1.0), axis=-1)  # [B,T]
  rc.get_run_ctx().mark_as_loss(frame_loss, "mse", dims=[rc.batch_dim, time_dim])


def forward_step(*, model, extern_data):
  logits = _logits(model, extern_data)
  lens = time_dim.get_dyn_size()  # the module-level dim, read directly
  rc.get_run_ctx().mark_as_output(logits, "output")
  rc.get_run_ctx().mark_as_output(
      rc.Tensor("lens", [rc.batch_dim], "int32", raw_tensor=tf.cast(lens, tf.int32)), "lens")


def default_data(split, max_seqs=None):
  rng = np.random.RandomState(0 if split == "train" else 1)
  return [{"x": rng.normal(size=[n, 3]).astype(np.float32)} for n in (2, 3, 1, 4)]
"""

X = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
LENS = np.array([3, 1], np.int32)
W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10


def _want():
  return np.einsum("btf,fo->bto", X, W)


class ModuleLevelDimsTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()
    self.tmp = self.create_tempdir().full_path
    path = os.path.join(self.tmp, "module_dims_graph.py")
    with open(path, "w") as f:
      f.write(MODULE_SOURCE)
    self.module = load_graph_module(path)

  def _forward(self, fg):
    with tf.compat.v1.Session(graph=fg.graph) as sess:
      export.forward_graph.initialize_variables(sess, fg)
      return fg.run(sess, {"x": X, "x:size1": LENS})

  def test_two_forward_graphs(self):
    graphs = [export.build_forward_graph(self.module) for _ in range(2)]
    for fg in graphs:
      for key, tensor in fg.inputs.items():
        self.assertIs(tensor.graph, fg.graph, msg=key)
      for key, tensor in fg.fetches.items():
        self.assertIs(tensor.graph, fg.graph, msg=key)
      out = self._forward(fg)
      np.testing.assert_allclose(out["output"], _want(), rtol=1e-6)
      np.testing.assert_array_equal(out["lens"], LENS)
      np.testing.assert_array_equal(out["output:size1"], LENS)
    # the module-level dim outside any graph context: the sizes of the graph built last
    self.assertIs(self.module.time_dim.dyn_size.graph, graphs[1].graph)

  def _serve(self, export_dir):
    fn = tf.saved_model.load(export_dir).signatures[export.SIGNATURE_KEY]
    return {k: v.numpy() for k, v in fn(**{"x": tf.constant(X), "x:size1": tf.constant(LENS)}).items()}

  def test_two_exports(self):
    for i in range(2):
      export_dir = os.path.join(self.tmp, f"export{i}")
      export.export_saved_model(self.module, checkpoint_path=None, export_dir=export_dir)  # was: "... does not exist"
      out = self._serve(export_dir)
      np.testing.assert_allclose(out["output"], _want(), rtol=1e-6)
      np.testing.assert_array_equal(out["lens"], LENS)

  def test_engine_train_then_export(self):
    config = engine.EngineConfig(train_dir=os.path.join(self.tmp, "train"), num_epochs=1, batch_size=2)
    with engine.Engine(self.module, config) as eng:
      eng.train()
      figures = eng.evaluate("dev")
    self.assertTrue(np.isfinite(figures["mse"]))
    export_dir = os.path.join(self.tmp, "export")
    export.export_saved_model(self.module, checkpoint_path=config.train_dir, export_dir=export_dir)
    out = self._serve(export_dir)
    np.testing.assert_array_equal(out["output:size1"], LENS)
    self.assertFalse(np.allclose(out["output"], _want()))  # trained weights, not the initial ones


if __name__ == "__main__":
  absltest.main()
