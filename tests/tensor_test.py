"""Tests of Dim / Tensor / TensorDict / convert_to_tensor."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc


class DimTest(tf.test.TestCase, parameterized.TestCase):
  def test_static(self):
    d = rc.Dim(5, name="f")
    self.assertTrue(d.is_static())
    self.assertFalse(d.is_dynamic())
    self.assertEqual(d.dimension, 5)
    with self.assertRaisesRegex(ValueError, "static"):
      d.dyn_size = tf.constant([1, 2])

  def test_dynamic_set_later(self):
    with tf.Graph().as_default():
      d = rc.Dim(None, name="time")
      self.assertTrue(d.is_dynamic())
      self.assertIsNone(d.dyn_size)
      with self.assertRaisesRegex(ValueError, "'time' has no sizes"):
        d.get_dyn_size()
      sizes = tf.constant([3, 1], tf.int32)
      d.dyn_size = sizes
      self.assertIs(d.dyn_size, sizes)
      self.assertEqual(d.dyn_size_ext.dims, (rc.batch_dim,))

  @parameterized.parameters(tf.int32, tf.int64)
  def test_dynamic_from_sizes(self, dtype):
    with tf.Graph().as_default():
      sizes = tf.constant([3, 1], dtype)
      d = rc.Dim(sizes, name="time")
      self.assertTrue(d.is_dynamic())
      self.assertIs(d.dyn_size, sizes)
      d2 = rc.Dim(rc.Tensor("s", [rc.batch_dim], dtype, raw_tensor=sizes), name="t2")
      self.assertIs(d2.dyn_size, sizes)

  def test_dyn_size_ext_checks_dims(self):
    with tf.Graph().as_default():
      other = rc.Dim(None, name="other")
      bad = rc.Tensor("s", [other], "int32", raw_tensor=tf.constant([1]))
      with self.assertRaisesRegex(ValueError, r"dims \[batch_dim\]"):
        rc.Dim(None, name="time").dyn_size_ext = bad

  def test_bad_sizes(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(TypeError, "int32 or int64, got float32"):
        rc.Dim(tf.constant([1.0]), name="t")
      with self.assertRaisesRegex(ValueError, r"shape \[B\]"):
        rc.Dim(tf.constant([[1]]), name="t")
    with self.assertRaisesRegex(ValueError, ">= 0"):
      rc.Dim(-1, name="t")
    with self.assertRaisesRegex(TypeError, "got str"):
      rc.Dim("3", name="t")

  def test_batch_dim(self):
    self.assertTrue(rc.batch_dim.is_batch_dim)
    self.assertFalse(rc.batch_dim.is_dynamic())
    self.assertFalse(rc.batch_dim.is_static())
    with self.assertRaisesRegex(ValueError, "batch dim has no per-sequence sizes"):
      rc.batch_dim.dyn_size = tf.constant([1])


class TensorTest(tf.test.TestCase, parameterized.TestCase):
  def test_dims_count_mismatch(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, r"dims mismatch: 2 dims .* rank 3"):
        rc.Tensor("x", [rc.batch_dim, rc.Dim(3, name="f")], "float32", raw_tensor=tf.zeros([2, 4, 3]))

  def test_static_size_mismatch(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, r"dims mismatch at axis 1: Dim\('f', 4\)"):
        rc.Tensor("x", [rc.batch_dim, rc.Dim(4, name="f")], "float32", raw_tensor=tf.zeros([2, 3]))

  def test_dtype_mismatch(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(TypeError, "dtype int32 != declared dtype float32"):
        rc.Tensor("x", [rc.batch_dim], "float32", raw_tensor=tf.zeros([2], tf.int32))

  def test_duplicate_dim(self):
    f = rc.Dim(3, name="f")
    with self.assertRaisesRegex(ValueError, "appears twice"):
      rc.Tensor("x", [f, f], "float32")

  def test_convert_needs_dims(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "needs dims"):
        rc.convert_to_tensor(tf.zeros([2, 3]))
      scalar = rc.convert_to_tensor(3.0)
      self.assertEqual(scalar.dims, ())

  def test_copy_transpose(self):
    with tf.Graph().as_default():
      f = rc.Dim(3, name="f")
      t = rc.Dim(None, name="t")
      x = rc.convert_to_tensor(np.arange(24, dtype=np.float32).reshape(2, 4, 3), dims=[rc.batch_dim, t, f])
      y = x.copy_transpose([f, rc.batch_dim, t])
      self.assertEqual(y.dims, (f, rc.batch_dim, t))
      with self.assertRaisesRegex(ValueError, "dims mismatch"):
        x.copy_transpose([f, t])
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(y.raw_tensor), np.transpose(np.arange(24).reshape(2, 4, 3), [2, 0, 1]))

  @parameterized.parameters(("BTF", [0, 1, 2]), ("TBF", [1, 0, 2]), ("FTB", [2, 1, 0]), ("BT", [0, 1]), ("TB", [1, 0]))
  def test_sequence_mask_broadcast(self, order, perm):
    with tf.Graph().as_default():
      t = rc.Dim(tf.constant([2, 4, 0]), name="t")
      f = rc.Dim(2, name="f")
      dims_btf = [rc.batch_dim, t, f][: len(perm)]
      shape_btf = [3, 4, 2][: len(perm)]
      letters = "BTF"
      dims = [dims_btf[letters.index(c)] for c in order]
      shape = [shape_btf[letters.index(c)] for c in order]
      x = rc.Tensor("x", dims, "float32", raw_tensor=tf.zeros(shape))
      mask = x.get_sequence_mask_broadcast(t)
      lens = np.array([2, 4, 0])
      ref = np.arange(4)[None, :] < lens[:, None]  # [B,T]
      ref_full = np.broadcast_to(ref.reshape(3, 4, *([1] if len(perm) == 3 else [])), shape_btf)
      ref_full = np.transpose(ref_full, [letters.index(c) for c in order])
      with self.cached_session() as sess:
        self.assertAllEqual(np.broadcast_to(sess.run(mask), shape), ref_full)


class TensorDictTest(absltest.TestCase):
  def test_items_and_errors(self):
    x = rc.Tensor("x", [rc.batch_dim], "float32")
    d = rc.TensorDict({"x": x})
    self.assertIn("x", d)
    self.assertIs(d["x"], x)
    self.assertEqual(list(d), ["x"])
    with self.assertRaisesRegex(KeyError, "'y' is not in TensorDict with keys \\['x'\\]"):
      d["y"]  # pylint: disable=pointless-statement
    with self.assertRaisesRegex(TypeError, "must be an rc.Tensor"):
      d["z"] = 3

  def test_as_raw_tensor_dict(self):
    with tf.Graph().as_default():
      t = rc.Dim(tf.constant([1, 2]), name="t")
      x = rc.Tensor("x", [rc.batch_dim, t], "float32", raw_tensor=tf.zeros([2, 2]))
      raw = rc.TensorDict({"x": x}).as_raw_tensor_dict()
      self.assertEqual(sorted(raw), ["x", "x:size1"])
      self.assertIs(raw["x:size1"], t.dyn_size)


class DimSizesPerGraphTest(tf.test.TestCase):
  """A Dim keeps its sizes per tf.Graph (e.g. a module-level dim used by several graphs)."""

  def test_each_graph_its_own_sizes(self):
    time = rc.Dim(None, name="time")
    g1, g2 = tf.Graph(), tf.Graph()
    with g1.as_default():
      s1 = tf.constant([1, 2])
      time.dyn_size = s1
    with g2.as_default():
      self.assertIsNone(time.dyn_size)  # was: the sizes of g1 (a tensor of another graph)
      with self.assertRaisesRegex(ValueError, "'time' has no sizes in this graph"):
        time.get_dyn_size()
      s2 = tf.constant([3])
      time.dyn_size = s2
      self.assertIs(time.dyn_size, s2)
    with g1.as_default():
      self.assertIs(time.dyn_size, s1)
      self.assertEqual(time.dyn_size_ext.dims, (rc.batch_dim,))
    self.assertIs(time.dyn_size, s2)  # outside any graph context: the sizes set last

  def test_loop_body_sees_outer_sizes(self):
    time = rc.Dim(None, name="time")
    with tf.Graph().as_default():
      sizes = tf.constant([2, 3])
      time.dyn_size = sizes
      seen = []

      def body(i):
        seen.append(time.dyn_size)
        return i + tf.reduce_sum(time.get_dyn_size())

      out = tf.while_loop(lambda i: i < 10, body, [tf.constant(0)])
      with self.cached_session() as sess:
        self.assertEqual(sess.run(out), [10])
    self.assertIs(seen[0], sizes)

  def test_tensor_uses_the_sizes_of_its_own_graph(self):
    time = rc.Dim(None, name="time")
    tensors = []
    for lens in ([1, 2], [2, 0, 1]):
      with tf.Graph().as_default():
        time.dyn_size = tf.constant(lens)
        tensors.append(rc.Tensor("x", [rc.batch_dim, time], "float32", raw_tensor=tf.zeros([len(lens), 2])))
    raw = rc.TensorDict({"x": tensors[0]}).as_raw_tensor_dict()  # outside any graph context
    self.assertIs(raw["x:size1"].graph, tensors[0].raw_tensor.graph)

  def test_clear_and_eager_sizes(self):
    time = rc.Dim(None, name="time")
    eager = tf.constant([4, 5])
    time.dyn_size = eager  # in no graph: seen from every graph without sizes of its own
    with tf.Graph().as_default():
      self.assertIs(time.dyn_size, eager)
      own = tf.constant([1])
      time.dyn_size = own
      self.assertIs(time.dyn_size, own)
      time.dyn_size = None
      self.assertIs(time.dyn_size, eager)
    self.assertIs(time.dyn_size, eager)

  def test_no_graph_kept_alive(self):
    import gc  # pylint: disable=import-outside-toplevel
    import weakref  # pylint: disable=import-outside-toplevel

    time = rc.Dim(None, name="time")
    graph = tf.Graph()
    with graph.as_default():
      time.dyn_size = tf.constant([1, 2])
    ref = weakref.ref(graph)
    del graph
    gc.collect()
    self.assertIsNone(ref())  # a module-level dim does not keep every graph alive
    self.assertIsNone(time.dyn_size)


class TensorNameTest(absltest.TestCase):
  def test_bad_name_and_dims(self):
    with self.assertRaisesRegex(TypeError, "Tensor name must be a non-empty str, got NoneType"):
      rc.Tensor(None, [rc.batch_dim], "float32")
    with self.assertRaisesRegex(TypeError, "dims must be a list or tuple of rc.Dim, got Dim"):
      rc.Tensor("x", rc.batch_dim, "float32")


if __name__ == "__main__":
  absltest.main()
