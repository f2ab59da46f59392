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
(:class:`returnn_rc.reporting.EpochAccumulator`), never a mean of per-batch means.

Inside the replica context of a ``tf.distribute`` strategy the run context sums (summed, inv_norm) of all
its losses over the replicas in one collective (:func:`all_reduce_losses`, ``RunCtx.reduce_losses``):
the figures (mean, total loss, reports) are the global ones, ``Σ summed / Σ inv_norm``, and each
replica's gradient is its contribution, so the replicas' gradients summed are the gradient of the
global figure. Outside a strategy nothing of this is built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import Dim, Tensor, batch_dim, check_name


def check_loss_options(
  name: Any, *, scale: Any, as_error: Any, use_normalized_loss: Any, use_flatten_frames: Any
) -> None:
  """Checks the options of a loss (before any graph node is built).

  Raises:
    TypeError: a name that is not a str, a scale that is not a number, a flag that is not a bool.
    ValueError: an invalid name (see :data:`returnn_rc.tensor.VALID_NAME_TEXT`), a non-finite scale.
  """
  check_name(name, "loss")
  if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
    raise TypeError(f"loss {name!r}: scale must be a Python float, got {type(scale).__name__} {scale!r}")
  if not math.isfinite(float(scale)):
    raise ValueError(f"loss {name!r}: scale must be finite, got {float(scale)}")
  for option, value in (
    ("as_error", as_error),
    ("use_normalized_loss", use_normalized_loss),
    ("use_flatten_frames", use_flatten_frames),
  ):
    if not isinstance(value, (bool, np.bool_)):
      raise TypeError(f"loss {name!r}: {option} must be a bool, got {type(value).__name__} {value!r}")


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
        f"but the loss dims are {list(loss.dims)}"
      )
    if d.dyn_size is None:
      raise ValueError(f"loss {name!r}: dynamic dim {d} has no sizes (set dim.dyn_size or dim.dyn_size_ext)")
    if d.dyn_size.dtype not in (tf.int32, tf.int64):
      raise TypeError(f"loss {name!r}: sizes of {d} must be int32/int64, got {d.dyn_size.dtype.name}")


def _check_sizes_in_range(loss: Tensor, dims: Sequence[Dim]) -> List[tf.Operation]:
  """Run-time checks that the sizes of each of ``dims`` lie in ``[0, T]`` (their batch size is checked by
  the mask, :meth:`Tensor.get_sequence_mask_broadcast`)."""
  checks = []
  raw = loss.get_raw()
  for d in dims:
    sizes = d.get_dyn_size()
    max_len = tf.shape(raw, out_type=sizes.dtype)[loss.get_axis_from_dim(d)]
    checks.append(
      tf.debugging.assert_less_equal(
        sizes, max_len, message=f"seq_lens of dim {d.name} out of range: larger than the padded length T"
      )
    )
    checks.append(tf.debugging.assert_non_negative(sizes, message=f"seq_lens of dim {d.name} out of range: negative"))
  return checks


def _valid_only(tensor: Tensor, raw: tf.Tensor, dims: Sequence[Dim]) -> tf.Tensor:
  """``raw`` (the raw tensor of ``tensor``, possibly cast) with the padded frames of ``dims`` replaced by 0,
  by selection (NaN/Inf there reach neither the result nor its gradient); with run-time size checks."""
  mask = None
  for d in dims:
    m = tensor.get_sequence_mask_broadcast(d)
    mask = m if mask is None else tf.logical_and(mask, m)
  with tf.control_dependencies(_check_sizes_in_range(tensor, dims)):
    return tf.where(mask, raw, tf.zeros_like(raw))


def _flatten_frames(raw: tf.Tensor, sizes: tf.Tensor, batch_axis: int, time_axis: int) -> tf.Tensor:
  from returnn_rc import ops  # pylint: disable=import-outside-toplevel

  return ops.flatten_with_seq_len_mask(raw, sizes, batch_dim_axis=batch_axis, time_dim_axis=time_axis)


