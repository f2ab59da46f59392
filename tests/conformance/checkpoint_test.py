"""Checkpoints: save -> restore in a fresh graph gives identical weights, figures, outputs and the
same next train step; the engine resumes with the step and epoch of its checkpoint."""

import os

import numpy as np
from absl.testing import absltest, parameterized

from returnn_rc import engine
from tests.conformance import goldens

_STEPS, _EPOCH = 2, 3


class CheckpointTest(parameterized.TestCase):
  @parameterized.named_parameters(*goldens.named_parameters())
  def test_restore_in_fresh_graph(self, name):
    built = goldens.cached_build(name)
    batch = built.pad(goldens.data(name))
    sess = built.session(self)
    for _ in range(_STEPS):
      sess.run(built.train_op, built.feed(batch, train=True))
    built.gs.set_epoch(sess, _EPOCH)
    with built.graph.as_default():  # the v1 Saver checks for graph mode
      path = built.saver.save(sess, os.path.join(self.create_tempdir().full_path, "model"), write_meta_graph=False)

    fresh = goldens.build(name)  # a new graph, not the cached one
    sess_2 = fresh.session(self)
    with fresh.graph.as_default():
      fresh.saver.restore(sess_2, path)
    self.assertEqual(fresh.gs.get_step(sess_2), _STEPS)
    self.assertEqual(fresh.gs.get_epoch(sess_2), _EPOCH)
    want_w, got_w = built.get_weights(sess), fresh.get_weights(sess_2)
    self.assertEqual(set(want_w), set(got_w))
    for var in want_w:
      np.testing.assert_array_equal(got_w[var], want_w[var], err_msg=var)

    def figures(b, s, train):
      return s.run({"report": b.report, "outputs": b.outputs, "grads": b.grads}, b.feed(batch, train=train))

    for train in (False, True):  # train=True: the same dropout masks (stateless, same step)
      _assert_equal(figures(fresh, sess_2, train), figures(built, sess, train), f"{name} train={train}")
    sess.run(built.train_op, built.feed(batch, train=True))
    sess_2.run(fresh.train_op, fresh.feed(batch, train=True))
    want_w, got_w = built.trainable_weights(sess), fresh.trainable_weights(sess_2)
    for var in want_w:
      np.testing.assert_array_equal(got_w[var], want_w[var], err_msg=f"{var} after one more step")

  @parameterized.named_parameters(*goldens.named_parameters())
  def test_engine_resume_keeps_step_and_epoch(self, name):
    mod = goldens.module(name)
    train_data = list(goldens.data(name, "train"))
    dev_data = list(goldens.data(name, "dev", 2))
    train_dir = self.create_tempdir().full_path
    config = engine.EngineConfig(
      train_dir=train_dir, num_epochs=2, batch_size=2, log_every_secs=1e9, keep_checkpoints=1
    )
    with engine.Engine(mod, config, train_data=train_data, dev_data=dev_data) as eng:
      (first,) = eng.train(num_epochs=1)
      step_1 = eng.step
      dev_1 = eng.evaluate("dev")
      self.assertGreater(step_1, 0)
    with engine.Engine(mod, config, train_data=train_data, dev_data=dev_data) as eng:
      self.assertEqual(eng.completed_epoch, 1)
      self.assertEqual(eng.step, step_1)
      self.assertEqual(eng.graph_state.get_epoch(eng.session), 1)
      self.assertEqual(eng.evaluate("dev"), dev_1)
      self.assertEqual(first.dev, dev_1)
      history = eng.train()
      self.assertEqual([r.epoch for r in history], [1, 2])
      self.assertEqual(eng.step, 2 * step_1)
      self.assertEqual(eng.graph_state.get_epoch(eng.session), 2)


def _assert_equal(got, want, what):
  for key in want["report"]:
    np.testing.assert_array_equal(got["report"][key], want["report"][key], err_msg=f"{what}: loss {key}")
  for key in want["outputs"]:
    np.testing.assert_array_equal(got["outputs"][key], want["outputs"][key], err_msg=f"{what}: output {key}")
  for key in want["grads"]:
    np.testing.assert_array_equal(got["grads"][key], want["grads"][key], err_msg=f"{what}: grad {key}")


if __name__ == "__main__":
  absltest.main()
