"""The benchmarks tools/bench_{flag,engine,reduction,xla,build,packing,distributed}.py: --quick runs each,
with one of its own flags and the common --seed / --rounds (bench_common.py) given explicitly, and prints
every table row (each process costs a TensorFlow import, several seconds).

A smoke test only: the quick runs use tiny sizes and a handful of steps, so their numbers mean
nothing and are not checked (no timing assertions).
"""

import os
import re
import subprocess
import sys

from absl.testing import absltest, parameterized

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_GRAPHS = sorted(f[:-3] for f in os.listdir(os.path.join(_ROOT, "graphs")) if f.endswith(".py") and f[0] != "_")

# benchmark → (a flag of its own given in the quick run, the keys (first column) of the rows it must print).
_BENCHMARKS = {
  "flag": ("--batch_size=8", ("1a", "1b", "1c", "1d")),
  "engine": ("--epoch_seqs=32", ("2",)),
  "reduction": (
    "--round_secs=0",  # its quick run: the one shape 4x16x8
    ("3 [B,T] 4x16 fwd", "3 [B,T] 4x16 fwd+bwd", "3 [B,T,V] 4x16x8 fwd", "3 [B,T,V] 4x16x8 fwd+bwd"),
  ),
  "xla": ("--batch_size=8", ("4", "4 first pass")),
  "build": ("--repeats=1", tuple(f"5 {name}" for name in _GRAPHS)),
  "distributed": ("--steps=1", ("9a", "9b", "9c")),  # two local worker processes
  # Parts model and goldens (part xla, the same code under jit_scope with the rewrite forced on, compiles every
  # golden twice: minutes here).
  "packing": (
    "--parts=model,goldens",
    ("13 model", "13 model values", "13 model losses", *(f"13 goldens {name}" for name in _GRAPHS)),
  ),
}


def _run(name, *args, timeout=180):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
    [sys.executable, os.path.join(_ROOT, "tools", f"bench_{name}.py"), *args],
    cwd=_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def _table_rows(stdout: str):
  """key → cells (figure, value, ratio, target, result) of each Markdown table row."""
  rows = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("| ") and len(cells) == 6 and cells[0] not in ("#", "---"):
      rows[cells[0]] = cells[1:]
  return rows


class BenchmarkSmokeTest(parameterized.TestCase):
  @parameterized.parameters(*_BENCHMARKS)
  def test_quick_prints_all_rows(self, name):
    own_flag, keys = _BENCHMARKS[name]
    # bench_packing builds 2-3 graphs per golden and part.
    proc = _run(name, "--quick", "--seed=42", "--rounds=1", own_flag, timeout=480 if name == "packing" else 180)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("machine:", proc.stdout)
    rows = _table_rows(proc.stdout)
    self.assertEqual(sorted(rows), sorted(keys), proc.stdout)
    for key, cells in rows.items():
      if key in ("1a", "2", "13 model", "13 goldens char_lm"):  # the figures with a target
        self.assertRegex(cells[3], r"<= \d\.\d\dx")
        self.assertIn(cells[4], ("PASS", "MISS"))
      elif key in ("1b", "1c", "3 [B,T,V] 4x16x8 fwd+bwd", "4", "13 model values", "13 xla model"):
        self.assertRegex(cells[2], r"^\d+\.\d{3}x$")
        self.assertEqual(cells[4], "info")
    if name == "packing":  # the same weights and batch: the variants' losses agree (printed to 4 decimals)
      losses = re.findall(r"(\w+) (-?\d+\.\d{4}) \((\d+)\)", rows["13 model losses"][1])
      self.assertEqual([n for n, _, _ in losses], ["packed", "values", "unpacked"], rows["13 model losses"])
      self.assertLess(max(float(v) for _, v, _ in losses) - min(float(v) for _, v, _ in losses), 1e-2, losses)
      self.assertGreater(int(losses[0][2]), int(losses[2][2]), "packed has more flatten ops than unpacked")
    if name == "build":
      self.assertTrue(re.search(r"\d+ ops", rows["5 char_lm"][1]), rows["5 char_lm"])


if __name__ == "__main__":
  absltest.main()
