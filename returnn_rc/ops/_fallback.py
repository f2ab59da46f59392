"""Pure-TensorFlow formulations of flatten / unflatten.

* strict (``RETURNN_RC_OPS_FALLBACK=1``, ``fallback_scope()``): ``tf.boolean_mask`` / a gather
  with run-time checks (InvalidArgumentError, like the kernel).
* XLA (inside an XLA context when ``_flatten_xla.so`` is missing): same
  formulation, lengths clamped to [0, T], no asserts.
Both are differentiable with TF's own gradients.
"""

from __future__ import annotations

import tensorflow as tf


def _perm(rank: int, batch_axis: int, time_axis: int, time_major: bool) -> list[int]:
  major, minor = (time_axis, batch_axis) if time_major else (batch_axis, time_axis)
  return [major, minor] + [i for i in range(rank) if i not in (batch_axis, time_axis)]


def _mask(lens: tf.Tensor, max_time, time_major: bool) -> tf.Tensor:
  mask = tf.sequence_mask(lens, max_time)  # [B,T]
  return tf.transpose(mask) if time_major else mask


def _checked_lens(seq_lens: tf.Tensor, max_time, strict: bool) -> tf.Tensor:
  max_time = tf.cast(max_time, seq_lens.dtype)
  if not strict:
    return tf.clip_by_value(seq_lens, tf.zeros([], seq_lens.dtype), max_time)
  checks = [
    tf.debugging.assert_non_negative(seq_lens, message="seq_lens out of range [0, T]"),
    tf.debugging.assert_less_equal(seq_lens, max_time, message="seq_lens out of range [0, T]"),
  ]
  with tf.control_dependencies(checks):
    return tf.identity(seq_lens)


def flatten(
  x: tf.Tensor, seq_lens: tf.Tensor, batch_axis: int, time_axis: int, time_major: bool, strict: bool = True
) -> tf.Tensor:
  """The valid frames of ``x``, e.g. ``[B,T,F]`` → ``[sum(seq_lens),F]`` (``tf.boolean_mask``).

  Args:
    x: padded, batch and time at ``batch_axis`` / ``time_axis`` (non-negative, known rank).
    seq_lens: ``[B]`` int32 / int64.
    batch_axis: the axis of ``B``.
    time_axis: the axis of ``T``.
    time_major: the order of the packed frames: t then b (else b then t).
    strict: run-time checks of the lengths (else clamped to ``[0,T]``: inside XLA).

  Returns:
    ``[sum(seq_lens), ...rest]``.
  """
  rank = x.shape.rank
  perm = _perm(rank, batch_axis, time_axis, time_major)
  xt = x if perm == list(range(rank)) else tf.transpose(x, perm)
  max_time = tf.shape(x)[time_axis]
  lens = _checked_lens(seq_lens, max_time, strict)
  if strict:
    with tf.control_dependencies(
      [
        tf.debugging.assert_equal(
          tf.shape(x)[batch_axis], tf.shape(seq_lens)[0], message="seq_lens size does not match the batch dim"
        )
      ]
    ):
      lens = tf.identity(lens)
  return tf.boolean_mask(xt, _mask(lens, max_time, time_major))


def unflatten(
  packed: tf.Tensor,
  seq_lens: tf.Tensor,
  max_time,
  batch_axis: int,
  time_axis: int,
  time_major: bool,
  strict: bool = True,
) -> tf.Tensor:
  """The inverse of :func:`flatten`: ``[N,F...]`` → padded, zeros in the padding.

  A gather, not ``tf.scatter_nd``: each position takes its packed row, the padding a zero row
  appended to ``packed`` (selection: NaN in ``packed`` never reaches the padding). ``scatter_nd``
  refuses non-empty indices into an output without elements (e.g. ``F = 0``).

  Args:
    packed: ``[N,...rest]``, ``N = sum(seq_lens)``.
    seq_lens: ``[B]`` int32 / int64.
    max_time: scalar ``T``.
    batch_axis: the axis of ``B`` in the output (non-negative).
    time_axis: the axis of ``T`` in the output (non-negative).
    time_major: the order of the packed frames: t then b (else b then t).
    strict: run-time checks of the lengths and of ``N`` (else lengths clamped to ``[0,T]``: inside XLA).

  Returns:
    the padded tensor, rank ``rank(packed) + 1``.
  """
  rank = packed.shape.rank + 1
  perm = _perm(rank, batch_axis, time_axis, time_major)
  lens = _checked_lens(seq_lens, max_time, strict)
  mask = _mask(lens, max_time, time_major)  # [major, minor]
  flat_mask = tf.reshape(mask, [-1])
  positions = tf.cumsum(tf.cast(flat_mask, tf.int64), exclusive=True)  # row in packed of each valid position
  num_rows = tf.shape(packed, out_type=tf.int64)[0]
  if strict:
    with tf.control_dependencies(
      [
        tf.debugging.assert_equal(
          num_rows, tf.reduce_sum(tf.cast(flat_mask, tf.int64)), message="packed frames do not match sum(seq_lens)"
        )
      ]
    ):
      positions = tf.identity(positions)
  index = tf.where(tf.logical_and(flat_mask, positions < num_rows), positions, num_rows)  # padding -> zero row
  zero_row = tf.zeros(tf.concat([[1], tf.shape(packed)[1:]], 0), packed.dtype)
  rows = tf.gather(tf.concat([packed, zero_row], 0), index)  # [major*minor, F...]
  out = tf.reshape(rows, tf.concat([tf.shape(mask), tf.shape(packed)[1:]], 0))
  inverse = [perm.index(i) for i in range(rank)]
  return out if inverse == list(range(rank)) else tf.transpose(out, inverse)
