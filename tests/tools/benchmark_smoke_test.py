"""tools/benchmark.py: --help lists its flags; --quick runs every part and prints every table row.

A smoke test only: the quick run uses tiny sizes and a handful of steps, so its numbers mean
nothing and are not checked (no timing assertions).
"""

import os
import re
import subprocess
import sys

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "benchmark.py")

# Keys (first column) of the rows a quick run must print; "3 ..." for its one reduction shape 4x16x8.
_ROW_KEYS = ("1a", "1b", "1c", "1d", "2", "3 [B,T] 4x16 fwd", "3 [B,T] 4x16 fwd+bwd", "3 [B,T,V] 4x16x8 fwd",
             "3 [B,T,V] 4x16x8 fwd+bwd", "4", "4 first pass", "5 char_lm", "5 seq_classifier", "5 two_losses")


def _run(*args, timeout=120):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, _TOOL, *args], cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _table_rows(stdout: str):
  """key → cells (figure, value, ratio, target, result) of each Markdown table row."""
  rows = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("#", "---"):
      rows[cells[0]] = cells[1:]
  return rows


class BenchmarkSmokeTest(absltest.TestCase):

  def test_help(self):
    proc = _run("--help", timeout=60)  # absl's --help exits with status 1
    self.assertIn(proc.returncode, (0, 1), proc.stderr[-2000:])
    for flag in ("--[no]quick:", "--rounds:", "--steps:", "--epoch_seqs:", "--batch_size:", "--reduction_shapes:", "--reduction_round_secs:",
                 "--parts:", "--seed:"):
      self.assertIn(flag, proc.stdout)

  def test_quick_prints_all_rows(self):
    proc = _run("--quick")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("machine:", proc.stdout)
    rows = _table_rows(proc.stdout)
    self.assertEqual(sorted(rows), sorted(_ROW_KEYS), proc.stdout)
    for key in ("1a", "2"):  # the figures with a target
      self.assertRegex(rows[key][3], r"<= \d\.\d\dx")
      self.assertIn(rows[key][4], ("PASS", "MISS"))
    for key in ("1b", "1c", "3 [B,T,V] 4x16x8 fwd+bwd", "4"):
      self.assertRegex(rows[key][2], r"^\d+\.\d{3}x$")
      self.assertEqual(rows[key][4], "info")
    self.assertTrue(re.search(r"\d+ ops", rows["5 char_lm"][1]), rows["5 char_lm"])


if __name__ == "__main__":
  absltest.main()
