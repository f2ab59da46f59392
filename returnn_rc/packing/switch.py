"""The switch of the upstream packing rewrite: on, off, or automatic per backend.

Precedence: the innermost :func:`enabled` context (True / False), else the environment variable
``RETURNN_RC_PACKING`` (``1``/``on``, ``0``/``off``, ``auto``; read when a loss is reduced), else
automatic. Automatic means: on, except for a loss built inside an XLA context (``jit_scope``, XLA
control flow), where the rewrite is skipped (measured slower there, see ``tools/BENCHMARKS.md``,
"Packed frames all the way up") and only the loss values are packed, as before.

The switch only concerns the rewrite of a loss's producers; ``use_flatten_frames`` still decides
whether the loss values are packed at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator, Optional, Tuple

ENV_VAR = "RETURNN_RC_PACKING"
#: Whether the automatic setting rewrites losses built inside an XLA context.
XLA_DEFAULT = False

_override: contextvars.ContextVar = contextvars.ContextVar("returnn_rc_packing_enabled", default=None)

_ENV_VALUES = {"1": True, "on": True, "true": True, "0": False, "off": False, "false": False, "auto": None, "": None}


def setting() -> Optional[bool]:
  """True / False if switched on / off (context, else environment), None for automatic."""
  value = _override.get()
  if value is not None:
    return value
  raw = os.environ.get(ENV_VAR, "auto").strip().lower()
  if raw not in _ENV_VALUES:
    raise ValueError(f"{ENV_VAR}={os.environ.get(ENV_VAR)!r}: expected one of 1, on, 0, off, auto")
  return _ENV_VALUES[raw]


@contextlib.contextmanager
def enabled(flag: Optional[bool] = True) -> Iterator[None]:
  """Switches the rewrite on (True) or off (False) for losses reduced inside; None: back to the default
  (the environment variable, else automatic).

  Example::

    with rc.packing.enabled(False):
      total = ctx.total_loss()  # losses packed at the end only, as with the rewrite absent
  """
  if flag is not None and not isinstance(flag, bool):
    raise TypeError(f"rc.packing.enabled(flag): flag must be True, False or None, got {flag!r}")
  token = _override.set(flag)
  try:
    yield
  finally:
    _override.reset(token)


def is_enabled(*, xla: bool = False) -> bool:
  """Whether a loss reduced now (inside an XLA context if ``xla``) gets the upstream rewrite."""
  return decide(xla=xla)[0]


def decide(*, xla: bool) -> Tuple[bool, str]:
  """(rewrite?, why not) for a loss reduced now."""
  value = setting()
  if value is False:
    return False, "switched off (rc.packing.enabled(False) or RETURNN_RC_PACKING=0)"
  if value is None and xla and not XLA_DEFAULT:
    return False, "inside an XLA context (automatic setting: no upstream rewrite under XLA)"
  return True, ""
