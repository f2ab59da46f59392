"""Lazy loading of the op libraries built by ``returnn_rc/ops/build.py``.

The ``.so`` files load on first use (``tf.load_op_library``).  A missing
library or one built for another TensorFlow version raises ``RuntimeError``
naming the path, both versions and the rebuild command.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading

import tensorflow as tf

OPS_DIR = os.path.dirname(os.path.abspath(__file__))
CORE_SO = os.path.join(OPS_DIR, "_flatten_ops.so")
XLA_SO = os.path.join(OPS_DIR, "_flatten_xla.so")
BUILD_INFO = os.path.join(OPS_DIR, "_build_info.json")
REBUILD_CMD = "pip install --no-build-isolation -e .  (or: python setup.py build_ext --inplace)"
ENV_FALLBACK = "RETURNN_RC_OPS_FALLBACK"
ENV_NO_XLA_LIB = "RETURNN_RC_OPS_NO_XLA_LIB"  # testing: behave as if _flatten_xla.so were missing

_lock = threading.Lock()
_core = None
_xla_loaded = None  # None: not tried; True/False afterwards
_xla_error = None


_fallback_scope = contextvars.ContextVar("returnn_rc_ops_fallback_scope", default=False)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
  """The boolean environment variable ``name``: ``1``/``true``/``yes``/``on`` (any case) is True;
  unset, empty, ``0``/``false``/``no``/``off`` is False; anything else is a ``ValueError``."""
  value = os.environ.get(name, "")
  norm = value.strip().lower()
  if norm in _TRUE:
    return True
  if norm in _FALSE:
    return False
  raise ValueError(
    f"environment variable {name}={value!r} is not a boolean: expected 1, true, yes or on "
    f"(on), or 0, false, no, off or empty (off), in any case"
  )


def use_fallback() -> bool:
  """Whether to build the pure-TF implementation: ``RETURNN_RC_OPS_FALLBACK=1`` (or ``true``, ``yes``,
  ``on``; debugging), or inside :func:`fallback_scope`. ``ValueError`` for a value that is not a boolean."""
  return _fallback_scope.get() or env_flag(ENV_FALLBACK)


@contextlib.contextmanager
def fallback_scope():
  """Builds the pure-TF implementation meanwhile, in this thread / context only (e.g. for a
  SavedModel export that must not need the op library)."""
  token = _fallback_scope.set(True)
  try:
    yield
  finally:
    _fallback_scope.reset(token)


def built_tf_version() -> str | None:
  try:
    with open(BUILD_INFO) as f:
      return json.load(f).get("tensorflow_version")
  except (OSError, ValueError):
    return None


def _error(path: str, reason: str) -> RuntimeError:
  return RuntimeError(
    f"returnn_rc.ops: cannot load op library {path}: {reason}. "
    f"Built for TensorFlow {built_tf_version() or 'unknown (no build info)'}, "
    f"running TensorFlow {tf.__version__}. Rebuild in the repository root with: {REBUILD_CMD}; "
    f"or set {ENV_FALLBACK}=1 for the pure-TensorFlow fallback."
  )


def core():
  """The loaded core op module (``flatten_with_seq_len_mask`` / ``unflatten_with_seq_len_mask``)."""
  global _core
  if _core is not None:
    return _core
  with _lock:
    if _core is None:
      if not os.path.exists(CORE_SO):
        raise _error(CORE_SO, "file not found (not built?)")
      built = built_tf_version()
      if built != tf.__version__:
        raise _error(CORE_SO, "TensorFlow version mismatch" if built else "missing " + BUILD_INFO)
      try:
        module = tf.load_op_library(CORE_SO)
      except (tf.errors.NotFoundError, OSError) as exc:
        raise _error(CORE_SO, f"load failed ({exc})") from exc
      _core = module
      _load_xla()
  return _core


def _load_xla():
  """Loads the optional tf2xla kernels (after the core ops are registered)."""
  global _xla_loaded, _xla_error
  if _xla_loaded is not None:
    return
  if env_flag(ENV_NO_XLA_LIB):
    _xla_loaded, _xla_error = False, f"disabled by {ENV_NO_XLA_LIB}"
  elif not os.path.exists(XLA_SO):
    _xla_loaded, _xla_error = False, f"{XLA_SO} not built"
  else:
    try:
      tf.load_op_library(XLA_SO)
      _xla_loaded = True
    except (tf.errors.NotFoundError, OSError) as exc:
      _xla_loaded, _xla_error = False, f"{XLA_SO}: {exc}"


def xla_kernels_available() -> bool:
  """Whether the native XLA kernels are registered (loads the libraries)."""
  core()
  return bool(_xla_loaded)


def xla_unavailable_reason() -> str | None:
  return _xla_error
