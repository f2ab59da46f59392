"""tools/train.py: --help, a short run that prints the table, a re-run that resumes (nothing to do)."""

import os
import shutil
import subprocess
import sys

from absl.testing import absltest, parameterized

from tests.engine import testing_graphs

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "train.py")


def _run(*args, cwd=_ROOT):
  env = dict(os.environ)
  return subprocess.run([sys.executable, _TOOL, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


class TrainToolTest(parameterized.TestCase):

  def test_help(self):
    proc = _run("--help")  # absl's --help exits with status 1
    self.assertIn(proc.returncode, (0, 1), proc.stderr)
    for flag in ("--graph:", "--train_dir:", "--num_epochs:", "--batch_size:", "--[no]xla:", "--export_dir:",
                 "--learning_rate:", "--lr_control_loss:", "--seed:", "--[no]fresh:"):
      self.assertIn(flag, proc.stdout)

  def test_run_and_rerun(self):
    tmp = testing_graphs.tempdir(self)
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
    proc = _run("--graph=two_losses", f"--train_dir={testing_graphs.tempdir(self)}", "--max_seqs=8",
                "--lr_control_loss=nope")
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("unknown loss name 'nope'", proc.stderr)


  def test_fresh_in_the_users_directory_keeps_the_users_files(self):
    tmp = self.create_tempdir().full_path
    shutil.copy(os.path.join(_ROOT, "graphs", "two_losses.py"), os.path.join(tmp, "model.py"))
    user_files = ["model.py", "model.txt", "model.001.py"]
    for name in user_files[1:]:
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        f.write("mine")
    args = ["--graph=./model.py", "--train_dir=.", "--num_epochs=1", "--max_seqs=8", "--batch_size=8"]
    for extra in ([], ["--fresh"]):
      proc = _run(*args, *extra, cwd=tmp)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      self.assertContainsSubset(user_files + ["model.001.index", "train_state.json"], os.listdir(tmp))
    self.assertIn("fresh start: deleted the engine's files", proc.stderr)
    with open(os.path.join(tmp, "model.txt"), encoding="utf-8") as f:
      self.assertEqual(f.read(), "mine")

  @parameterized.named_parameters(
      ("batch_size_zero", ["--batch_size=0"], r"flag --batch_size=0: 0 is not a positive integer"),
      ("num_epochs_zero", ["--num_epochs=0"], r"flag --num_epochs=0: 0 is not a positive integer"),
      ("keep_checkpoints_zero", ["--keep_checkpoints=0"], r"flag --keep_checkpoints=0: 0 is not a positive integer"),
      ("lr_decay_zero", ["--lr_decay=0"], r"lr_decay must be a float in \(0, 1\] \(1 disables the decay\), got 0.0"),
      ("train_dir_root", ["--train_dir=/"], r"train_dir '/' is the filesystem root"),
      ("export_dir_not_an_export", ["--export_dir={tools}", "--overwrite_export"],
       r"export_dir '.*tools' is not an earlier returnn_rc export"),
  )
  def test_bad_flags_before_any_work(self, args, regex):
    parent = self.create_tempdir().full_path
    train_dir = os.path.join(parent, "train")
    args = [a.format(tools=os.path.join(_ROOT, "tools")) for a in args]
    if not any(a.startswith("--train_dir") for a in args):
      args.append(f"--train_dir={train_dir}")
    proc = _run("--graph=two_losses", "--max_seqs=8", *args)
    self.assertNotEqual(proc.returncode, 0)
    self.assertRegex(proc.stderr, regex)
    self.assertEqual(os.listdir(parent), [])  # nothing written
    self.assertTrue(os.path.exists(os.path.join(_ROOT, "tools", "train.py")))


if __name__ == "__main__":
  absltest.main()
