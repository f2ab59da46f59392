"""Build of the returnn_rc.ops TensorFlow op libraries (standalone module).

Loaded by path from ``setup.py`` (it must not import ``returnn_rc``)::

    ext_modules=build.get_extensions(), cmdclass={"build_ext": build.BuildExt}

It imports the *installed* TensorFlow at build time for its compile/link flags,
so build without build isolation::

    pip install --no-build-isolation -e .       # editable
    python setup.py build_ext --inplace         # in-place

Outputs (next to this file, or in the build dir's ``returnn_rc/ops/``):

* ``_flatten_ops.so``: ops FlattenWithSeqLenMask / UnflattenWithSeqLenMask,
  CPU kernels (+ GPU kernels when TF is built with CUDA and nvcc exists);
  links only ``libtensorflow_framework``.
* ``_flatten_xla.so`` (optional, failure only warns): tf2xla kernels; links
  ``libtensorflow_cc``.
* ``_build_info.json``: TensorFlow version / flags used, checked by the loader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import setuptools
from setuptools.command.build_ext import build_ext as _build_ext

_HERE = os.path.dirname(os.path.abspath(__file__))
_CC = os.path.join(_HERE, "cc")
CORE_NAME = "returnn_rc.ops._flatten_ops"
XLA_NAME = "returnn_rc.ops._flatten_xla"
BUILD_INFO = "_build_info.json"


def _rel(path: str) -> str:
  """setuptools wants source paths relative to the setup.py directory (cwd)."""
  rel = os.path.relpath(path, os.getcwd())
  return path if rel.startswith("..") else rel


def get_extensions() -> list[setuptools.Extension]:
  """The two op libraries (flags are filled in by BuildExt at build time)."""
  core = setuptools.Extension(
    CORE_NAME,
    sources=[
      _rel(os.path.join(_CC, f)) for f in ("flatten_with_seq_len_mask_ops.cc", "flatten_with_seq_len_mask_kernels.cc")
    ],
    depends=[
      _rel(os.path.join(_CC, f))
      for f in ("flatten_with_seq_len_mask.h", "flatten_with_seq_len_mask_gpu.cu.h", "flatten_with_seq_len_mask.cu.cc")
    ],
    language="c++",
  )
  xla = setuptools.Extension(
    XLA_NAME,
    sources=[_rel(os.path.join(_CC, "flatten_with_seq_len_mask_xla.cc"))],
    language="c++",
    optional=True,
  )
  return [core, xla]


def _tf_flags():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  inc = tf.sysconfig.get_include()
  lib_dir = os.path.dirname(inc)
  return tf, inc, lib_dir, list(tf.sysconfig.get_compile_flags()), list(tf.sysconfig.get_link_flags())


def _want_cuda(tf) -> str | None:
  """nvcc path if the GPU kernel can be built (TF with CUDA + nvcc)."""
  if os.environ.get("RETURNN_RC_OPS_NO_CUDA") == "1" or not tf.test.is_built_with_cuda():
    return None
  return shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc") or None


class BuildExt(_build_ext):
  """build_ext that compiles against the installed TensorFlow."""

  def finalize_options(self):
    super().finalize_options()
    if self.parallel is None:
      self.parallel = max(1, min(2, os.cpu_count() or 1))

  def get_ext_filename(self, fullname):
    # Plain "<name>.so": these are TF op libraries, not Python modules.
    # (setuptools passes either the full dotted name or its last component.)
    if fullname.rsplit(".", 1)[-1] in (CORE_NAME.rsplit(".", 1)[1], XLA_NAME.rsplit(".", 1)[1]):
      return os.path.join(*fullname.split(".")) + ".so"
    return super().get_ext_filename(fullname)

  def build_extensions(self):
    tf, inc, lib_dir, cflags, lflags = _tf_flags()
    # No debug info, optimised, quiet (TF headers are noisy).
    for attr in ("compiler_so", "compiler_cxx", "linker_so"):
      cmd = getattr(self.compiler, attr, None)
      if cmd:
        setattr(self.compiler, attr, [a for a in cmd if a not in ("-g", "-O0", "-O1", "-O3")])
    common = cflags + ["-O2", "-g0", "-fPIC", "-w", "-DNDEBUG", "-fvisibility-inlines-hidden"]
    link = lflags + ["-lstdc++", "-Wl,-O1", "-Wl,--strip-debug", f"-Wl,-rpath,{lib_dir}"]
    nvcc = _want_cuda(tf)
    for ext in self.extensions:
      ext.extra_compile_args = list(common)
      ext.extra_link_args = list(link)
      if ext.name == XLA_NAME:
        ext.include_dirs = [
          os.path.join(inc, "external", "highwayhash"),
          os.path.join(inc, "external", "farmhash_archive", "src"),
        ]
        ext.extra_link_args.append("-l:libtensorflow_cc.so.2")
      elif ext.name == CORE_NAME and nvcc:
        ext.extra_compile_args.append("-DGOOGLE_CUDA=1")
        ext.extra_objects = [self._nvcc(nvcc, cflags)]
        # No -lcudart: libtensorflow_framework exports the CUDA runtime API (TF's stub that
        # loads the runtime TF was built for); a local libcudart may be another major version
        # and is not even found under lib64 everywhere (tools/check_gpu_build.sh, ops/STATUS.md).
    super().build_extensions()
    self._build_info = self._make_build_info(tf, nvcc)
    self._write_build_info(os.path.dirname(self.get_ext_fullpath(CORE_NAME)))

  def run(self):
    super().run()
    # --inplace / editable installs copy the .so files next to this file.
    info = getattr(self, "_build_info", None)
    if info is not None and (self.inplace or getattr(self, "editable_mode", False)):
      self._write_build_info(_HERE)

  def _nvcc(self, nvcc: str, cflags: list[str]) -> str:
    src = os.path.join(_CC, "flatten_with_seq_len_mask.cu.cc")
    out = os.path.join(self.build_temp, "flatten_with_seq_len_mask.cu.o")
    os.makedirs(self.build_temp, exist_ok=True)
    cmd = [
      nvcc,
      "-c",
      "-o",
      out,
      src,
      "-x",
      "cu",
      "-O2",
      "-Xcompiler",
      "-fPIC",
      "-DGOOGLE_CUDA=1",
      "--expt-relaxed-constexpr",
      "-DNDEBUG",
      "-w",
    ] + cflags
    print(" ".join(cmd))
    subprocess.check_call(cmd)
    return out

  def _make_build_info(self, tf, nvcc) -> dict:
    built = {ext.name.rsplit(".", 1)[1]: os.path.exists(self.get_ext_fullpath(ext.name)) for ext in self.extensions}
    return {
      "tensorflow_version": tf.__version__,
      "compile_flags": tf.sysconfig.get_compile_flags(),
      "python": sys.version.split()[0],
      "platform": sysconfig.get_platform(),
      "cuda": bool(nvcc),
      "libraries": built,
    }

  def _write_build_info(self, out_dir: str):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, BUILD_INFO), "w") as f:
      json.dump(self._build_info, f, indent=1)
