"""tools/train.py --num_workers=N (local worker processes, MultiWorkerMirroredStrategy): results independent of
the number of workers; checkpoints interchangeable between 1 and N workers (the negative control, a
split-dependent dropout mask, is in workers_mirrored_test.py: in one process, no worker start-up).

Each run starts N processes (a TensorFlow import each), so the checks share runs: one test, three phases.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "train.py")
_GRAPH = "two_losses"  # summed, normalised and error losses; dropout on (masks by global sequence index)
_ARGS = ["--num_epochs=2", "--batch_size=16", "--max_seqs=48", "--seed=7", "--worker_timeout_secs=60"]
RTOL = 1e-5


def run_train(*args, timeout=240):
  env = dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("TF_CONFIG", None)
  return subprocess.run(
    [sys.executable, _TOOL, *args], cwd=_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
  )


def history(train_dir):
  with open(os.path.join(train_dir, "train_state.json"), encoding="utf-8") as f:
    return json.load(f)["history"]


def weights(train_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(train_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


class WorkersTrainTest(absltest.TestCase):
  def assert_same(self, a_dir, b_dir, what):
    ha, hb = history(a_dir), history(b_dir)
    self.assertEqual([h["epoch"] for h in ha], [h["epoch"] for h in hb], what)
    for ea, eb in zip(ha, hb):
      for split in ("train", "dev"):
        self.assertEqual(sorted(ea[split]), sorted(eb[split]), what)
        for name in ea[split]:
          np.testing.assert_allclose(eb[split][name], ea[split][name], rtol=RTOL, err_msg=f"{what} {split} {name}")
    wa, wb = weights(a_dir), weights(b_dir)
    self.assertEqual(sorted(wa), sorted(wb), what)  # the same variable names
    for name in wa:
      np.testing.assert_allclose(wb[name], wa[name], rtol=RTOL, atol=1e-7, err_msg=f"{what} variable {name}")

  def test_one_two_three_workers_and_checkpoints(self):
    tmp = self.create_tempdir().full_path
    dirs = {n: os.path.join(tmp, f"w{n}") for n in (1, 2, 3)}
    for n, train_dir in dirs.items():
      proc = run_train(f"--graph={_GRAPH}", f"--train_dir={train_dir}", f"--num_workers={n}", *_ARGS)
      self.assertEqual(proc.returncode, 0, f"{n} workers:\n{proc.stderr[-3000:]}")
      self.assertEqual(proc.stdout.count("per-epoch figures"), 1, proc.stdout)  # ONE table
      self.assertRegex(proc.stdout, r"\n\s+2\s+\d+\s")
      # chief-only writes: one events file, the checkpoints of the two epochs
      names = os.listdir(train_dir)
      self.assertEqual(len([f for f in names if "tfevents" in f]), 1, names)
      self.assertIn("model.002.index", names)
    self.assert_same(dirs[1], dirs[2], "1 vs 2 workers")
    self.assert_same(dirs[1], dirs[3], "1 vs 3 workers")
    # The 2 workers' checkpoint restores into 1 worker (the same variable names): it continues at epoch 3.
    proc = run_train(f"--graph={_GRAPH}", f"--train_dir={dirs[2]}", "--num_workers=1", *_ARGS[1:], "--num_epochs=3")
    self.assertEqual(proc.returncode, 0, f"resume on 1 worker:\n{proc.stderr[-3000:]}")
    self.assertIn("resumed", proc.stderr)
    self.assertEqual([h["epoch"] for h in history(dirs[2])], [1, 2, 3])


if __name__ == "__main__":
  absltest.main()