def summed_loss(loss: Tensor, *, use_flatten_frames: bool, name: str, sibling_losses: Sequence[Tensor] = ()) -> Tensor:
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

      # The loss's row-wise producers on packed frames (sibling losses' tensors count as packed consumers).
      packed = packing.pack_frames_upstream(loss, sibling_losses=sibling_losses)
      if packed is not None:
        return _scalar(tf.reduce_sum(tf.cast(packed, dtype)), f"{name}:summed")
    masked_dims = dynamic[1:] if use_flatten_frames else dynamic
    if masked_dims:
      raw = _valid_only(loss, raw, masked_dims)
    if use_flatten_frames:  # the op checks the range of the sizes itself
      time = dynamic[0]
      raw = _flatten_frames(raw, time.get_dyn_size(), loss.get_axis_from_dim(batch_dim), loss.get_axis_from_dim(time))
    return _scalar(tf.reduce_sum(tf.cast(raw, dtype)), f"{name}:summed")


def custom_inv_norm_tensor(value: Any, loss: Tensor, name: str) -> Tensor:
  """``custom_inv_norm_factor`` of loss ``name`` as a :class:`Tensor` whose dims say which axes are dynamic.

  - an :class:`Tensor`: its own dims (e.g. ``[B,T]`` with the loss's time dim, or ``[B]``);
  - a raw scalar: as it is;
  - a raw tensor of the loss's rank whose static shape fits the loss's: the loss's dims (so a ``[B,T]``
    factor of a ``[B,T]`` loss is masked like the loss);
  - a raw ``[B]`` vector of a loss with the batch dim: ``[batch_dim]``, one factor per sequence.

  Any other raw shape is ambiguous (which axes hold padding?): ``ValueError`` asking for an :class:`Tensor`.
  The factor is summed over its valid elements only: padded frames of each dynamic dim are excluded
  by selection, as the loss's (RETURNN's ``reduce_sum`` masks them too).

  Raises:
    TypeError: not a number, bool or tensor of them.
    ValueError: an ambiguous shape; a dynamic dim without sizes or without the batch dim; a batch size
      other than the loss's (when both are static).
  """
  what = f"loss {name!r}: custom_inv_norm_factor"
  if isinstance(value, Tensor):
    factor = value
  else:
    try:
      raw = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as exc:
      raise TypeError(f"{what} must be a number or a tensor of numbers, got {type(value).__name__} {value!r}") from exc
    rank = raw.shape.rank
    if rank is None:
      raise ValueError(f"{what} must have a known rank, got {raw}")
    loss_shape = loss.get_raw().shape
    if rank == 0:
      dims = ()
    elif rank == loss.batch_ndim and loss_shape.is_compatible_with(raw.shape):
      dims = loss.dims
    elif rank == 1 and loss.have_batch_axis():
      dims = (batch_dim,)
    else:
      raise ValueError(
        f"{what}: a raw tensor of shape {raw.shape} is ambiguous for a loss with dims {list(loss.dims)} "
        f"(shape {loss_shape}); pass a scalar, a [B] vector, a tensor of the loss's shape, or an rc.Tensor "
        f"with dims (its dynamic dims are masked)"
      )
    factor = Tensor(f"{name}:custom_inv_norm_factor", dims, raw.dtype, raw_tensor=raw)
  dtype = tf.as_dtype(factor.dtype)
  if not (dtype.is_floating or dtype.is_integer or dtype.is_bool) or dtype.is_complex:
    raise TypeError(f"{what} must be a float, int or bool tensor, got dtype {dtype.name}")
  factor.get_raw()  # a template without a raw tensor: ValueError naming it
  for d in factor.dynamic_dims:
    if not factor.have_batch_axis():
      raise ValueError(
        f"{what}: dynamic dim {d} needs the batch dim to mask its padding, but its dims are {list(factor.dims)}"
      )
    if d.dyn_size is None:
      raise ValueError(f"{what}: dynamic dim {d} has no sizes (set dim.dyn_size or dim.dyn_size_ext)")
  if factor.have_batch_axis() and loss.have_batch_axis():
    b_factor, b_loss = _static_batch(factor), _static_batch(loss)
    if b_factor is not None and b_loss is not None and b_factor != b_loss:
      raise ValueError(f"{what} has batch size {b_factor}, but the loss has batch size {b_loss}")
  return factor


