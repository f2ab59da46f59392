"""Which TF ops are row-wise on the frame axes, and how each is rebuilt on packed frames.

A tensor on the frames of a ``[B,T]`` loss has one of two layouts:

- :data:`FRAME`: ``[B,T,...]`` (batch axis 0, time axis 1); packed: ``[N,...]`` (one axis less);
- :data:`ROWS`: ``[B*T,...]`` (batch-major rows, as after ``reshape(x, [-1, F])``); packed: ``[N,...]``.

``N = sum(seq_lens)``. An op is row-wise if each output frame depends only on the same frame of its
inputs (plus operands without frame axes, such as weights). For such an op a rule returns a
:class:`Spec`: what to do with each input (pack it, reuse it, gather a broadcast operand frame by frame)
and how to rebuild the op on packed tensors (new attrs or constant inputs, e.g. an axis one less).
A rule raises :class:`NotRowWise` for anything it does not handle; the rewrite then ends there.

Rebuilding calls the op's own ``tf.raw_ops`` function with the new inputs and the original attrs
(:func:`clone_op`), so the new op is an ordinary op of the same type: its registered gradient applies.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from returnn_rc.packing import shape_expr

FRAME = "frame"
ROWS = "rows"

# Operand kinds.
PACK = "pack"  # the packed version of the input (recursively rewritten)
REUSE = "reuse"  # the input itself (no frame axes: weights, biases, scalars)
BCAST = "bcast"  # a broadcast operand with some frame axes of size 1: gathered frame by frame

# Spec kinds.
CLONE = "clone"  # the op rebuilt on packed inputs
IDENTITY = "identity"  # packed output = packed input (reshape between FRAME and ROWS)
RECREATE = "recreate"  # a random op re-created on [B,T,...] with the same seed, then packed


class NotRowWise(Exception):
  """The op is not (known to be) row-wise on the frame axes; the message says why."""


@dataclasses.dataclass
class Operand:
  """How the rebuilt op gets one input.

  Attributes:
    kind: :data:`PACK`, :data:`REUSE` or :data:`BCAST`.
    layout: for PACK: the layout of the input.
    batch_axis / time_axis: for BCAST: the input's axis of the batch / time dim (None if the input
      does not have that axis), and whether it varies along it (size != 1).
  """

  kind: str
  layout: Optional[str] = None
  batch_axis: Optional[int] = None
  time_axis: Optional[int] = None
  batch_varies: bool = False
  time_varies: bool = False


@dataclasses.dataclass
class Spec:
  """How to rebuild one op on packed frames (see the module docstring)."""

  kind: str
  operands: List[Operand]
  attrs: Dict[str, Any] = dataclasses.field(default_factory=dict)  # attr overrides
  const_inputs: Dict[int, Any] = dataclasses.field(default_factory=dict)  # input index -> new constant
  identity_input: int = 0  # for IDENTITY
  shape_rest: Tuple[int, ...] = ()  # for RECREATE: the static dims after [B,T]


Rule = Callable[[tf.Operation, int, str, shape_expr.Evaluator], Spec]


# --- helpers ------------------------------------------------------------------------------------


def rank_of(t: tf.Tensor) -> int:
  rank = t.shape.rank
  if rank is None:
    raise NotRowWise(f"{t.name} has unknown rank")
  return rank


def check_layout(t: tf.Tensor, layout: str) -> int:
  """Rank of ``t``; NotRowWise unless it can have ``layout`` (FRAME: rank >= 2, ROWS: rank >= 1)."""
  rank = rank_of(t)
  if rank < (2 if layout == FRAME else 1):
    raise NotRowWise(f"{t.name} of rank {rank} cannot be on {layout} layout")
  return rank


def num_frame_axes(layout: str) -> int:
  return 2 if layout == FRAME else 1


def packed_axis(axis: int, rank: int, layout: str) -> int:
  """Axis ``axis`` of a ``rank``-d tensor on ``layout`` in the packed tensor; NotRowWise for a frame axis."""
  if not -rank <= axis < rank:
    raise NotRowWise(f"axis {axis} out of range for rank {rank}")
  axis %= rank
  nf = num_frame_axes(layout)
  if axis < nf:
    raise NotRowWise(f"axis {axis} is a frame axis")
  return axis - nf + 1


def _const_ints(ev: shape_expr.Evaluator, t: tf.Tensor, what: str) -> Tuple[int, ...]:
  value = ev.ints(t)
  if value is None:
    raise NotRowWise(f"{what} {t.name} is not a constant")
  return value


def _static_dim(t: tf.Tensor, axis: int) -> Optional[int]:
  return t.shape.as_list()[axis]


def broadcast_operand(x: tf.Tensor, out_rank: int, layout: str) -> Operand:
  """Operand ``x`` of a broadcasting elementwise op whose output has rank ``out_rank`` on ``layout``.

  Full-size frame axes (static size unknown or > 1) are packed; a frame axis of static size 1 makes a
  broadcast operand; an operand too short to reach the frame axes is reused as it is.
  """
  rank = rank_of(x)
  if rank > out_rank:
    raise NotRowWise(f"operand {x.name} has a higher rank than the output")
  offset = out_rank - rank  # x's axis i is output axis i + offset
  nf = num_frame_axes(layout)
  if offset >= nf:
    return Operand(REUSE)
  dims = x.shape.as_list()
  axes = {out_axis: out_axis - offset for out_axis in range(offset, nf)}  # output frame axis -> x axis
  varies = {out_axis: dims[ax] != 1 for out_axis, ax in axes.items()}
  if offset == 0 and all(varies.values()):
    return Operand(PACK, layout=layout)
  if not any(varies.values()) and offset == nf - 1:
    return Operand(REUSE)  # e.g. [1,C] against a packed [N,C]
  return Operand(
    BCAST,
    batch_axis=axes.get(0),
    time_axis=axes.get(1),
    batch_varies=varies.get(0, False),
    time_varies=varies.get(1, False),
  )


# --- rules --------------------------------------------------------------------------------------


def _unary(op, out_index, layout, ev):
  del out_index, ev
  check_layout(op.inputs[0], layout)
  return Spec(CLONE, [Operand(PACK, layout=layout)] + [Operand(REUSE)] * (len(op.inputs) - 1))


def _elementwise(op, out_index, layout, ev):
  del ev
  out_rank = check_layout(op.outputs[out_index], layout)
  return Spec(CLONE, [broadcast_operand(x, out_rank, layout) for x in op.inputs])


def _add_n(op, out_index, layout, ev):
  del ev
  out_rank = check_layout(op.outputs[out_index], layout)
  if any(rank_of(x) != out_rank for x in op.inputs):
    raise NotRowWise("AddN with inputs of different ranks")
  return Spec(CLONE, [Operand(PACK, layout=layout) for _ in op.inputs])


def _select_v1(op, out_index, layout, ev):
  if rank_of(op.inputs[0]) != rank_of(op.outputs[out_index]):
    raise NotRowWise("Select with a condition vector (selects whole batch entries)")
  return _elementwise(op, out_index, layout, ev)


def _bias_add(op, out_index, layout, ev):
  del out_index, ev
  if op.get_attr("data_format") not in (b"NHWC", "NHWC"):
    raise NotRowWise("BiasAdd with data_format NCHW")
  check_layout(op.inputs[0], layout)
  if rank_of(op.inputs[0]) - num_frame_axes(layout) < 1:
    raise NotRowWise("BiasAdd on a tensor without feature axis")
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)])


def _last_axis(op, out_index, layout, ev):
  """Softmax / LogSoftmax: over the last axis, which must be a feature axis."""
  del out_index, ev
  rank = check_layout(op.inputs[0], layout)
  packed_axis(-1, rank, layout)
  return Spec(CLONE, [Operand(PACK, layout=layout)])


def _xent(op, out_index, layout, ev):
  """(Sparse)SoftmaxCrossEntropyWithLogits: 2-D features [rows, C], per-row outputs."""
  del out_index, ev
  if layout != ROWS or rank_of(op.inputs[0]) != 2:
    raise NotRowWise("cross entropy op with features not on [B*T, C] rows")
  labels = Operand(PACK, layout=ROWS)
  if op.type == "SoftmaxCrossEntropyWithLogits":
    labels = broadcast_operand(op.inputs[1], 2, ROWS)
  return Spec(CLONE, [Operand(PACK, layout=ROWS), labels])


def _arg_reduce(op, out_index, layout, ev):
  """ArgMax / ArgMin over a feature axis."""
  del out_index
  rank = check_layout(op.inputs[0], layout)
  (axis,) = _const_ints(ev, op.inputs[1], "dimension")
  new = packed_axis(axis, rank, layout)
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)], const_inputs={1: new})


def _reduce(op, out_index, layout, ev):
  """Sum / Mean / Max / ... over feature axes only."""
  del out_index
  rank = check_layout(op.inputs[0], layout)
  axes = _const_ints(ev, op.inputs[1], "reduction_indices")
  new = [packed_axis(a, rank, layout) for a in axes]
  value = new if rank_of(op.inputs[1]) == 1 else new[0]
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)], const_inputs={1: value})


def _matmul(op, out_index, layout, ev):
  """MatMul: rows [B*T, F] @ weight [F, V] (transpose_a must be False; the weight has no frame axis)."""
  del out_index, ev
  if layout != ROWS or op.get_attr("transpose_a"):
    raise NotRowWise("MatMul whose first operand is not [B*T, F] rows")
  return Spec(CLONE, [Operand(PACK, layout=ROWS), Operand(REUSE)])


def _batch_matmul(op, out_index, layout, ev):
  """BatchMatMul(V2/V3): x ``[B,T,...,F]`` @ y, row-wise when the frame axes of x are its batch / row axes
  (not its contracted last axis, adj_x False) and y's batch dims do not reach them (e.g. y ``[F,V]``)."""
  del out_index, ev
  x_rank = check_layout(op.inputs[0], layout)
  y_rank = rank_of(op.inputs[1])
  nf = num_frame_axes(layout)
  if op.get_attr("adj_x") or x_rank < nf + 1:
    raise NotRowWise("BatchMatMul that contracts a frame axis of its first operand")
  frame_batch_axes = min(nf, x_rank - 2)  # frame axes among x's batch dims (the others: x's row axis)
  if not (y_rank == 2 or x_rank - y_rank >= frame_batch_axes):
    raise NotRowWise("BatchMatMul whose second operand has frame axes")
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)])


