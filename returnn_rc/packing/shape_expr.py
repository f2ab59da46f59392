"""Symbolic values of the small int tensors that describe shapes (``tf.shape(x)[:2]``, ``concat(.., [V])``).

The packing rewrite must know, without running the graph, e.g. that a ``Reshape`` to rows keeps the
trailing feature dims, or which entries of a random op's ``shape`` input are the frame dims. This module
evaluates such tensors to a tuple of entries, each an ``int`` (known at graph build time), a
:class:`DimOf` (axis ``axis`` of the tensor named ``tensor``, unknown until run time) or :data:`UNKNOWN`.

Supported ops: constants (anything ``tf.get_static_value`` folds), ``Shape``, ``Rank``, ``Identity``,
``Cast``, ``StridedSlice`` / ``Slice`` / ``GatherV2`` with constant indices, ``ConcatV2`` / ``Pack`` on
axis 0, ``ExpandDims`` of a scalar, ``Prod`` of a vector, and scalar ``Add/Sub/Mul/FloorDiv``.
Anything else evaluates to ``None`` (not known).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DimOf:
  """Axis ``axis`` of the tensor named ``tensor``, whose static size is unknown."""

  tensor: str
  axis: int


class _Unknown:
  def __repr__(self) -> str:
    return "UNKNOWN"


#: An entry whose value depends on more than one run-time dim (e.g. ``B*T``) or on data.
UNKNOWN = _Unknown()

Entry = Union[int, DimOf, _Unknown]
#: A scalar is one entry, a vector a tuple of entries.
Value = Union[Entry, Tuple[Entry, ...]]


class Evaluator:
  """Evaluates int tensors of one graph symbolically; results are memoised per tensor name."""

  def __init__(self):
    self._memo: Dict[str, Optional[Value]] = {}

  def value(self, t: tf.Tensor) -> Optional[Value]:
    """The symbolic value of scalar / vector int tensor ``t``, or None if unknown."""
    if t.name not in self._memo:
      self._memo[t.name] = self._eval(t)
    return self._memo[t.name]

  def vector(self, t: tf.Tensor) -> Optional[Tuple[Entry, ...]]:
    v = self.value(t)
    return v if isinstance(v, tuple) else None

  def ints(self, t: tf.Tensor) -> Optional[Tuple[int, ...]]:
    """``t`` as a tuple of Python ints (a scalar as a 1-tuple), or None if any entry is not known."""
    v = self.value(t)
    if v is None:
      return None
    entries = v if isinstance(v, tuple) else (v,)
    if not all(isinstance(e, int) for e in entries):
      return None
    return tuple(entries)

  def _eval(self, t: tf.Tensor) -> Optional[Value]:  # pylint: disable=too-many-return-statements,too-many-branches
    if t.dtype not in (tf.int32, tf.int64) or t.shape.rank not in (0, 1):
      return None
    op = t.op
    kind = op.type
    if kind == "Shape":
      x = op.inputs[0]
      if x.shape.rank is None:
        return None
      return tuple(int(d) if d is not None else DimOf(x.name, i) for i, d in enumerate(x.shape.as_list()))
    if kind in ("Identity", "Cast", "Snapshot"):
      return self.value(op.inputs[0])
    static = _static(t)
    if static is not None:
      return static
    if kind == "StridedSlice":
      return self._strided_slice(op)
    if kind == "Slice":
      vec, begin, size = self.vector(op.inputs[0]), self.ints(op.inputs[1]), self.ints(op.inputs[2])
      if vec is None or begin is None or size is None or len(begin) != 1 or len(size) != 1:
        return None
      end = len(vec) if size[0] == -1 else begin[0] + size[0]
      return vec[begin[0] : end]
    if kind == "GatherV2":
      vec, idx, axis = self.vector(op.inputs[0]), _static(op.inputs[1]), self.ints(op.inputs[2])
      if vec is None or idx is None or axis != (0,) or op.get_attr("batch_dims") != 0:
        return None
      if isinstance(idx, tuple):
        return tuple(vec[i] for i in idx) if all(-len(vec) <= i < len(vec) for i in idx) else None
      return vec[idx] if -len(vec) <= idx < len(vec) else None
    if kind == "ConcatV2":
      if self.ints(op.inputs[-1]) != (0,):
        return None
      parts = [self.vector(x) for x in op.inputs[:-1]]
      return None if any(p is None for p in parts) else tuple(e for p in parts for e in p)
    if kind == "Pack":
      if op.get_attr("axis") != 0:
        return None
      parts = [self.value(x) for x in op.inputs]
      return None if any(p is None or isinstance(p, tuple) for p in parts) else tuple(parts)
    if kind == "ExpandDims":
      v = self.value(op.inputs[0])
      return (v,) if v is not None and not isinstance(v, tuple) and self.ints(op.inputs[1]) in ((0,), (-1,)) else None
    if kind == "Prod":
      vec = self.vector(op.inputs[0])
      if vec is None or self.ints(op.inputs[1]) not in ((0,), (-1,)) or op.get_attr("keep_dims"):
        return None
      if all(isinstance(e, int) for e in vec):
        return int(np.prod(vec, dtype=np.int64))
      return vec[0] if len(vec) == 1 else UNKNOWN
    if kind in ("Add", "AddV2", "Sub", "Mul", "FloorDiv"):
      a, b = self.value(op.inputs[0]), self.value(op.inputs[1])
      if isinstance(a, int) and isinstance(b, int):
        return {"Sub": a - b, "Mul": a * b, "FloorDiv": a // b if b else None}.get(kind, a + b)
      return None if a is None or b is None or isinstance(a, tuple) or isinstance(b, tuple) else UNKNOWN
    return None

  def _strided_slice(self, op: tf.Operation) -> Optional[Value]:
    vec = self.vector(op.inputs[0])
    begin, end, strides = (self.ints(x) for x in op.inputs[1:4])
    if vec is None or begin is None or end is None or strides is None or len(begin) != 1:
      return None
    if op.get_attr("ellipsis_mask") or op.get_attr("new_axis_mask"):
      return None
    b = None if op.get_attr("begin_mask") & 1 else begin[0]
    e = None if op.get_attr("end_mask") & 1 else end[0]
    if op.get_attr("shrink_axis_mask") & 1:
      return vec[b] if b is not None and -len(vec) <= b < len(vec) else None
    return vec[b : e : strides[0]]


def _static(t: tf.Tensor) -> Optional[Value]:
  """Constant-folded value of ``t`` (scalar int or tuple of ints), or None."""
  try:
    value = tf.get_static_value(t)
  except (TypeError, ValueError, NotImplementedError):
    return None
  if value is None:
    return None
  value = np.asarray(value)
  if value.ndim == 0:
    return int(value)
  if value.ndim == 1:
    return tuple(int(v) for v in value)
  return None
