"""Python API of the FlattenWithSeqLenMask op (and its inverse).

Padded ``[B,T,...]`` tensors (any placement of the batch / time axes) are
packed to ``[sum(seq_lens), ...rest]`` by our own kernel: one graph node of
type ``FlattenWithSeqLenMask``; its gradient is ``UnflattenWithSeqLenMask``
and vice versa, so first and second derivatives are exact.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from returnn_rc.ops import _fallback, _loader

SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)
LEN_DTYPES = (tf.int32, tf.int64)


def _normalise_axes(rank: int | None, batch_axis, time_axis, what: str) -> tuple[int, int]:
  for name, axis in (("batch_dim_axis", batch_axis), ("time_dim_axis", time_axis)):
    if not isinstance(axis, int) or isinstance(axis, bool):
      raise TypeError(f"{name} must be an int, got {axis!r}")
    if rank is not None and not -rank <= axis < rank:
      raise ValueError(f"{name} = {axis} is out of range for {what} of rank {rank}")
  if rank is not None:
    batch_axis, time_axis = batch_axis % rank, time_axis % rank
  if batch_axis == time_axis:
    raise ValueError(f"batch_dim_axis and time_dim_axis must differ, both are {batch_axis}")
  return batch_axis, time_axis


def _check_dtypes(data: tf.Tensor, seq_lens: tf.Tensor, what: str):
  if data.dtype not in SUPPORTED_DTYPES:
    raise TypeError(f"{what} has dtype {data.dtype.name}, supported: {', '.join(d.name for d in SUPPORTED_DTYPES)}")
  if seq_lens.dtype not in LEN_DTYPES:
    raise TypeError(f"seq_lens must be int32 or int64, got {seq_lens.dtype.name}")
  if seq_lens.shape.rank is not None and seq_lens.shape.rank != 1:
    raise ValueError(f"seq_lens must have rank 1 ([B]), got shape {seq_lens.shape}")


def _in_xla_context() -> bool:
  """XLA control-flow context or a ``jit_scope`` (tf.function(jit_compile=True) is not detectable)."""
  graph = tf.compat.v1.get_default_graph()
  if control_flow_util.GraphOrParentsInXlaContext(graph):
    return True
  attr = getattr(graph, "_attr_scope_map", {}).get("_XlaCompile")
  return bool(attr is not None and attr.b)


def _fallback_lens(seq_lens: tf.Tensor) -> tf.Tensor:
  """``seq_lens`` of unknown rank as ``[B]`` for the fallback (a run-time check, as the kernel's)."""
  return tf.ensure_shape(seq_lens, [None]) if seq_lens.shape.rank is None else seq_lens


def _time_major(time_major) -> bool:
  if time_major not in (None, True, False):
    raise TypeError(f"time_major must be None or a bool, got {time_major!r}")
  return bool(time_major)


def flatten_with_seq_len_mask(
  x,
  seq_lens,
  *,
  batch_dim_axis: int = 0,
  time_dim_axis: int = 1,
  time_major: bool | None = None,
  name: str | None = None,
) -> tf.Tensor:
  """Removes the padded frames of ``x``.

  Bad input: wrong dtypes / ranks / axes raise TypeError / ValueError at graph build time;
  at run time ``seq_lens`` outside ``[0,T]`` or a batch mismatch raise InvalidArgumentError.
  Under XLA (jit_compile, jit_scope, auto-clustering) there are no run-time errors: lengths
  are clamped to ``[0,T]`` and the result has a bounded dynamic first dim (bound B*T).

  Args:
    x: ``[B,T,...]`` (batch at ``batch_dim_axis``, time at ``time_dim_axis``, any placement),
      dtype float16 / bfloat16 / float32 / float64 / int32 / int64.
    seq_lens: ``[B]`` int32 or int64, each in ``[0,T]``.
    batch_dim_axis: the axis of ``B`` in ``x`` (negative: from the end).
    time_dim_axis: the axis of ``T`` in ``x`` (negative: from the end).
    time_major: packed frame order: False / None (default): b then t, i.e. like
      ``tf.boolean_mask(x, tf.sequence_mask(seq_lens, T))`` with batch, time moved to the
      front; True: t then b (RETURNN's ``flatten_with_seq_len_mask_time_major``).
      It does not describe the layout of ``x`` (the axes do).
    name: name scope of the op.

  Returns:
    ``[sum(seq_lens), ...rest]``, rest = the other dims of ``x`` in their order.
  """
  with tf.name_scope(name or "flatten_with_seq_len_mask"):
    x = tf.convert_to_tensor(x)
    seq_lens = tf.convert_to_tensor(seq_lens)
    _check_dtypes(x, seq_lens, "x")
    rank = x.shape.rank
    if rank is not None and rank < 2:
      raise ValueError(f"x must have rank >= 2 ([B,T,...]), got shape {x.shape}")
    batch_axis, time_axis = _normalise_axes(rank, batch_dim_axis, time_dim_axis, "x")
    if rank is not None and seq_lens.shape.rank == 1:
      b_x, b_l = x.shape[batch_axis], seq_lens.shape[0]
      if b_x is not None and b_l is not None and b_x != b_l:
        raise ValueError(f"batch mismatch: x.shape[{batch_axis}] = {b_x} but seq_lens has {b_l} entries")
    major = _time_major(time_major)
    if _loader.use_fallback() or (rank is not None and _in_xla_context() and not _xla_ok()):
      if rank is None:
        raise ValueError("the pure-TF fallback needs x with known rank")
      return _fallback.flatten(x, _fallback_lens(seq_lens), batch_axis, time_axis, major, strict=not _in_xla_context())
    return _loader.core().flatten_with_seq_len_mask(
      x, seq_lens, batch_axis=batch_axis, time_axis=time_axis, time_major=major
    )


def unflatten_with_seq_len_mask(
  packed,
  seq_lens,
  max_time,
  *,
  batch_dim_axis: int = 0,
  time_dim_axis: int = 1,
  time_major: bool | None = None,
  name: str | None = None,
) -> tf.Tensor:
  """Inverse of :func:`flatten_with_seq_len_mask`.

  Args:
    packed: ``[N,...rest]`` frames in the order given by ``time_major`` (see flatten),
      ``N = sum(seq_lens)``.
    seq_lens: ``[B]`` int32 / int64, each in ``[0, max_time]``.
    max_time: scalar T.
    batch_dim_axis: the axis of ``B`` in the output (negative: from the end).
    time_dim_axis: the axis of ``T`` in the output (negative: from the end).
    time_major: the order of the frames in ``packed`` (see flatten).
    name: name scope of the op.

  Returns:
    padded ``[B,T,...rest]`` (batch / time at ``batch_dim_axis`` / ``time_dim_axis`` of the
    output, rank = rank(packed) + 1), zeros in the padding.
  """
  with tf.name_scope(name or "unflatten_with_seq_len_mask"):
    packed = tf.convert_to_tensor(packed)
    seq_lens = tf.convert_to_tensor(seq_lens)
    _check_dtypes(packed, seq_lens, "packed")
    max_time = tf.convert_to_tensor(max_time)
    if not max_time.dtype.is_integer:
      raise TypeError(f"max_time must be an integer, got {max_time.dtype.name}")
    if max_time.shape.rank not in (None, 0):
      raise ValueError(f"max_time must be a scalar, got shape {max_time.shape}")
    max_time = tf.cast(max_time, seq_lens.dtype)
    rank = None if packed.shape.rank is None else packed.shape.rank + 1
    if rank is not None and rank < 2:
      raise ValueError("packed must have rank >= 1 ([N,...])")
    batch_axis, time_axis = _normalise_axes(rank, batch_dim_axis, time_dim_axis, "the output")
    major = _time_major(time_major)
    if _loader.use_fallback() or (rank is not None and _in_xla_context() and not _xla_ok()):
      if rank is None:
        raise ValueError("the pure-TF fallback needs packed with known rank")
      return _fallback.unflatten(
        packed, _fallback_lens(seq_lens), max_time, batch_axis, time_axis, major, strict=not _in_xla_context()
      )
    return _loader.core().unflatten_with_seq_len_mask(
      packed, seq_lens, max_time, batch_axis=batch_axis, time_axis=time_axis, time_major=major
    )


def _xla_ok() -> bool:
  return _loader.xla_kernels_available()


def _axes(op):
  return dict(
    batch_axis=op.get_attr("batch_axis"), time_axis=op.get_attr("time_axis"), time_major=op.get_attr("time_major")
  )


@tf.RegisterGradient("FlattenWithSeqLenMask")
def _flatten_grad(op, grad):
  x, seq_lens = op.inputs
  max_time = tf.shape(x, out_type=seq_lens.dtype)[op.get_attr("time_axis")]
  dx = _loader.core().unflatten_with_seq_len_mask(tf.convert_to_tensor(grad), seq_lens, max_time, **_axes(op))
  return [dx, None]


@tf.RegisterGradient("UnflattenWithSeqLenMask")
def _unflatten_grad(op, grad):
  dpacked = _loader.core().flatten_with_seq_len_mask(tf.convert_to_tensor(grad), op.inputs[1], **_axes(op))
  return [dpacked, None, None]
