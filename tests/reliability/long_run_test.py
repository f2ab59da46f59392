"""Long runs: many epochs of a tiny model through the engine (train, dev evaluation, checkpoint each
epoch) and many train/eval switches in one session. The graph is finalized and its op count stays
constant after the first step; the process's resident memory after warm-up grows by less than
:data:`RSS_SLACK_MB` to the end."""

import tensorflow as tf
from absl.testing import absltest

from graphs import seq_classifier, two_losses
from returnn_rc import engine
from tests.conformance import goldens

RSS_SLACK_MB = 50
NUM_EPOCHS = 30
NUM_SWITCHES = 300


def rss_mb() -> float:
  """Current resident set size (VmRSS) of this process in MB."""
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError("no VmRSS in /proc/self/status")


class LongRunTest(absltest.TestCase):
  def test_many_epochs_no_graph_growth_bounded_memory(self):
    tmp = self.create_tempdir().full_path
    train = seq_classifier.default_data("train", max_seqs=8)
    dev = seq_classifier.default_data("dev", max_seqs=4)
    config = engine.EngineConfig(
      train_dir=tmp, num_epochs=NUM_EPOCHS, batch_size=4, log_every_secs=1e9, keep_checkpoints=1
    )
    with engine.Engine(seq_classifier, config, train_data=train, dev_data=dev) as eng:
      self.assertTrue(eng.graph.finalized)
      eng.train(num_epochs=1)
      num_ops = len(eng.graph.get_operations())
      eng.train(num_epochs=5)  # warm-up: allocator pools, XLA-free executors, dataset threads
      rss_warm = rss_mb()
      history = eng.train()
      rss_end = rss_mb()
      self.assertLen(history, NUM_EPOCHS)
      self.assertEqual(len(eng.graph.get_operations()), num_ops)
      self.assertEqual(eng.graph_state.get_epoch(eng.session), NUM_EPOCHS)
      eng.evaluate("dev")
      self.assertEqual(len(eng.graph.get_operations()), num_ops)
    self.assertLess(
      rss_end - rss_warm, RSS_SLACK_MB, msg=f"RSS {rss_warm:.1f} MB after warm-up, {rss_end:.1f} MB at the end"
    )

  def test_many_train_eval_switches(self):
    built = goldens.build("two_losses", finalize=True)
    batch = built.pad(two_losses.default_data("dev", max_seqs=4))
    num_ops = len(built.graph.get_operations())
    with built.session() as sess:
      train_feed, eval_feed = built.feed(batch, train=True), built.feed(batch, train=False)
      rss_warm = None
      for i in range(NUM_SWITCHES):
        sess.run(built.train_op, train_feed)
        sess.run(built.report, eval_feed)
        if i == 20:
          rss_warm = rss_mb()
      rss_end = rss_mb()
      self.assertEqual(built.gs.get_step(sess), NUM_SWITCHES)
    self.assertTrue(built.graph.finalized)
    self.assertEqual(len(built.graph.get_operations()), num_ops)
    self.assertLess(
      rss_end - rss_warm, RSS_SLACK_MB, msg=f"RSS {rss_warm:.1f} MB after warm-up, {rss_end:.1f} MB at the end"
    )
    with self.assertRaises(RuntimeError):  # finalized: nothing can be added by accident
      with built.graph.as_default():
        tf.constant(0)


if __name__ == "__main__":
  absltest.main()