def _static_batch(tensor: Tensor) -> Optional[int]:
  raw = tensor.get_raw()
  return raw.shape[tensor.get_axis_from_dim(batch_dim)] if raw.shape.rank is not None else None


def _custom_inv_norm(loss: Tensor, factor: Tensor, dtype: tf.DType, name: str) -> tf.Tensor:
  """Sum of ``factor`` over its valid elements (padding excluded by selection), with run-time checks
  (batch size as the loss's, sizes in range, values finite and >= 0); scalar."""
  raw = tf.cast(factor.get_raw(), dtype)
  if factor.dynamic_dims:
    raw = _valid_only(factor, raw, factor.dynamic_dims)
  checks = [
    tf.debugging.Assert(
      tf.reduce_all(tf.logical_and(tf.math.is_finite(raw), raw >= 0)),
      [f"custom_inv_norm_factor of loss {name} must be finite and >= 0 in the valid frames"],
      name="check_values",
    )
  ]
  if (
    factor.have_batch_axis()
    and loss.have_batch_axis()
    and (_static_batch(factor) is None or _static_batch(loss) is None)
  ):
    same = tf.equal(
      tf.shape(factor.get_raw(), out_type=tf.int64)[factor.get_axis_from_dim(batch_dim)],
      tf.shape(loss.get_raw(), out_type=tf.int64)[loss.get_axis_from_dim(batch_dim)],
    )
    checks.append(
      tf.debugging.Assert(
        same,
        [f"batch size mismatch: custom_inv_norm_factor of loss {name} does not have the batch size of the loss"],
        name="check_batch_size",
      )
    )
  with tf.control_dependencies(checks):
    return tf.reduce_sum(raw)


def inv_norm_factor(loss: Tensor, *, custom_inv_norm_factor: Optional[Tensor], name: str) -> Tensor:
  """Number of valid elements of ``loss``, or the sum of ``custom_inv_norm_factor`` over its valid
  elements (see :func:`custom_inv_norm_tensor`); scalar."""
  dtype = _reduce_dtype(loss.dtype)
  with tf.name_scope(f"loss_{_scope_name(name)}/inv_norm_factor"):
    if custom_inv_norm_factor is not None:
      return _scalar(_custom_inv_norm(loss, custom_inv_norm_factor, dtype, name), f"{name}:inv_norm_factor")
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
      count = tf.reduce_sum(per_seq)  # the sizes are checked where the loss is summed
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


def total(losses: Sequence[Loss]) -> Tensor:
  """Sum of the scaled reduced losses (float32, or float64 if all are float64); scalar."""
  parts = [loss.get_scaled_reduced_loss().get_raw() for loss in losses]
  dtype = tf.float64 if all(p.dtype == tf.float64 for p in parts) else tf.float32
  with tf.name_scope("total_loss"):
    parts = [tf.cast(p, dtype) for p in parts]
    return _scalar(tf.add_n(parts) if len(parts) > 1 else tf.identity(parts[0]), "total_loss")