def _einsum(op, out_index, layout, ev):
  """Einsum where the frame subscripts lead the output and the operands that have them, and nothing else."""
  del out_index, ev
  equation = op.get_attr("equation")
  equation = equation.decode() if isinstance(equation, bytes) else equation
  if "..." in equation or "->" not in equation:
    raise NotRowWise(f"einsum equation {equation!r} (ellipsis / implicit output)")
  lhs, out = equation.replace(" ", "").split("->")
  terms = lhs.split(",")
  nf = num_frame_axes(layout)
  if len(out) < nf or len(set(out[:nf])) != nf:
    raise NotRowWise(f"einsum {equation!r}: output without frame axes in front")
  frame = out[:nf]
  operands, new_terms = [], []
  for term in terms:
    has = [c in frame for c in term]
    if not any(has):
      operands.append(Operand(REUSE))
      new_terms.append(term)
    elif term[:nf] == frame and not any(has[nf:]):
      operands.append(Operand(PACK, layout=layout))
      new_terms.append(term[nf - 1 :] if layout == FRAME else term)
    else:
      raise NotRowWise(f"einsum {equation!r}: operand {term!r} has the frame axes elsewhere")
  new_out = out[nf - 1 :] if layout == FRAME else out
  return Spec(CLONE, operands, attrs={"equation": ",".join(new_terms) + "->" + new_out})


