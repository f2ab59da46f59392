"""Pure-TensorFlow formulations of flatten / unflatten.

* strict (``RETURNN_RC_OPS_FALLBACK=1``): ``tf.boolean_mask`` / ``tf.scatter_nd``
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


def flatten(x: tf.Tensor, seq_lens: tf.Tensor, batch_axis: int, time_axis: int, time_major: bool,
            strict: bool = True) -> tf.Tensor:
    """x: padded, e.g. [B,T,F] -> [sum(seq_lens), F]; axes must be non-negative."""
    rank = x.shape.rank
    perm = _perm(rank, batch_axis, time_axis, time_major)
    xt = x if perm == list(range(rank)) else tf.transpose(x, perm)
    max_time = tf.shape(x)[time_axis]
    lens = _checked_lens(seq_lens, max_time, strict)
    if strict:
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(x)[batch_axis], tf.shape(seq_lens)[0],
                message="seq_lens size does not match the batch dim")]):
            lens = tf.identity(lens)
    return tf.boolean_mask(xt, _mask(lens, max_time, time_major))


def unflatten(packed: tf.Tensor, seq_lens: tf.Tensor, max_time, batch_axis: int, time_axis: int,
              time_major: bool, strict: bool = True) -> tf.Tensor:
    """packed: [N, F...] -> padded with batch/time at the given (non-negative) axes, zeros in padding."""
    rank = packed.shape.rank + 1
    perm = _perm(rank, batch_axis, time_axis, time_major)
    lens = _checked_lens(seq_lens, max_time, strict)
    mask = _mask(lens, max_time, time_major)  # [major, minor]
    indices = tf.where(mask)
    if strict:
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(packed, out_type=tf.int64)[0], tf.shape(indices, out_type=tf.int64)[0],
                message="packed frames do not match sum(seq_lens)")]):
            indices = tf.identity(indices)
    else:
        packed = packed[:tf.shape(indices)[0]]
    shape = tf.concat([tf.shape(mask, out_type=tf.int64), tf.shape(packed, out_type=tf.int64)[1:]], 0)
    out = tf.scatter_nd(indices, packed, shape)
    inverse = [perm.index(i) for i in range(rank)]
    return out if inverse == list(range(rank)) else tf.transpose(out, inverse)