def all_reduce_losses(losses: Sequence[Loss], replica_ctx: Any) -> None:
  """Sums (summed, inv_norm) of each of ``losses`` over the replicas of ``replica_ctx`` with ONE collective.

  The local reductions of all losses are concatenated in the given order (the marking order) into one
  float64 vector ``[2 * len(losses)]``, all-reduced with ``SUM`` in one ``replica_ctx.all_reduce`` call,
  and split. Each loss's global figure is ``stop_gradient(global) + (local - stop_gradient(local))``:
  the value is exactly the all-reduced sum (cast back to the reduction dtype), the gradient is this
  replica's local contribution. As the partial derivatives of any function of the global figures (e.g.
  ``summed / inv_norm``) are evaluated at the global values, the per-replica gradients summed over the
  replicas are exactly the gradient of that function of the global figures.

  Args:
    losses: the losses of one run context, in marking order (their global reductions must not be built).
    replica_ctx: a ``tf.distribute.ReplicaContext``.
  """
  if not losses:
    return
  with tf.name_scope("cross_replica_losses"):
    local = []
    for loss in losses:
      local.append((loss.get_local_summed_loss().get_raw(), loss.get_local_inv_norm_factor().get_raw()))
    vector = tf.stack([tf.cast(t, tf.float64) for pair in local for t in pair], name="local_reductions")
    reduced = _all_reduce_sum(replica_ctx, vector)
    reduced = tf.unstack(tf.reshape(reduced, [2 * len(losses)]), name="global_reductions")
    for i, loss in enumerate(losses):
      pair = []
      for value, total_sum, what in (
        (local[i][0], reduced[2 * i], "summed"),
        (local[i][1], reduced[2 * i + 1], "inv_norm_factor"),
      ):
        with tf.name_scope(f"loss_{_scope_name(loss.name)}/global_{what}"):
          exact = tf.stop_gradient(tf.cast(total_sum, value.dtype))
          pair.append(_scalar(exact + (value - tf.stop_gradient(value)), f"{loss.name}:global_{what}"))
      loss.set_global_reductions(pair[0], pair[1])


def _all_reduce_sum(replica_ctx: Any, value: tf.Tensor) -> tf.Tensor:
  """``value`` summed over the replicas: one collective (the values need no gradient).

  As ``replica_ctx.all_reduce``, without its gradient wrapper, which in graph mode looks up by name the
  variables the other replicas' values depend on and fails for mirrored ``tf.compat.v1`` variables."""
  extended = replica_ctx.strategy.extended
  use_merge_call = getattr(extended, "_use_merge_call", None)
  if use_merge_call is not None and not use_merge_call():  # collective strategies without merge_call
    return replica_ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)

  def reduce_fn(strategy, v):
    destination = v.device if isinstance(v, tf.Tensor) else v
    return strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM, [(v, destination)])[0]

  return replica_ctx.merge_call(reduce_fn, args=(value,))


def _scope_name(name: str) -> str:
  return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