def _gather(op, out_index, layout, ev):
  """Embedding lookup: gather rows of a table [V, E] with ids on the frames (axis 0, no batch_dims)."""
  del out_index
  if op.type in ("GatherV2",):
    if _const_ints(ev, op.inputs[2], "axis") != (0,):
      raise NotRowWise("gather on an axis other than 0")
  if op.type != "Gather" and op.get_attr("batch_dims") != 0:
    raise NotRowWise("gather with batch_dims")
  ids = op.inputs[1]
  check_layout(ids, layout)
  operands = [Operand(REUSE), Operand(PACK, layout=layout)] + [Operand(REUSE)] * (len(op.inputs) - 2)
  return Spec(CLONE, operands)


def _concat(op, out_index, layout, ev):
  """ConcatV2 on a feature axis (all inputs on the same frames)."""
  rank = check_layout(op.outputs[out_index], layout)
  (axis,) = _const_ints(ev, op.inputs[-1], "axis")
  new = packed_axis(axis, rank, layout)
  operands = []
  for x in op.inputs[:-1]:
    if rank_of(x) != rank:
      raise NotRowWise("concat inputs of different ranks")
    operands.append(Operand(PACK, layout=layout))
  return Spec(CLONE, operands + [Operand(REUSE)], const_inputs={len(op.inputs) - 1: new})


