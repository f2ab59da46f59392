"""Dropout masks that do not depend on how a batch is split or padded (a hash of the global sequence index)."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc

B, T, F = 5, 8, 6
LENS = np.array([8, 3, 6, 1, 5], np.int32)
STEP = 11


def _mask(rows, pad_to, offset, *, raw=False, axis=None, step=STEP, layout="BTF", seed=None):
  """Dropout mask of sequences ``rows`` (global indices) padded to ``pad_to``, as numpy ``[b,t,f]``."""
  g = tf.Graph()
  with g.as_default():
    if seed is not None:
      rc.nn.set_stateless_dropout_seed(seed)
    lens = LENS[rows]
    with rc.init_train_step_run_ctx(train_flag=True, step=tf.constant(step, tf.int64), global_seq_offset=offset):
      ones = tf.ones([len(rows), pad_to, F])
      if layout == "TBF":
        ones = tf.transpose(ones, [1, 0, 2])
      if raw:
        y = rc.dropout(ones, 0.5, batch_axis=layout.index("B"))
      else:
        time = rc.Dim(tf.constant(lens), name="time")
        feat = rc.Dim(F, name="feat")
        dims = {"B": rc.batch_dim, "T": time, "F": feat}
        x = rc.Tensor("x", [dims[c] for c in layout], "float32", raw_tensor=ones, feature_dim=feat)
        y = rc.dropout(x, 0.5, axis=axis).get_raw()
      if layout == "TBF":
        y = tf.transpose(y, [1, 0, 2])
      types = {op.type for op in g.get_operations()}
    with tf.compat.v1.Session(graph=g) as sess:
      return sess.run(y), types


def _valid(mask, rows):
  return [mask[i, : LENS[r]] for i, r in enumerate(rows)]


class SplitIndependentMaskTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("tensor", False, "BTF"), ("raw", True, "BTF"), ("tensor_time_major", False, "TBF"), ("raw_time_major", True, "TBF")
  )
  def test_same_mask_on_any_split(self, raw, layout):
    whole, types = _mask(np.arange(B), T, 0, raw=raw, layout=layout)
    self.assertNotIn("StatelessRandomUniformV2", types)  # the index hash, not Philox over the padded shape
    parts = [
      _mask(np.arange(0, 2), T + 3, 0, raw=raw, layout=layout)[0],
      _mask(np.arange(2, 3), 6, 2, raw=raw, layout=layout)[0],
      _mask(np.arange(3, B), 5, 3, raw=raw, layout=layout)[0],
    ]
    split = _valid(parts[0], [0, 1]) + _valid(parts[1], [2]) + _valid(parts[2], [3, 4])
    for r, (got, want) in enumerate(zip(split, _valid(whole, range(B)))):
      np.testing.assert_array_equal(got, want, err_msg=f"sequence {r}")
    values = np.concatenate([m.ravel() for m in _valid(whole, range(B))])
    self.assertTrue(set(np.unique(values)) <= {0.0, 2.0})
    self.assertBetween(float(np.mean(values == 0.0)), 0.35, 0.65)  # drop probability 0.5

  def test_control_other_offset_gives_other_masks(self):
    whole, _ = _mask(np.arange(B), T, 0)
    shifted, _ = _mask(np.arange(B), T, 1)
    self.assertGreater(np.mean(whole != shifted), 0.3)
    # ... and the mask of sequence r with offset 1 is that of global sequence r + 1 (same length used):
    np.testing.assert_array_equal(shifted[: B - 1, :1], whole[1:, :1])

  def test_control_other_step_or_seed_gives_other_masks(self):
    whole, _ = _mask(np.arange(B), T, 0)
    self.assertGreater(np.mean(whole != _mask(np.arange(B), T, 0, step=STEP + 1)[0]), 0.3)
    self.assertGreater(np.mean(whole != _mask(np.arange(B), T, 0, seed=5)[0]), 0.3)

  def test_broadcast_axis(self):
    feat_only, _ = _mask(np.arange(B), T, 0, axis=True)  # one mask over the features, shared by all frames
    self.assertTrue(np.all(feat_only == feat_only[:1, :1]))
    other, _ = _mask(np.arange(2, B), T + 2, 2, axis=True)
    np.testing.assert_array_equal(other[:, :1], feat_only[:1, :1].repeat(B - 2, 0))

  def test_masks_differ_between_sequences_and_frames(self):
    whole, _ = _mask(np.arange(B), T, 0)
    self.assertGreater(np.mean(whole[0] != whole[2]), 0.3)
    self.assertGreater(np.mean(whole[0, 0] != whole[0, 1]), 0.0)

  def test_while_loop_iterations_get_their_own_masks(self):
    def loop_masks(rows, pad_to, offset):
      g = tf.Graph()
      with (
        g.as_default(),
        rc.init_train_step_run_ctx(train_flag=True, step=tf.constant(STEP, tf.int64), global_seq_offset=offset),
      ):
        acc = tf.TensorArray(tf.float32, size=3)

        def body(i, acc):
          x = rc.Tensor(
            "x",
            [rc.batch_dim, rc.Dim(None, name="t"), rc.Dim(F, name="f")],
            "float32",
            raw_tensor=tf.ones([len(rows), pad_to, F]),
          )
          x.dims[1].dyn_size = tf.constant(LENS[rows])
          return i + 1, acc.write(i, rc.dropout(x, 0.5).get_raw())

        _, acc = tf.while_loop(lambda i, _: i < 3, body, [0, acc])
        with tf.compat.v1.Session(graph=g) as sess:
          return sess.run(acc.stack())  # [3,b,t,f]

    whole = loop_masks(np.arange(B), T, 0)
    self.assertGreater(np.mean(whole[0] != whole[1]), 0.3)
    part = loop_masks(np.arange(2, B), T + 1, 2)
    for i in range(3):
      for j, r in enumerate(range(2, B)):
        np.testing.assert_array_equal(part[i, j, : LENS[r]], whole[i, r, : LENS[r]])

  def test_python_step_keeps_stateful_masks(self):
    g = tf.Graph()
    with g.as_default(), rc.init_train_step_run_ctx(train_flag=True, step=3):
      x = rc.Tensor("x", [rc.batch_dim, rc.Dim(F, name="f")], "float32", raw_tensor=tf.ones([B, F]))
      rc.dropout(x, 0.5)
      self.assertIn("RandomUniform", {op.type for op in g.get_operations()})

  def test_batch_axis_errors(self):
    with tf.Graph().as_default(), rc.init_train_step_run_ctx(train_flag=True, step=tf.constant(0, tf.int64)):
      x = rc.Tensor("x", [rc.batch_dim, rc.Dim(F, name="f")], "float32", raw_tensor=tf.ones([B, F]))
      with self.assertRaisesRegex(ValueError, "batch_axis is for raw tensors only"):
        rc.dropout(x, 0.5, batch_axis=0)
      with self.assertRaisesRegex(ValueError, "batch_axis 2 out of range for rank 2"):
        rc.dropout(tf.ones([B, F]), 0.5, batch_axis=2)
      with self.assertRaisesRegex(TypeError, "batch_axis must be an int"):
        rc.dropout(tf.ones([B, F]), 0.5, batch_axis=True)

  def test_global_seq_offset_checked(self):
    with self.assertRaisesRegex(ValueError, "global_seq_offset must be >= 0"):
      rc.init_train_step_run_ctx(global_seq_offset=-1)
    with self.assertRaisesRegex(TypeError, "global_seq_offset must be an int"):
      rc.init_train_step_run_ctx(global_seq_offset=1.5)
    rc.reset_run_ctx()


if __name__ == "__main__":
  absltest.main()