@dataclasses.dataclass
class Loss:
  """A loss marked via :meth:`RunCtx.mark_as_loss`, with its reductions as graph nodes.

  Reductions (all scalar :class:`Tensor`, NaN/Inf in padded frames never reach them):
    - summed: sum over the valid frames;
    - inverse norm factor: number of valid elements, or the sum of ``custom_inv_norm_factor``;
    - mean: summed / inverse norm factor;
    - scaled reduced: (mean if ``use_normalized_loss`` else summed) * ``scale``.
  """

  loss: Tensor
  name: str
  scale: float = 1.0
  as_error: bool = False
  use_normalized_loss: bool = False
  use_flatten_frames: bool = True
  custom_inv_norm_factor: Optional[Tensor] = None
  _summed_loss_cached: Optional[Tensor] = dataclasses.field(default=None, repr=False)
  _mean_loss_cached: Optional[Tensor] = dataclasses.field(default=None, repr=False)
  _inv_norm_factor_cached: Optional[Tensor] = dataclasses.field(default=None, repr=False)
  _local_summed_cached: Optional[Tensor] = dataclasses.field(default=None, repr=False)
  _local_inv_norm_cached: Optional[Tensor] = dataclasses.field(default=None, repr=False)
  #: The losses marked in the same run context (this one included; set by ``RunCtx.mark_as_loss``): their
  #: frame-wise tensors are packed too, so a producer they share with this loss is packed once.
  siblings: Optional[Mapping[str, "Loss"]] = dataclasses.field(default=None, repr=False, compare=False)
  #: Called before a global reduction is built (set by ``RunCtx.mark_as_loss``: ``RunCtx.reduce_losses``,
  #: which all-reduces the reductions of all losses of the context inside a replica context).
  reduce_hook: Optional[Callable[[], None]] = dataclasses.field(default=None, repr=False, compare=False)

  def __post_init__(self):
    check_loss_options(
      self.name,
      scale=self.scale,
      as_error=self.as_error,
      use_normalized_loss=self.use_normalized_loss,
      use_flatten_frames=self.use_flatten_frames,
    )
    if not isinstance(self.loss, Tensor):
      raise TypeError(f"loss {self.name!r}: loss must be an rc.Tensor, got {type(self.loss).__name__}")
    if self.custom_inv_norm_factor is not None and not isinstance(self.custom_inv_norm_factor, Tensor):
      raise TypeError(
        f"loss {self.name!r}: custom_inv_norm_factor must be an rc.Tensor (or None), got "
        f"{type(self.custom_inv_norm_factor).__name__}"
      )

  def get_summed_loss(self) -> Tensor:
    """Sum of the loss over all valid (non-padded) elements, scalar.

    Inside a replica context of a ``tf.distribute`` strategy (see :meth:`RunCtx.reduce_losses`): the sum
    over all replicas, whose gradient is this replica's contribution."""
    if self._summed_loss_cached is None:
      self._reduce_across_replicas()
    if self._summed_loss_cached is None:
      self._summed_loss_cached = self.get_local_summed_loss()
    return self._summed_loss_cached

  def get_local_summed_loss(self) -> Tensor:
    """Sum of the loss over the valid elements of this replica's batch (:meth:`get_summed_loss` outside a
    strategy), scalar."""
    if self._local_summed_cached is None:
      self._local_summed_cached = summed_loss(
        self.loss,
        use_flatten_frames=self.use_flatten_frames,
        name=self.name,
        sibling_losses=self._sibling_loss_tensors(),
      )
    return self._local_summed_cached

  def _sibling_loss_tensors(self) -> List[Tensor]:
    """The frame-wise tensors of the sibling losses that are reduced on packed frames."""
    if not self.siblings:
      return []
    return [loss.loss for loss in self.siblings.values() if loss.use_flatten_frames]

  def _reduce_across_replicas(self) -> None:
    if self.reduce_hook is not None:
      self.reduce_hook()

  def get_inv_norm_factor(self) -> Tensor:
    """Number of valid elements of the loss (or the sum of ``custom_inv_norm_factor``), scalar; over all
    replicas inside a replica context (as :meth:`get_summed_loss`)."""
    if self._inv_norm_factor_cached is None:
      self._reduce_across_replicas()
    if self._inv_norm_factor_cached is None:
      self._inv_norm_factor_cached = self.get_local_inv_norm_factor()
    return self._inv_norm_factor_cached

  def get_local_inv_norm_factor(self) -> Tensor:
    """:meth:`get_inv_norm_factor` of this replica's batch only, scalar."""
    if self._local_inv_norm_cached is None:
      self._local_inv_norm_cached = inv_norm_factor(
        self.loss, custom_inv_norm_factor=self.custom_inv_norm_factor, name=self.name
      )
    return self._local_inv_norm_cached

  def get_mean_loss(self) -> Tensor:
    """``summed / inv_norm_factor``, scalar (of the global figures inside a replica context)."""
    if self._mean_loss_cached is None:
      self._mean_loss_cached = mean_loss(self.get_summed_loss(), self.get_inv_norm_factor(), name=self.name)
    return self._mean_loss_cached

  def set_global_reductions(self, summed: Tensor, inv_norm: Tensor) -> None:
    """Sets the (cross-replica) summed loss and inverse norm factor; for :func:`all_reduce_losses` only."""
    if self._summed_loss_cached is not None or self._inv_norm_factor_cached is not None:
      raise RuntimeError(f"loss {self.name!r}: its reductions were already built; they can be set only once")
    self._summed_loss_cached = summed
    self._inv_norm_factor_cached = inv_norm

  def get_scaled_reduced_loss(self) -> Tensor:
    """``(mean if use_normalized_loss else summed) * scale``: what the optimizer sees, scalar."""
    reduced = self.get_mean_loss() if self.use_normalized_loss else self.get_summed_loss()
    return scaled(reduced, self.scale, name=self.name)

  @property
  def used_for_optimizer(self) -> bool:
    """Whether :meth:`RunCtx.total_loss` includes this loss."""
    return not self.as_error and self.scale != 0
