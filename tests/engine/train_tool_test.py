"""tools/train.py: --help, a short run that prints the table, a re-run that resumes (nothing to do)."""

import os
import subprocess
import sys

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "train.py")


def _run(*args):
  env = dict(os.environ)
  return subprocess.run([sys.executable, _TOOL, *args], cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


class TrainToolTest(absltest.TestCase):

  def test_help(self):
    proc = _run("--help")  # absl's --help exits with status 1
    self.assertIn(proc.returncode, (0, 1), proc.stderr)
    for flag in ("--graph:", "--train_dir:", "--num_epochs:", "--batch_size:", "--[no]xla:", "--export_dir:",
                 "--learning_rate:", "--lr_control_loss:", "--seed:", "--[no]fresh:"):
      self.assertIn(flag, proc.stdout)

  def test_run_and_rerun(self):
    tmp = self.create_tempdir().full_path
    args = ["--graph=two_losses", f"--train_dir={tmp}", "--num_epochs=2", "--max_seqs=32", "--batch_size=16"]
    proc = _run(*args)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"epoch\s+step\s+lr\s+train tag_ce\s+train aux_ce\s+train tag_err\(err\)")
    self.assertRegex(proc.stdout, r"\n\s+2\s+\d+\s")
    again = _run(*args)
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn("nothing to do", again.stderr)
    self.assertEqual(proc.stdout.split("wall time")[0], again.stdout.split("wall time")[0])

  def test_bad_lr_control_loss(self):
    proc = _run("--graph=two_losses", f"--train_dir={self.create_tempdir().full_path}", "--max_seqs=8",
                "--lr_control_loss=nope")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("unknown loss name 'nope'", proc.stderr)


if __name__ == "__main__":
  absltest.main()
