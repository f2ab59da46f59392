"""tools/train.py --num_workers=2 with a worker that dies mid-epoch: the launcher exits non-zero naming it, the
other worker stops at its deadline with an error naming itself and the unreachable peer, no checkpoint of the
interrupted epoch is written, and a rerun resumes from the last checkpoint (on 1 worker: cheaper to start;
checkpoints are interchangeable)."""

import json
import os

from absl.testing import absltest

from tests.distributed.workers_train_test import _GRAPH, run_train

# 48 sequences in length buckets of <= 16: 6-7 steps per epoch; worker 1 exits before its 10th step (epoch 2).
_ARGS = [
  f"--graph={_GRAPH}",
  "--num_workers=2",
  "--batch_size=16",
  "--max_seqs=48",
  "--seed=7",
  "--worker_timeout_secs=8",
]


class WorkersFaultTest(absltest.TestCase):
  def test_dead_worker_stops_the_others_and_a_rerun_resumes(self):
    train_dir = self.create_tempdir().full_path
    proc = run_train(*_ARGS, f"--train_dir={train_dir}", "--num_epochs=2", "--fault_for_tests=1:9:exit")
    self.assertNotEqual(proc.returncode, 0, proc.stdout)
    self.assertIn("worker 1 (pid", proc.stderr)
    self.assertIn("exit code 3", proc.stderr)
    # the chief's own error: its deadline, the dead peer named
    self.assertRegex(proc.stderr, r"worker 0 of 2 .*a collective did not complete within 8s")
    self.assertRegex(proc.stderr, r"unreachable: worker 1 \(localhost:\d+\)")
    names = sorted(os.listdir(train_dir))
    self.assertIn("model.001.index", names)
    self.assertNotIn("model.002.index", names)  # no checkpoint of the interrupted epoch
    with open(os.path.join(train_dir, "train_state.json"), encoding="utf-8") as f:
      self.assertEqual(json.load(f)["epoch"], 1)
    again = run_train(*_ARGS, f"--train_dir={train_dir}", "--num_epochs=2", "--num_workers=1")  # 1 is cheaper
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertRegex(again.stdout, r"\n\s+2\s+\d+\s")
    self.assertIn("model.002.index", os.listdir(train_dir))


if __name__ == "__main__":
  absltest.main()
