"""Is a checkpoint one of this model? ONE reader-based check, used by the engine (resume) and the export.

A checkpoint (``tf.compat.v1.train.Saver`` prefix) is opened with TensorFlow's reader
(``tf.train.load_checkpoint``), and its variable names, shapes and dtypes are compared with the
variables a graph expects (:func:`variable_specs`). Nothing is restored here, so a mismatch is found
before any variable is touched, and each difference is named:

- ``missing variable 'w' (shape [3, 5])``: the graph has it, the checkpoint does not;
- ``unexpected variable 'v' (shape [2])``: the checkpoint has it, the graph does not (an error
  only where the caller asks for an exact match, as the engine does; the export restores a subset);
- ``variable 'w' has shape [4, 5] in the checkpoint, the graph expects [3, 5]`` (or ``dtype``).

This module is core: it knows nothing of the engine or the export.
"""

from __future__ import annotations

import os
from typing import Any, Collection, Dict, List, Mapping, Tuple

import tensorflow as tf

#: Variable name (without ``:0``) → (shape, dtype name), e.g. ``{"w": ([3, 5], "float32")}``.
VariableSpecs = Dict[str, Tuple[List[int], str]]

#: How many names of each kind of difference a message lists before it says "... and N more".
MAX_LISTED = 5


def resolve_checkpoint(checkpoint_path: str) -> str:
  """A checkpoint prefix; a directory gives its latest checkpoint. ``ValueError`` if there is none."""
  if not isinstance(checkpoint_path, str) or not checkpoint_path:
    raise ValueError(f"checkpoint_path must be a checkpoint prefix or directory, got {checkpoint_path!r}")
  if os.path.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if latest is None:
      raise ValueError(f"checkpoint directory {checkpoint_path!r} holds no checkpoint (no 'checkpoint' index file)")
    return latest
  if not tf.io.gfile.exists(checkpoint_path + ".index"):
    raise ValueError(
      f"checkpoint {checkpoint_path!r} does not exist (expected a tf.compat.v1.train.Saver "
      f"prefix such as 'train_dir/model.003', or a directory)"
    )
  return checkpoint_path


def variable_specs(variables) -> VariableSpecs:
  """Name (without ``:0``) → (shape, base dtype name) of each variable (a ``tf.Variable`` list)."""
  return {v.op.name: ([int(s) for s in v.shape.as_list()], v.dtype.base_dtype.name) for v in variables}


def open_reader(path: str):
  """``tf.train.load_checkpoint(path)``; a missing or unreadable checkpoint raises TF's error
  (``tf.errors.OpError`` / ``ValueError``), which callers name with :func:`describe_error`."""
  return tf.train.load_checkpoint(path)


def reader_specs(reader) -> VariableSpecs:
  """The :data:`VariableSpecs` stored in a checkpoint, from its reader."""
  shapes = reader.get_variable_to_shape_map()
  dtypes = reader.get_variable_to_dtype_map()
  return {name: ([int(s) for s in shape], dtypes[name].base_dtype.name) for name, shape in shapes.items()}


def mismatches(
  stored: Mapping[str, Tuple[List[int], str]],
  expected: Mapping[str, Tuple[List[int], str]],
  *,
  optional: Collection[str] = (),
  allow_unexpected: bool = False,
) -> List[str]:
  """The differences between the checkpoint's variables ``stored`` and the graph's ``expected``.

  Args:
    stored: :func:`reader_specs` of the checkpoint.
    expected: :func:`variable_specs` of the graph's variables.
    optional: names that the checkpoint may lack (e.g. the graph state's step / epoch).
    allow_unexpected: whether the checkpoint may hold variables the graph does not have.
  Returns:
    one message per kind of difference (see the module docstring); empty if the checkpoint fits.
  """
  problems: List[str] = []
  missing = [
    f"missing variable {n!r} (shape {expected[n][0]})"
    for n in sorted(expected)
    if n not in stored and n not in optional
  ]
  problems += _capped(missing, "missing variables")
  if not allow_unexpected:
    extra = [f"unexpected variable {n!r} (shape {stored[n][0]})" for n in sorted(stored) if n not in expected]
    problems += _capped(extra, "unexpected variables")
  differ = []
  for name in sorted(set(stored) & set(expected)):
    (s_shape, s_dtype), (e_shape, e_dtype) = stored[name], expected[name]
    if list(s_shape) != list(e_shape):
      differ.append(f"variable {name!r} has shape {list(s_shape)} in the checkpoint, the graph expects {list(e_shape)}")
    elif s_dtype != e_dtype:
      differ.append(f"variable {name!r} has dtype {s_dtype} in the checkpoint, the graph expects {e_dtype}")
  problems += _capped(differ, "variables of another shape or dtype")
  return problems


def check_checkpoint(
  path: str,
  expected: Mapping[str, Tuple[List[int], str]],
  *,
  what: str,
  optional: Collection[str] = (),
  allow_unexpected: bool = False,
):
  """Opens ``path`` with the reader and checks it against ``expected`` (see :func:`mismatches`).

  Returns:
    the reader.
  Raises:
    ValueError: ``"checkpoint <path> does not match <what>: <differences>"``.
  """
  reader = open_reader(path)
  problems = mismatches(reader_specs(reader), expected, optional=optional, allow_unexpected=allow_unexpected)
  if problems:
    raise ValueError(f"checkpoint {path!r} does not match {what}: " + "; ".join(problems))
  return reader


def restorable_variables(path: str, variables, *, what: str, optional: Collection[str] = ()) -> Dict[str, Any]:
  """Checks checkpoint ``path`` against ``variables`` (:func:`check_checkpoint`; the checkpoint may hold more,
  names in ``optional`` may be absent) and returns ``{name: variable}`` of those it holds: what a ``Saver``
  restores; the others keep their initial values. ``ValueError`` as :func:`check_checkpoint`."""
  reader = check_checkpoint(path, variable_specs(variables), what=what, optional=optional, allow_unexpected=True)
  return {v.op.name: v for v in variables if reader.has_tensor(v.op.name)}


def describe_error(exc: BaseException) -> str:
  """A one-line description of a TF error of a broken checkpoint (no stack trace), e.g.
  ``"DataLossError: not an sstable (bad magic number)"``."""
  skip = ("Graph execution error", "Detected at node", "File ", "Node:", "Original stack trace", "[[")
  for line in str(exc).splitlines():
    line = line.strip()
    if line and not line.startswith(skip) and not line.endswith("(most recent call last):"):
      return f"{type(exc).__name__}: {line}"
  return type(exc).__name__


def _capped(items: List[str], kind: str) -> List[str]:
  if len(items) <= MAX_LISTED:
    return items
  return items[:MAX_LISTED] + [f"... and {len(items) - MAX_LISTED} more {kind}"]
