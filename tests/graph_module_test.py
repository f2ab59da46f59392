"""The graph-module contract (returnn_rc.graph_module): loading from a .py path, names, padded batches,
default data, placeholders per graph."""

import os
import sys

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import graph_module

DATACLASS_MODULE = """
from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

import returnn_rc as rc


@dataclasses.dataclass
class Model:
  w: Optional[tf.Variable] = None
  depth: int = 2


def extern_data_template():
  return rc.TensorDict({"x": rc.Tensor("x", [rc.batch_dim, rc.Dim(3, name="f")], "float32")})


def get_model(*, epoch, step):
  return Model()


def train_step(*, model, extern_data):
  pass


def forward_step(*, model, extern_data):
  pass
"""


class LoadFromPathTest(absltest.TestCase):
  def test_dataclass_with_future_annotations(self):
    """Loaded from a .py path, the module is in sys.modules while it runs: a @dataclass under
    ``from __future__ import annotations`` resolves its string annotations through it."""
    path = os.path.join(self.create_tempdir().full_path, "dc_graph.py")
    with open(path, "w") as f:
      f.write(DATACLASS_MODULE)
    module = graph_module.load_graph_module(path)
    key = graph_module.PATH_MODULE_PREFIX + "dc_graph"
    self.assertIs(sys.modules[key], module)
    self.assertEqual(module.__name__, key)
    model = module.get_model(epoch=1, step=0)
    self.assertEqual(model.depth, 2)
    self.assertEqual(module.Model.__module__, key)
    self.assertEqual(repr(model), "Model(w=None, depth=2)")

  def test_failing_module_is_not_left_in_sys_modules(self):
    path = os.path.join(self.create_tempdir().full_path, "broken_graph.py")
    with open(path, "w") as f:
      f.write("raise RuntimeError('broken on import')\n")
    with self.assertRaisesRegex(RuntimeError, "broken on import"):
      graph_module.load_graph_module(path)
    self.assertNotIn(graph_module.PATH_MODULE_PREFIX + "broken_graph", sys.modules)


class _Module:
  """A minimal graph module object with a given template and data."""

  def __init__(self, template_fn, data=None):
    self.__name__ = "fake"
    self.extern_data_template = template_fn
    if data is not None:
      self.default_data = lambda split, max_seqs=None: list(data)

  def get_model(self, *, epoch, step):
    return None

  def train_step(self, *, model, extern_data):
    pass

  def forward_step(self, *, model, extern_data):
    pass


def _template(name="x", feat=4):
  return rc.TensorDict(
    {name: rc.Tensor(name, [rc.batch_dim, rc.Dim(None, name="t"), rc.Dim(feat, name="f")], "float32")}
  )


class TemplateAndDataTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.parameters("in put", "x:y", "a/b", "1x")
  def test_extern_data_names(self, name):
    with self.assertRaisesRegex(ValueError, f"extern-data input name {name!r} is not a valid signature key"):
      graph_module.extern_data_template(_Module(lambda: _template(name)))

  def test_empty_batch_keeps_static_dims(self):
    template = _template(feat=4)
    batch = graph_module.pad_batch(template, [])
    self.assertEqual(batch["x"].shape, (0, 0, 4))  # was (0, 0, 0): not feedable to [None, None, 4]
    self.assertEqual(batch["x:size1"].shape, (0,))
    with tf.Graph().as_default():
      placeholders = graph_module.make_placeholders(template)
      summed = tf.reduce_sum(template["x"].raw_tensor)
      with self.cached_session() as sess:
        self.assertEqual(sess.run(summed, graph_module.feed_dict(placeholders, batch)), 0.0)

  def test_pad_batch(self):
    seqs = [{"x": np.ones([2, 4], np.float32)}, {"x": np.full([3, 4], 2.0, np.float32)}]
    batch = graph_module.pad_batch(_template(), seqs)
    self.assertEqual(batch["x"].shape, (2, 3, 4))
    np.testing.assert_array_equal(batch["x:size1"], [2, 3])
    np.testing.assert_array_equal(batch["x"][0, 2], np.zeros([4]))

  @parameterized.named_parameters(
    ("missing_input", [{"y": np.ones([2, 4])}], r"sequence 0 lacks input\(s\) \['x'\]"),
    (
      "wrong_rank",
      [{"x": np.ones([2, 4])}, {"x": np.ones([4])}],
      r"input 'x': sequence 1 has rank 1 \(shape \(4,\)\), expected rank 2",
    ),
    (
      "wrong_static_size",
      [{"x": np.ones([2, 5])}],
      r"input 'x': sequence 0 has size 5 at axis 1 \(shape \(2, 5\)\), expected the static size 4",
    ),
  )
  def test_pad_batch_errors(self, seqs, regex):
    with self.assertRaisesRegex(ValueError, regex):
      graph_module.pad_batch(_template(), seqs)

  def test_default_data_max_seqs(self):
    module = _Module(_template, data=[{"x": np.ones([1, 4])}] * 5)
    self.assertLen(graph_module.default_data(module, "train", max_seqs=2), 2)
    with self.assertRaisesRegex(ValueError, "max_seqs must be >= 1"):
      graph_module.default_data(module, "train", max_seqs=-1)  # was: silently all but the last one
    with self.assertRaisesRegex(ValueError, "max_seqs must be >= 1"):
      graph_module.default_data(module, "train", max_seqs=0)
    with self.assertRaisesRegex(TypeError, "max_seqs must be an int or None, got float"):
      graph_module.default_data(module, "train", max_seqs=2.5)
    with self.assertRaisesRegex(TypeError, "split must be a non-empty str"):
      graph_module.default_data(module, None)

  def test_placeholders_per_graph(self):
    """One template (module-level dims) for two graphs: each graph gets its own size placeholders."""
    template = _template()
    time = template["x"].dims[1]
    made = []
    for _ in range(2):
      with tf.Graph().as_default() as graph:
        placeholders = graph_module.make_placeholders(template)
        self.assertIs(placeholders["x:size1"].graph, graph)
        self.assertIs(time.dyn_size, placeholders["x:size1"])
        made.append((graph, placeholders))
    with made[0][0].as_default():
      self.assertIs(time.dyn_size, made[0][1]["x:size1"])  # the first graph keeps its own sizes


if __name__ == "__main__":
  absltest.main()