def _transpose(op, out_index, layout, ev):
  """Transpose that keeps the frame axes in front."""
  del out_index
  rank = check_layout(op.inputs[0], layout)
  perm = _const_ints(ev, op.inputs[1], "perm")
  nf = num_frame_axes(layout)
  if len(perm) != rank or tuple(perm[:nf]) != tuple(range(nf)):
    raise NotRowWise(f"transpose {perm} moves a frame axis")
  new = [0] + [p - nf + 1 for p in perm[nf:]]
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)], const_inputs={1: new})


def _expand_dims(op, out_index, layout, ev):
  out_rank = check_layout(op.outputs[out_index], layout)
  (axis,) = _const_ints(ev, op.inputs[1], "axis")
  new = packed_axis(axis, out_rank, layout)
  return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)], const_inputs={1: new})


def _squeeze(op, out_index, layout, ev):
  del out_index, ev
  rank = check_layout(op.inputs[0], layout)
  dims = list(op.get_attr("squeeze_dims"))
  if not dims:
    raise NotRowWise("squeeze without explicit axes (could remove a frame axis of size 1)")
  return Spec(
    CLONE, [Operand(PACK, layout=layout)], attrs={"squeeze_dims": [packed_axis(a, rank, layout) for a in dims]}
  )


def _one_hot(op, out_index, layout, ev):
  del ev
  out_rank = check_layout(op.outputs[out_index], layout)
  axis = op.get_attr("axis")
  new = packed_axis(out_rank - 1 if axis == -1 else axis, out_rank, layout)
  return Spec(CLONE, [Operand(PACK, layout=layout)] + [Operand(REUSE)] * 3, attrs={"axis": -1 if axis == -1 else new})


def _trailing_dims_equal(
  big: tf.Tensor, big_shape: Optional[Sequence], small: tf.Tensor, small_shape: Optional[Sequence]
) -> bool:
  """Whether ``big``'s dims from axis 2 equal ``small``'s dims from axis 1 (statically or symbolically).

  ``big_shape`` / ``small_shape``: symbolic entries of the tensors' shapes where known (a Reshape's
  shape operand), else None.
  """
  b_rank, s_rank = rank_of(big), rank_of(small)
  if b_rank != s_rank + 1:
    return False
  for k in range(1, s_rank):
    b_entry = _entry(big, k + 1, big_shape)
    s_entry = _entry(small, k, small_shape)
    if b_entry is None or s_entry is None or b_entry != s_entry:
      return False
  return True


def _entry(t: tf.Tensor, axis: int, sym: Optional[Sequence]):
  """Static size of ``t``'s axis, else the symbolic entry of its shape operand, else DimOf(t, axis)."""
  static = _static_dim(t, axis)
  if static is not None:
    return static
  if sym is not None and axis < len(sym):
    entry = sym[axis]
    if entry is shape_expr.UNKNOWN or (isinstance(entry, int) and entry < 0):
      return None
    return entry
  return shape_expr.DimOf(t.name, axis)


def _reshape(op, out_index, layout, ev):
  """Reshape between [B,T,F...] and [B*T,F...] (an identity on packed frames), or on feature axes only."""
  x, out = op.inputs[0], op.outputs[out_index]
  out_rank = check_layout(out, layout)
  x_rank = rank_of(x)
  sym = ev.vector(op.inputs[1])
  if layout == FRAME and x_rank == out_rank - 1 and x_rank >= 1:
    # Reshape back [B*T, F...] -> [B,T,F...]: the output is on the frames, so the input rows are b-major.
    if _trailing_dims_equal(out, sym, x, None):
      return Spec(IDENTITY, [Operand(PACK, layout=ROWS), Operand(REUSE)], identity_input=0)
    raise NotRowWise("reshape to [B,T,...] that also changes the feature dims")
  if layout == ROWS and x_rank == out_rank + 1:
    # Reshape [B,T,F...] -> [B*T, F...] (batch-major rows).
    if _trailing_dims_equal(x, None, out, sym):
      return Spec(IDENTITY, [Operand(PACK, layout=FRAME), Operand(REUSE)], identity_input=0)
    raise NotRowWise("reshape to rows that also changes the feature dims")
  # Reshape of the feature dims only: the target keeps the frame dims (read from the shape of a tensor
  # on the same frames, e.g. reshape(y, tf.shape(result)) in reduce_logsumexp) and the static features
  # hold the same number of elements.
  nf = num_frame_axes(layout)
  if x_rank >= nf and sym is not None and len(sym) == out_rank:
    keeps_frames = all(isinstance(sym[i], shape_expr.DimOf) and sym[i].axis == i for i in range(nf))
    rest, x_rest = sym[nf:], x.shape.as_list()[nf:]
    if (
      keeps_frames
      and all(isinstance(e, int) and e >= 0 for e in rest)
      and None not in x_rest
      and int(np.prod(rest, dtype=np.int64)) == int(np.prod(x_rest, dtype=np.int64))
    ):
      return Spec(CLONE, [Operand(PACK, layout=layout), Operand(REUSE)], const_inputs={1: [-1] + list(rest)})
  raise NotRowWise("reshape that is neither [B,T,F]<->[B*T,F] nor on static feature dims only")


