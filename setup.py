"""Install returnn_rc; builds the FlattenWithSeqLenMask custom op against the installed TensorFlow.

TensorFlow must already be installed (the op is compiled against its headers and ABI), so install
with ``pip install --no-build-isolation -e .`` (see README.md). TensorFlow itself is not a hard
requirement, to leave the choice of wheel to the user: ``pip install -e ".[cpu]"`` pulls
``tensorflow-cpu``, ``".[gpu]"`` pulls ``tensorflow`` (as TF Addons does).
"""

import importlib.util
import os

from setuptools import find_packages, setup

_HERE = os.path.dirname(os.path.abspath(__file__))
_TF_VERSION = "2.21.0"


def _load_ops_build():
  """``returnn_rc/ops/build.py``, loaded by path: importing the package would need the built op."""
  path = os.path.join(_HERE, "returnn_rc", "ops", "build.py")
  spec = importlib.util.spec_from_file_location("_returnn_rc_ops_build", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_build = _load_ops_build()

setup(
  name="returnn_rc",
  version="0.1.0",
  description="RETURNN's run context (train flag, step, epoch, losses, outputs) for TensorFlow graph mode",
  long_description=open(os.path.join(_HERE, "README.md"), encoding="utf-8").read(),
  long_description_content_type="text/markdown",
  python_requires=">=3.9",
  packages=find_packages(include=["returnn_rc", "returnn_rc.*"]),
  package_data={"returnn_rc.ops": ["*.so", "_build_info.json"]},
  install_requires=["numpy", "absl-py"],
  extras_require={
    "cpu": [f"tensorflow-cpu=={_TF_VERSION}"],
    "gpu": [f"tensorflow=={_TF_VERSION}"],
    "tests": ["pytest", "pytest-xdist", "hypothesis", "ruff"],
  },
  ext_modules=_build.get_extensions(),
  cmdclass={"build_ext": _build.BuildExt},
  zip_safe=False,
)
