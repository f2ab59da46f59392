"""tools/tool_errors.py: an error of returnn_rc's own checks ends a tool with its message, any other keeps its
traceback."""

import os
import sys

import tensorflow as tf
from absl.testing import absltest

import returnn_rc as rc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
import tool_errors  # noqa: E402


class ToolErrorsTest(absltest.TestCase):
  def test_package_check_becomes_the_message(self):
    with self.assertRaises(SystemExit) as ctx:
      with tool_errors.input_errors():
        rc.dropout(tf.zeros([2]), 1.0)
    self.assertEqual(str(ctx.exception.code), "error: dropout: drop_prob must be in [0, 1), got 1.0")

  def test_error_of_other_code_keeps_its_traceback(self):  # control: the same kind of error, raised here
    with self.assertRaisesRegex(ValueError, "a bug in a graph module"):
      with tool_errors.input_errors():
        raise ValueError("a bug in a graph module")

  def test_other_errors_pass(self):
    with self.assertRaises(KeyError):
      with tool_errors.input_errors():
        {}["x"]  # noqa: B018


if __name__ == "__main__":
  absltest.main()
