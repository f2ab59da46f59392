"""XLA modes, library load orders, fallback switch, loader errors, CUDA harness compile."""

import json
import os
import shutil
import subprocess
import sys

from absl.testing import absltest, parameterized

from returnn_rc.ops import _loader

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.abspath(os.path.join(_HERE, "..", ".."))
_BUILT = os.path.exists(_loader.CORE_SO)
_XLA_BUILT = os.path.exists(_loader.XLA_SO)
_SKIP_MSG = f"op library not built ({_loader.CORE_SO}); run: {_loader.REBUILD_CMD}"
# Auto-clustering on CPU needs --tf_xla_cpu_global_jit; no lazy compilation so XLA really runs.
_XLA_FLAGS = "--tf_xla_cpu_global_jit --tf_xla_enable_lazy_compilation=false"


def run_scenario(test: absltest.TestCase, scenario: str, **env_extra) -> str:
  """Runs ``python -m tests.ops.flatten_subprocess_main scenario`` in a fresh process; fails ``test`` unless
  it printed OK.

  Returns:
    its stdout.
  """
  env = dict(os.environ, TF_XLA_FLAGS=_XLA_FLAGS, TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
  if _loader.ENV_FALLBACK not in env_extra:
    env.pop(_loader.ENV_FALLBACK, None)
  proc = subprocess.run(
    [sys.executable, "-m", "tests.ops.flatten_subprocess_main", scenario],
    cwd=_REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  test.assertEqual(proc.returncode, 0, msg=proc.stdout + proc.stderr[-4000:])
  test.assertIn(f"{scenario} OK", proc.stdout, msg=proc.stderr[-4000:])
  return proc.stdout


@absltest.skipUnless(_BUILT, _SKIP_MSG)
class LoadOrderXlaTest(parameterized.TestCase):
  @parameterized.parameters("load_first", "after_ops", "after_xla")
  def test_xla_modes_in_load_order(self, scenario):
    if not _XLA_BUILT:
      self.skipTest(f"{_loader.XLA_SO} not built")
    out = run_scenario(self, scenario)
    if scenario != "load_first":
      self.assertIn("late registrations: ", out)

  def test_xla_without_xla_library_uses_tf_formulation(self):
    run_scenario(self, "no_xla_lib", RETURNN_RC_OPS_NO_XLA_LIB="1")

  def test_fallback_env_switch(self):
    run_scenario(self, "fallback", RETURNN_RC_OPS_FALLBACK="1")


class LoaderErrorTest(absltest.TestCase):
  def _with_paths(self, core_so, build_info):
    saved = (_loader.CORE_SO, _loader.BUILD_INFO, _loader._core)
    _loader.CORE_SO, _loader.BUILD_INFO, _loader._core = core_so, build_info, None
    self.addCleanup(lambda: setattr(_loader, "_core", saved[2]))
    self.addCleanup(lambda: setattr(_loader, "BUILD_INFO", saved[1]))
    self.addCleanup(lambda: setattr(_loader, "CORE_SO", saved[0]))

  def test_missing_library(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "_flatten_ops.so")
    self._with_paths(path, os.path.join(tmp, "_build_info.json"))
    with self.assertRaisesRegex(RuntimeError, "not built") as ctx:
      _loader.core()
    msg = str(ctx.exception)
    self.assertIn(path, msg)
    self.assertIn("pip install --no-build-isolation -e .", msg)
    self.assertIn("running TensorFlow", msg)

  def test_version_mismatch(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "_flatten_ops.so")
    open(path, "wb").close()
    info = os.path.join(tmp, "_build_info.json")
    with open(info, "w") as f:
      json.dump({"tensorflow_version": "2.0.0"}, f)
    self._with_paths(path, info)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    with self.assertRaisesRegex(RuntimeError, "version mismatch") as ctx:
      _loader.core()
    self.assertIn("Built for TensorFlow 2.0.0", str(ctx.exception))
    self.assertIn(f"running TensorFlow {tf.__version__}", str(ctx.exception))
    self.assertIn(path, str(ctx.exception))


class CudaHarnessCompileTest(absltest.TestCase):
  def test_harness_compiles(self):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if not nvcc:
      self.skipTest("nvcc not found: the standalone CUDA harness cannot be compiled here")
    tmp = self.create_tempdir().full_path
    env = dict(os.environ, COMPILE_ONLY="1", NVCC=nvcc, NVCC_ARCH=os.environ.get("NVCC_ARCH", "sm_80"), OUT_DIR=tmp)
    proc = subprocess.run(
      ["bash", os.path.join(_REPO, "tools", "cuda_harness", "run.sh")],
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
    )
    self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
    self.assertTrue(os.path.exists(os.path.join(tmp, "returnn_rc_flatten_harness")))


if __name__ == "__main__":
  absltest.main()
