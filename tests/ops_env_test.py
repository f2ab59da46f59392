"""RETURNN_RC_OPS_FALLBACK is a boolean environment variable: off for 0/false/no/off/empty, on for
1/true/yes/on (any case), an error otherwise."""

import os
from unittest import mock

import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc.ops import _loader


def _op_types_of_flatten():
  graph = tf.Graph()
  with graph.as_default():
    rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1, 2]))
  return {op.type for op in graph.get_operations()}


class FallbackEnvTest(parameterized.TestCase):
  @parameterized.parameters("0", "false", "False", "no", "off", "OFF", "", " 0 ")
  def test_off(self, value):
    with mock.patch.dict(os.environ, {_loader.ENV_FALLBACK: value}):
      self.assertFalse(_loader.use_fallback())
      self.assertIn("FlattenWithSeqLenMask", _op_types_of_flatten())  # "false" / "no" was: the fallback

  @parameterized.parameters("1", "true", "TRUE", "yes", "on")
  def test_on(self, value):
    with mock.patch.dict(os.environ, {_loader.ENV_FALLBACK: value}):
      self.assertTrue(_loader.use_fallback())
      self.assertNotIn("FlattenWithSeqLenMask", _op_types_of_flatten())

  def test_unset(self):
    env = {k: v for k, v in os.environ.items() if k != _loader.ENV_FALLBACK}
    with mock.patch.dict(os.environ, env, clear=True):
      self.assertFalse(_loader.use_fallback())

  @parameterized.parameters("2", "maybe", "fallback")
  def test_unrecognised(self, value):
    with mock.patch.dict(os.environ, {_loader.ENV_FALLBACK: value}):
      with self.assertRaisesRegex(ValueError, f"RETURNN_RC_OPS_FALLBACK={value!r} is not a boolean"):
        _op_types_of_flatten()

  def test_scope_wins(self):
    with mock.patch.dict(os.environ, {_loader.ENV_FALLBACK: "false"}), rc.ops.fallback_scope():
      self.assertTrue(_loader.use_fallback())


if __name__ == "__main__":
  absltest.main()
