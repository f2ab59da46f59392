"""returnn_rc.checkpoint_compat: the one "is this checkpoint of this model" check (engine and export)."""

import os

import tensorflow as tf
from absl.testing import absltest

from returnn_rc import checkpoint_compat


def _save(test, make_variables):
  """Saves the variables ``make_variables()`` creates; returns (prefix, their specs)."""
  with tf.Graph().as_default():
    variables = make_variables()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      path = tf.compat.v1.train.Saver().save(
        sess, os.path.join(test.create_tempdir().full_path, "m"), write_meta_graph=False
      )
    return path, checkpoint_compat.variable_specs(variables)


class MismatchesTest(absltest.TestCase):
  def test_same_model(self):
    path, specs = _save(self, lambda: [tf.compat.v1.get_variable("w", [3, 5]), tf.compat.v1.get_variable("b", [5])])
    self.assertEqual(specs, {"w": ([3, 5], "float32"), "b": ([5], "float32")})
    reader = checkpoint_compat.check_checkpoint(path, specs, what="the model")
    self.assertEqual(checkpoint_compat.reader_specs(reader), specs)

  def test_each_kind_of_difference_is_named(self):
    path, _ = _save(
      self,
      lambda: [
        tf.compat.v1.get_variable("w", [4, 5]),
        tf.compat.v1.get_variable("x", [2]),
        tf.compat.v1.get_variable("n", [], dtype=tf.float64),
      ],
    )
    expected = {"w": ([3, 5], "float32"), "b": ([5], "float32"), "n": ([], "float32")}
    stored = checkpoint_compat.reader_specs(checkpoint_compat.open_reader(path))
    self.assertEqual(
      checkpoint_compat.mismatches(stored, expected),
      [
        "missing variable 'b' (shape [5])",
        "unexpected variable 'x' (shape [2])",
        "variable 'n' has dtype float64 in the checkpoint, the graph expects float32",
        "variable 'w' has shape [4, 5] in the checkpoint, the graph expects [3, 5]",
      ],
    )
    self.assertEqual(
      checkpoint_compat.mismatches(stored, expected, optional=["b"], allow_unexpected=True),
      [
        "variable 'n' has dtype float64 in the checkpoint, the graph expects float32",
        "variable 'w' has shape [4, 5] in the checkpoint, the graph expects [3, 5]",
      ],
    )
    with self.assertRaisesRegex(ValueError, r"checkpoint '.*m' does not match the model: missing variable 'b'"):
      checkpoint_compat.check_checkpoint(path, expected, what="the model")

  def test_long_lists_are_capped(self):
    expected = {f"v{i}": ([1], "float32") for i in range(8)}
    problems = checkpoint_compat.mismatches({}, expected)
    self.assertLen(problems, checkpoint_compat.MAX_LISTED + 1)
    self.assertEqual(problems[-1], "... and 3 more missing variables")

  def test_describe_error_is_one_line(self):
    path, _ = _save(self, lambda: [tf.compat.v1.get_variable("w", [3])])
    with open(path + ".index", "r+b") as f:
      f.truncate(10)
    with self.assertRaises(tf.errors.OpError) as cm:
      checkpoint_compat.open_reader(path)
    text = checkpoint_compat.describe_error(cm.exception)
    self.assertNotIn("\n", text)
    self.assertRegex(text, r"^\w*Error: .*sstable")


if __name__ == "__main__":
  absltest.main()
