"""tools/bench_input.py: a quick throughput run on a small corpus prints both pipelines and the ratio.

A smoke test only: its numbers mean nothing and are not checked (no timing assertions).
"""

import os
import subprocess
import sys

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(_ROOT, "tools", "bench_input.py")


class BenchInputSmokeTest(absltest.TestCase):
  def test_quick_throughput(self):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
      [sys.executable, _TOOL, "--mode=throughput", "--corpus_seqs=300", "--repeats=1"],
      cwd=_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("char_lm train data: 300 sequences", proc.stdout)
    self.assertRegex(proc.stdout, r"from_generator \(memory\)\s+median\s+\d+ seqs/s")
    self.assertRegex(proc.stdout, r"record files\s+median\s+\d+ seqs/s")
    self.assertRegex(proc.stdout, r"ratio files / from_generator: \d+\.\dx")


if __name__ == "__main__":
  absltest.main()
