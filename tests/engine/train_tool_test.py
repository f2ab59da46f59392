"""tools/train.py: --help, a short run that prints the table, a re-run that resumes (nothing to do); the
record-file flow of the README: tools/make_dataset.py -> tools/train.py --train_data/--dev_data -> tools/evaluate.py."""

import json
import os
import re
import shutil
import subprocess
import sys

from absl.testing import absltest, parameterized

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "train.py")


def _run(*args, cwd=_ROOT, tool=_TOOL):
  env = dict(os.environ)
  return subprocess.run(
    [sys.executable, tool, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
  )


def _figures(stdout: str):
  """The rows of the printed table without the timing columns (steps/s, sec)."""
  table = stdout.split("per loss)\n")[1].split("\nwall time")[0].splitlines()
  return [row.split()[:-2] for row in table]


class TrainToolTest(parameterized.TestCase):
  def test_help(self):
    proc = _run("--help")  # absl's --help exits with status 1
    self.assertIn(proc.returncode, (0, 1), proc.stderr)
    for flag in (
      "--graph:",
      "--train_dir:",
      "--num_epochs:",
      "--batch_size:",
      "--[no]xla:",
      "--export_dir:",
      "--learning_rate:",
      "--lr_control_loss:",
      "--seed:",
      "--[no]fresh:",
      "--train_data:",
      "--dev_data:",
      "--optimizer:",
      "--grad_clip_global_norm:",
      "--accum_grad_multiple_step:",
      "--lr_warmup_steps:",
      "--lr_schedule:",
      "--keep_best_checkpoints:",
      "--[no]skip_corrupt_records:",
    ):
      self.assertIn(flag, proc.stdout)

  def test_record_files_flow(self):
    """make_dataset -> train from the files (AdamW, clipping, accumulation, warm-up, best-2) -> evaluate the best
    checkpoint from the files: the dev figure of the training table (files vs memory: files_engine_test)."""
    tmp = self.create_tempdir().full_path
    data, train_dir = os.path.join(tmp, "data"), os.path.join(tmp, "train")
    proc = _run(
      "--graph=two_losses",
      "--split=dev",
      f"--output={data}",
      "--num_shards=3",
      "--max_seqs=48",
      tool=os.path.join(_ROOT, "tools", "make_dataset.py"),
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("48 sequences -> 3 file(s)", proc.stdout)
    proc = _run(
      "--graph=two_losses",
      f"--train_dir={train_dir}",
      f"--train_data={data}/dev-*",
      f"--dev_data={data}/dev-*",
      "--num_epochs=2",
      "--batch_size=8",
      "--optimizer=adamw",
      "--weight_decay=0.01",
      "--grad_clip_global_norm=5",
      "--accum_grad_multiple_step=2",
      "--lr_warmup_steps=3",
      "--keep_best_checkpoints=2",
      "--best_checkpoint_loss=aux_ce",
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("best checkpoint by aux_ce:", proc.stdout)
    table = proc.stdout.split("per loss)\n")[1].split("\nwall time")[0].splitlines()
    header, rows = re.split(r"\s{2,}", table[0].strip()), [row.split() for row in table[1:]]
    dev_aux = [float(row[header.index("dev aux_ce")]) for row in rows]
    self.assertLen(dev_aux, 2)
    out_json = os.path.join(tmp, "eval.json")
    proc = _run(
      "--graph=two_losses",
      f"--checkpoint={train_dir}/best",
      f"--data={data}/dev-*",
      f"--output_json={out_json}",
      tool=os.path.join(_ROOT, "tools", "evaluate.py"),
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"aux_ce\s+\S+\s+\S+\s+\d\.\d{6}")
    with open(out_json) as f:
      result = json.load(f)
    self.assertEqual(result["num_seqs"], 48)
    self.assertEqual(sorted(result["losses"]), ["aux_ce", "tag_ce", "tag_err"])
    self.assertTrue(result["losses"]["tag_err"]["as_error"])
    self.assertAlmostEqual(result["losses"]["aux_ce"]["figure"], min(dev_aux), delta=6e-5)  # the table rounds

  def test_bad_lr_control_loss(self):
    proc = _run(
      "--graph=two_losses", f"--train_dir={self.create_tempdir().full_path}", "--max_seqs=8", "--lr_control_loss=nope"
    )
    self.assertNotEqual(proc.returncode, 0)
    self.assertIn("unknown loss name 'nope'", proc.stderr)

  def test_run_rerun_and_fresh_in_the_users_directory(self):
    """A run prints the table; a re-run resumes and has nothing to do (same table); --fresh deletes only the
    engine's own files in the user's directory and trains again."""
    tmp = self.create_tempdir().full_path
    shutil.copy(os.path.join(_ROOT, "graphs", "two_losses.py"), os.path.join(tmp, "model.py"))
    user_files = ["model.py", "model.txt", "model.001.py"]
    for name in user_files[1:]:
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        f.write("mine")
    args = ["--graph=./model.py", "--train_dir=.", "--num_epochs=2", "--max_seqs=32", "--batch_size=16"]
    runs = [_run(*args, *extra, cwd=tmp) for extra in ([], [], ["--fresh"])]
    for proc in runs:
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      self.assertContainsSubset(user_files + ["model.002.index", "train_state.json"], os.listdir(tmp))
    first, again, fresh = runs
    self.assertRegex(first.stdout, r"epoch\s+step\s+lr\s+train tag_ce\s+train aux_ce\s+train tag_err\(err\)")
    self.assertRegex(first.stdout, r"\n\s+2\s+\d+\s")
    self.assertIn("nothing to do", again.stderr)
    self.assertNotIn("nothing to do", fresh.stderr)
    self.assertEqual(first.stdout.split("wall time")[0], again.stdout.split("wall time")[0])
    self.assertIn("fresh start: deleted the engine's files", fresh.stderr)
    self.assertEqual(_figures(first.stdout), _figures(fresh.stdout))  # same seed, same figures
    for name in user_files[1:]:
      with open(os.path.join(tmp, name), encoding="utf-8") as f:
        self.assertEqual(f.read(), "mine")

  # Checks of the engine's config (lr_decay, train_dir, ...) have in-process rows in tests/bad_inputs_test.py; here
  # flag validators (before TensorFlow is imported), one check after the graph is loaded (export_dir) and one of the
  # engine's data checks.
  @parameterized.named_parameters(
    ("batch_size_zero", ["--batch_size=0"], r"flag --batch_size=0: 0 is not a positive integer"),
    ("num_epochs_zero", ["--num_epochs=0"], r"flag --num_epochs=0: 0 is not a positive integer"),
    ("keep_checkpoints_zero", ["--keep_checkpoints=0"], r"flag --keep_checkpoints=0: 0 is not a positive integer"),
    (
      "export_dir_not_an_export",
      ["--export_dir={tools}", "--overwrite_export"],
      r"export_dir '.*tools' is not an earlier returnn_rc export",
    ),
    (  # an error of the engine's own checks: its message, no traceback (tools/tool_errors.py)
      "train_data_matches_nothing",
      ["--train_data=/nonexistent/x-*"],
      r"(^|\n)error: graph 'two_losses' train data: no file matches '/nonexistent/x-\*'",
    ),
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
    self.assertNotIn("Traceback", proc.stderr)
    self.assertEqual(os.listdir(parent), [])  # nothing written
    self.assertTrue(os.path.exists(os.path.join(_ROOT, "tools", "train.py")))


if __name__ == "__main__":
  absltest.main()
