"""tools/bench_flatten.py and tools/demo.py: their flags work, bad values are refused before any work.

Smoke runs only (tiny sizes): no timing is checked.
"""

import os
import subprocess
import sys

from absl.testing import absltest, parameterized

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tool, *args, env=None, timeout=300):
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  full_env.update(env or {})
  return subprocess.run(
    [sys.executable, os.path.join(_ROOT, "tools", tool), *args],
    cwd=_ROOT,
    env=full_env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


class BenchFlattenTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("bfc", ["--bfc"], "false", "BFC"),  # the flag wins over the environment
    ("bfc_false", ["--bfc=false"], "true", "default"),
  )
  def test_bfc_flag_selects_the_allocator(self, args, env_value, allocator):
    proc = _run("bench_flatten.py", "--shapes=2x6x3", "--repeats=1", *args, env={"TF_CPU_ALLOCATOR_USE_BFC": env_value})
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f"CPU allocator in use: {allocator}", proc.stdout)
    self.assertIn("ratio fwd boolean_mask/ours", proc.stdout)

  @parameterized.named_parameters(
    ("shape_zero", ["--shapes=2x6x3,2x0x3"], r"--shapes: '2x0x3' is not B x T x F with three positive ints"),
  )
  def test_bad_flags(self, args, regex):
    proc = _run("bench_flatten.py", *args)
    self.assertNotEqual(proc.returncode, 0)
    self.assertRegex(proc.stderr, regex)
    self.assertNotIn("packed", proc.stdout)  # no benchmark ran


class DemoTest(parameterized.TestCase):
  def test_runs(self):
    proc = _run("demo.py", "--steps=3")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r"after 3 steps: train mse \(dropout on\) = [0-9.]+, eval mse \(dropout off\)")

  @parameterized.named_parameters(
    ("dropout_one", "--dropout=1", r"flag --dropout=1.0: --dropout must be in \[0, 1\)"),
  )
  def test_bad_flags(self, arg, regex):
    proc = _run("demo.py", arg)
    self.assertNotEqual(proc.returncode, 0)
    self.assertRegex(proc.stderr, regex)
    self.assertNotIn("after", proc.stdout)


if __name__ == "__main__":
  absltest.main()
