"""One rule for the tools: bad input ends a program with its message, not with a traceback.

An error raised by returnn_rc's own checks (a ``ValueError`` / ``TypeError`` whose innermost frame is in the
package: "no file matches ...", "holds the checkpoint of another model ...") names the problem already; the
tools print it as ``error: <message>`` and exit with status 1. An error raised anywhere else (a graph module's
own code, TensorFlow) keeps its traceback: that is a bug to debug, not an input to fix.
"""

import contextlib
import os
import sys
from typing import Iterator


def raised_by_package(exc: BaseException) -> bool:
  """Whether the innermost frame of ``exc``'s traceback is in the returnn_rc package."""
  package = sys.modules.get("returnn_rc")  # the package as imported (no check raised before it was)
  tb = exc.__traceback__
  if tb is None or package is None or not getattr(package, "__file__", None):
    return False
  package_dir = os.path.dirname(os.path.abspath(package.__file__))
  while tb.tb_next is not None:
    tb = tb.tb_next
  filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
  return os.path.commonpath([filename, package_dir]) == package_dir


@contextlib.contextmanager
def input_errors() -> Iterator[None]:
  """Turns a ``ValueError`` / ``TypeError`` of returnn_rc's checks into ``error: <message>``, exit status 1."""
  try:
    yield
  except (ValueError, TypeError) as exc:
    if raised_by_package(exc):
      sys.exit(f"error: {exc}")
    raise