_STATEFUL_RANDOM = ("RandomUniform", "RandomStandardNormal", "TruncatedNormal")
_STATELESS_RANDOM = (
  "StatelessRandomUniformV2",
  "StatelessRandomNormalV2",
  "StatelessTruncatedNormalV2",
  "StatelessRandomUniform",
  "StatelessRandomNormal",
  "StatelessTruncatedNormal",
)


def _random(op, out_index, layout, ev):
  """A random op drawing [B,T,...] (e.g. the dropout mask): re-created with the same seeds on a shape
  built from the frame dims, so it draws the very same numbers without reading the shape of an
  unpacked tensor; then packed."""
  if layout != FRAME:
    raise NotRowWise("random op on rows")
  out_rank = check_layout(op.outputs[out_index], layout)
  sym = ev.vector(op.inputs[0])
  if sym is None or len(sym) != out_rank:
    raise NotRowWise("random op whose shape is not known symbolically")
  rest = sym[2:]
  if not all(isinstance(e, int) for e in rest):
    raise NotRowWise("random op whose feature dims are not static")
  return Spec(RECREATE, [Operand(REUSE)] * len(op.inputs), shape_rest=tuple(rest))


#: Elementwise and data-movement op types: rebuilding one costs about what packing its output costs.
CHEAP: set = {"ConcatV2", "Transpose", "ExpandDims", "Squeeze", "Identity"}


def _rules() -> Dict[str, Rule]:
  table: Dict[str, Rule] = {}
  unary = (
    "Abs Acos Acosh Asin Asinh Atan Atanh Ceil CheckNumerics Cos Cosh Digamma Elu Erf Erfc Exp Expm1 Floor "
    "Identity Inv Invert IsFinite IsInf IsNan LeakyRelu Lgamma Log Log1p LogicalNot Neg OnesLike Reciprocal "
    "Relu Relu6 Rint Round Rsqrt Selu Sigmoid Sign Sin Sinh Snapshot Softplus Softsign Sqrt Square StopGradient "
    "Tan Tanh ZerosLike Cast"
  ).split()
  binary = (
    "Add AddV2 Atan2 Div DivNoNan Equal FloorDiv FloorMod Greater GreaterEqual Less LessEqual LogicalAnd "
    "LogicalOr Maximum Minimum Mul MulNoNan NotEqual Pow RealDiv SquaredDifference Sub TruncateDiv TruncateMod "
    "Xdivy Xlog1py Xlogy SelectV2 ClipByValue"
  ).split()
  CHEAP.update(unary + binary + ["AddN", "Select"])
  for name in unary:
    table[name] = _unary
  for name in binary:
    table[name] = _elementwise
  table.update(
    {
      "AddN": _add_n,
      "Select": _select_v1,
      "BiasAdd": _bias_add,
      "Softmax": _last_axis,
      "LogSoftmax": _last_axis,
      "SparseSoftmaxCrossEntropyWithLogits": _xent,
      "SoftmaxCrossEntropyWithLogits": _xent,
      "ArgMax": _arg_reduce,
      "ArgMin": _arg_reduce,
      "MatMul": _matmul,
      "BatchMatMul": _batch_matmul,
      "BatchMatMulV2": _batch_matmul,
      "BatchMatMulV3": _batch_matmul,
      "Einsum": _einsum,
      "GatherV2": _gather,
      "ResourceGather": _gather,
      "Gather": _gather,
      "ConcatV2": _concat,
      "Transpose": _transpose,
      "ExpandDims": _expand_dims,
      "Squeeze": _squeeze,
      "OneHot": _one_hot,
      "Reshape": _reshape,
    }
  )
  for name in ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "EuclideanNorm"):
    table[name] = _reduce
  for name in _STATEFUL_RANDOM + _STATELESS_RANDOM:
    table[name] = _random
  return table


