"""Marked losses as graph nodes: reductions, normalisation, total loss and exact epoch reporting.

Semantics (as RETURNN's frontend ``Loss``), for a loss tensor such as ``[B,T]``, ``[B,T,F]``, ``[B]``
or a scalar:

- summed = sum over the valid elements (padded frames of each dynamic dim excluded);
- inverse norm factor = number of valid elements (``sum(seq_lens) * F`` for ``[B,T,F]``, ``B`` for
  ``[B]``, 1 for a scalar) or the sum of ``custom_inv_norm_factor``;
- mean = summed / inverse norm factor (0 for an empty batch, where both are 0);
- scaled reduced = (mean if ``use_normalized_loss`` else summed) * scale.

Padded frames are excluded by *selection* (``tf.where`` or the packing op), never by multiplying
with a mask, so NaN/Inf there reach neither the loss nor the gradient. Reductions are done in
float32 (float64 for float64 losses), also for float16/bfloat16 losses.

Reporting over an epoch is ``sum(summed) / sum(inv_norm)`` over its batches
(:class:`EpochAccumulator`), never a mean of per-batch means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import Dim, Tensor, batch_dim

if TYPE_CHECKING:
  from returnn_rc.run_ctx import Loss


def _reduce_dtype(dtype: str) -> tf.DType:
  return tf.float64 if dtype == "float64" else tf.float32


def _scalar(raw: tf.Tensor, name: str) -> Tensor:
  return Tensor(name, (), raw.dtype, raw_tensor=raw)


def check_loss_dims(loss: Tensor, name: str) -> None:
  """``ValueError`` unless every dynamic dim of ``loss`` has sizes and the batch dim is present."""
  for d in loss.dynamic_dims:
    if not loss.have_batch_axis():
      raise ValueError(
          f"loss {name!r}: dynamic dim {d} needs the batch dim in the loss to mask padding, "
          f"but the loss dims are {list(loss.dims)}")
    if d.dyn_size is None:
      raise ValueError(f"loss {name!r}: dynamic dim {d} has no sizes (set dim.dyn_size or dim.dyn_size_ext)")
    if d.dyn_size.dtype not in (tf.int32, tf.int64):
      raise TypeError(f"loss {name!r}: sizes of {d} must be int32/int64, got {d.dyn_size.dtype.name}")


def _check_sizes_in_range(loss: Tensor, dims: Sequence[Dim]) -> List[tf.Operation]:
  """Run-time checks that the sizes of each of ``dims`` lie in ``[0, T]``."""
  checks = []
  raw = loss.get_raw()
  for d in dims:
    sizes = d.get_dyn_size()
    max_len = tf.shape(raw, out_type=sizes.dtype)[loss.get_axis_from_dim(d)]
    checks.append(tf.debugging.assert_less_equal(
        sizes, max_len, message=f"seq_lens of dim {d.name} out of range: larger than the padded length T"))
    checks.append(tf.debugging.assert_non_negative(sizes, message=f"seq_lens of dim {d.name} out of range: negative"))
  return checks


def _flatten_frames(raw: tf.Tensor, sizes: tf.Tensor, batch_axis: int, time_axis: int) -> tf.Tensor:
  from returnn_rc import ops  # pylint: disable=import-outside-toplevel
  return ops.flatten_with_seq_len_mask(raw, sizes, batch_dim_axis=batch_axis, time_dim_axis=time_axis)


def summed_loss(loss: Tensor, *, use_flatten_frames: bool, name: str) -> Tensor:
  """Sum of ``loss`` over its valid elements, as a scalar :class:`Tensor`.

  With ``use_flatten_frames`` the first dynamic dim is packed away with the
  ``FlattenWithSeqLenMask`` op (``[B,T,...]`` → ``[sum(seq_lens),...]``); other dynamic dims (and all
  of them without ``use_flatten_frames``) are excluded by ``tf.where`` selection. A ``[B,T,...]`` loss
  with one dynamic dim gets its row-wise producers rebuilt on packed frames (:mod:`returnn_rc.packing`).
  """
  raw = loss.get_raw()
  dtype = _reduce_dtype(loss.dtype)
  dynamic = loss.dynamic_dims
  with tf.name_scope(f"loss_{_scope_name(name)}/summed"):
    if not dynamic:
      return _scalar(tf.reduce_sum(tf.cast(raw, dtype)), f"{name}:summed")
    if use_flatten_frames and len(dynamic) == 1:
      from returnn_rc import packing  # pylint: disable=import-outside-toplevel
      packed = packing.pack_frames_upstream(loss)  # the loss's row-wise producers on packed frames
      if packed is not None:
        return _scalar(tf.reduce_sum(tf.cast(packed, dtype)), f"{name}:summed")
    masked_dims = dynamic[1:] if use_flatten_frames else dynamic
    if masked_dims:
      mask = None
      for d in masked_dims:
        m = loss.get_sequence_mask_broadcast(d)
        mask = m if mask is None else tf.logical_and(mask, m)
      with tf.control_dependencies(_check_sizes_in_range(loss, masked_dims)):
        raw = tf.where(mask, raw, tf.zeros_like(raw))
    if use_flatten_frames:  # the op checks the range of the sizes itself
      time = dynamic[0]
      raw = _flatten_frames(raw, time.get_dyn_size(), loss.get_axis_from_dim(batch_dim),
                            loss.get_axis_from_dim(time))
    return _scalar(tf.reduce_sum(tf.cast(raw, dtype)), f"{name}:summed")


def inv_norm_factor(loss: Tensor, *, custom_inv_norm_factor: Optional[Tensor], name: str) -> Tensor:
  """Number of valid elements of ``loss``, or the sum of ``custom_inv_norm_factor``; scalar."""
  dtype = _reduce_dtype(loss.dtype)
  with tf.name_scope(f"loss_{_scope_name(name)}/inv_norm_factor"):
    if custom_inv_norm_factor is not None:
      return _scalar(tf.reduce_sum(tf.cast(custom_inv_norm_factor.get_raw(), dtype)), f"{name}:inv_norm_factor")
    raw = loss.get_raw()
    static = 1
    for d in loss.dims:
      if d.is_static():
        static *= d.dimension
    dynamic = loss.dynamic_dims
    if dynamic:
      per_seq = None
      for d in dynamic:
        sizes = tf.cast(d.get_dyn_size(), dtype)
        per_seq = sizes if per_seq is None else per_seq * sizes
      count = tf.reduce_sum(per_seq)
    elif any(getattr(d, "is_packed_dim", False) for d in loss.dims):  # rc.pack: N frames per packed dim
      count = tf.constant(1, dtype)
      for d in loss.dims:
        if getattr(d, "is_packed_dim", False):
          count = count * d.get_num_frames(dtype)
    elif loss.have_batch_axis():
      count = tf.cast(tf.shape(raw)[loss.get_axis_from_dim(batch_dim)], dtype)
    else:
      count = tf.constant(1, dtype)
    if static != 1:
      count = count * tf.constant(static, dtype)
    return _scalar(tf.identity(count), f"{name}:inv_norm_factor")


def mean_loss(summed: Tensor, inv_norm: Tensor, *, name: str) -> Tensor:
  """``summed / inv_norm`` (0 where ``inv_norm`` is 0, i.e. an empty batch); scalar."""
  with tf.name_scope(f"loss_{_scope_name(name)}/mean"):
    return _scalar(tf.math.divide_no_nan(summed.get_raw(), inv_norm.get_raw()), f"{name}:mean")


def scaled(reduced: Tensor, scale: float, *, name: str) -> Tensor:
  """``reduced * scale`` (the same node for scale 1); scalar."""
  if scale == 1.0:
    return reduced
  with tf.name_scope(f"loss_{_scope_name(name)}/scaled"):
    return _scalar(reduced.get_raw() * tf.constant(scale, reduced.get_raw().dtype), f"{name}:scaled")


def total(losses: Sequence["Loss"]) -> Tensor:
  """Sum of the scaled reduced losses (float32, or float64 if all are float64); scalar."""
  parts = [loss.get_scaled_reduced_loss().get_raw() for loss in losses]
  dtype = tf.float64 if all(p.dtype == tf.float64 for p in parts) else tf.float32
  with tf.name_scope("total_loss"):
    parts = [tf.cast(p, dtype) for p in parts]
    return _scalar(tf.add_n(parts) if len(parts) > 1 else tf.identity(parts[0]), "total_loss")


def _scope_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


# --- reporting ----------------------------------------------------------------------------------

def report_fetches(losses: Mapping[str, "Loss"]) -> Dict[str, Tuple[tf.Tensor, tf.Tensor]]:
  """name → (summed, inv_norm) raw scalars: everything per-batch and per-epoch reports need, for one
  ``Session.run`` fetch together with the train op."""
  return {name: (loss.get_summed_loss().get_raw(), loss.get_inv_norm_factor().get_raw())
          for name, loss in losses.items()}


class EpochAccumulator:
  """Exact per-epoch figures: ``sum(summed) / sum(inv_norm)`` over the batches of an epoch.

  Usage::

    acc = EpochAccumulator()
    for each batch: acc.add(session.run(report_fetches(ctx.losses)))
    acc.figures()  # name -> float
  """

  def __init__(self):
    self._summed: Dict[str, float] = {}
    self._inv_norm: Dict[str, float] = {}
    self.num_batches = 0

  def add(self, fetched: Mapping[str, Tuple[float, float]]) -> Dict[str, float]:
    """Adds one batch's ``{name: (summed, inv_norm)}``; returns that batch's figures."""
    for name, (summed, inv_norm) in fetched.items():
      self._summed[name] = self._summed.get(name, 0.0) + float(summed)
      self._inv_norm[name] = self._inv_norm.get(name, 0.0) + float(inv_norm)
    self.num_batches += 1
    return {name: _ratio(float(s), float(n)) for name, (s, n) in fetched.items()}

  def figures(self) -> Dict[str, float]:
    """name → sum(summed) / sum(inv_norm) over all batches added so far."""
    return {name: _ratio(self._summed[name], self._inv_norm[name]) for name in self._summed}

  def totals(self) -> Dict[str, Tuple[float, float]]:
    """name → (sum(summed), sum(inv_norm))."""
    return {name: (self._summed[name], self._inv_norm[name]) for name in self._summed}


def _ratio(summed: float, inv_norm: float) -> float:
  if inv_norm == 0:
    return 0.0 if summed == 0 else float(np.sign(summed)) * float("inf")
  return summed / inv_norm