#: op type -> rule.
RULES: Dict[str, Rule] = _rules()


def spec_for(op: tf.Operation, out_index: int, layout: str, ev: shape_expr.Evaluator) -> Spec:
  """The rebuild spec of ``op`` whose output ``out_index`` is on ``layout``; NotRowWise if not row-wise."""
  rule = RULES.get(op.type)
  if rule is None:
    raise NotRowWise(f"op type {op.type} is not known to be row-wise")
  if op._control_flow_context is not None:  # pylint: disable=protected-access
    raise NotRowWise("op inside a while_loop / cond body")
  return rule(op, out_index, layout, ev)


# --- rebuilding ---------------------------------------------------------------------------------

_XLA_ATTRS = ("_XlaCompile", "_XlaScope", "_XlaSeparateCompiledGradients")

# op-def names that the tf.raw_ops function spells differently (its ApiDef renames them).
_REDUCE_RENAMES = {"reduction_indices": "axis"}
_RAW_RENAMES: Dict[str, Dict[str, str]] = {
  **{name: _REDUCE_RENAMES for name in ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "EuclideanNorm")},
  "ExpandDims": {"dim": "axis"},
  "Select": {"t": "x", "e": "y"},
  "Squeeze": {"squeeze_dims": "axis"},
}


def raw_op_kwargs(
  op: tf.Operation, inputs: Sequence[tf.Tensor], attrs: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
  """Keyword arguments of ``tf.raw_ops.<op.type>`` that rebuild ``op`` on ``inputs`` (op-def order).

  Type attrs are left to be inferred from the inputs; the other attrs are ``op``'s, or ``attrs``'s.
  NotRowWise if the raw-op function's parameters do not match (a TF version that renamed one).
  """
  op_def = op.op_def
  kwargs: Dict[str, Any] = {}
  inferred = set()
  idx = 0
  for arg in op_def.input_arg:
    if arg.number_attr or arg.type_list_attr:
      n = op.get_attr(arg.number_attr) if arg.number_attr else len(op.get_attr(arg.type_list_attr))
      kwargs[arg.name] = list(inputs[idx : idx + n])
      idx += n
      inferred.update(a for a in (arg.number_attr, arg.type_list_attr) if a)
    else:
      kwargs[arg.name] = inputs[idx]
      idx += 1
    if arg.type_attr:
      inferred.add(arg.type_attr)
  for attr in op_def.attr:
    if attr.name not in inferred:
      kwargs[attr.name] = op.get_attr(attr.name)
  kwargs.update(attrs or {})
  renames = _RAW_RENAMES.get(op.type, {})
  kwargs = {renames.get(k, k): v for k, v in kwargs.items()}
  fn = getattr(tf.raw_ops, op.type, None)
  params = set(inspect.signature(fn).parameters) if fn is not None else set()
  unknown = sorted(set(kwargs) - params)
  if fn is None or unknown:
    raise NotRowWise(f"tf.raw_ops.{op.type} does not take {unknown or 'these arguments'}")
  return kwargs


def clone_op(
  op: tf.Operation, inputs: Sequence[tf.Tensor], attrs: Optional[Dict[str, Any]] = None, name: Optional[str] = None
) -> tf.Operation:
  """A new op of ``op``'s type and attrs (``attrs`` overriding some) on ``inputs`` (one per input of ``op``).

  Calls ``tf.raw_ops.<type>`` (see :func:`raw_op_kwargs`). The XLA clustering attrs of ``op`` are
  copied too, so the clone compiles (or not) as the original does.
  """
  kwargs = raw_op_kwargs(op, inputs, attrs)
  fn = getattr(tf.raw_ops, op.type)
  result = fn(**kwargs, name=name or op.name.rsplit("/", 1)[-1])
  first = result if isinstance(result, (tf.Tensor, tf.Operation)) else result[0]
  new_op = first if isinstance(first, tf.Operation) else first.op
  for key in _XLA_ATTRS:
    if key in op.node_def.attr:
      new_op._set_attr(key, op.node_def.attr[key])  # pylint: disable=protected-access
  return new_op
