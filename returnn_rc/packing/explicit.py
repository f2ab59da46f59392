"""Explicit packing: ``rc.pack`` / ``rc.unpack`` and the packed dim (returnn#1645's direction)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from returnn_rc.tensor import Dim, Tensor, batch_dim


class PackedDim(Dim):
  """The frames of ``(batch_dim, time_dim)`` packed batch-major: size ``N = sum(seq_lens)``.

  Neither static nor per-sequence dynamic (``is_dynamic()`` is False): a tensor on it has no padding.
  A loss on it is summed as it is, and its inverse norm factor is ``N`` times its static dims.

  Args:
    time_dim: the dynamic dim whose frames were packed (with the batch dim).
    source: the padded ``[B,T,...]`` tensor it was packed from (its T is the default of ``unpack``).
  """

  is_packed_dim = True

  def __init__(self, time_dim: Dim, *, source: Optional[tf.Tensor] = None, name: Optional[str] = None):
    super().__init__(None, name=name or f"packed({time_dim.name})")
    self.time_dim = time_dim
    self.seq_lens = time_dim.get_dyn_size()
    self._source = source

  def is_dynamic(self) -> bool:
    return False

  @property
  def source(self) -> Optional[tf.Tensor]:
    """The padded ``[B,T,...]`` raw tensor this was packed from (``rc.packing.report(dim.source)``)."""
    return self._source

  def _check_can_have_sizes(self):
    raise ValueError(f"{self!r} is a packed dim; it has no per-sequence sizes")

  def get_num_frames(self, dtype: tf.DType = tf.int32) -> tf.Tensor:
    """``N = sum(seq_lens)``, scalar."""
    return tf.reduce_sum(tf.cast(self.seq_lens, dtype))

  def get_max_time(self) -> tf.Tensor:
    """T of the padded tensor this was packed from (scalar int32); ValueError without one."""
    if self._source is None:
      raise ValueError(f"{self!r} has no source tensor; pass max_time to rc.unpack")
    return tf.shape(self._source, out_type=tf.int32)[1]

  def __repr__(self) -> str:
    return f"PackedDim({self.name!r})"


def pack(tensor: Tensor, dim: Optional[Dim] = None, *, name: Optional[str] = None) -> Tensor:
  """``tensor`` ``[B,T,...]`` (any axis order) → ``[N,...]`` on a new :class:`PackedDim`, padding removed.

  Where the rewrite is on (:mod:`returnn_rc.packing.switch`), the row-wise ops that produced
  ``tensor`` are rebuilt on packed frames, as for a loss. ``rc.get_run_ctx().mark_as_loss`` takes the
  result as it is (no second packing); its inverse norm factor is ``N`` times the static dims.

  Args:
    tensor: with the batch dim and one dynamic dim (or ``dim``); other dims must be static.
    dim: the dynamic dim to pack (default: the only one).
  Returns:
    dims ``[packed_dim, rest...]`` (``rest`` = the other dims in their order), same dtype.
  """
  from returnn_rc import ops  # pylint: disable=import-outside-toplevel
  from returnn_rc.packing import loss as _loss  # pylint: disable=import-outside-toplevel

  if not isinstance(tensor, Tensor):
    raise TypeError(f"rc.pack: expected an rc.Tensor, got {type(tensor).__name__}")
  if not tensor.have_batch_axis():
    raise ValueError(f"rc.pack: {tensor} has no batch dim")
  dynamic = tensor.dynamic_dims
  if dim is None:
    if len(dynamic) != 1:
      raise ValueError(f"rc.pack: {tensor} has {len(dynamic)} dynamic dims; pass dim=")
    dim = dynamic[0]
  elif dim not in dynamic:
    raise ValueError(f"rc.pack: dim {dim} is not a dynamic dim of {tensor}")
  rest = [d for d in tensor.dims if d is not batch_dim and d is not dim]
  if any(d.is_dynamic() for d in rest):
    raise ValueError(f"rc.pack: {tensor} has more dynamic dims than {dim}; only one can be packed")
  x = tensor.copy_transpose([batch_dim, dim] + rest)
  raw = x.get_raw()
  packed = _loss.pack_frames_upstream(x)
  if packed is None:
    packed = ops.flatten_with_seq_len_mask(raw, dim.get_dyn_size(), batch_dim_axis=0, time_dim_axis=1)
  packed_dim = PackedDim(dim, source=raw)
  feature = tensor.feature_dim if tensor.feature_dim in rest else None
  return Tensor(
    name or tensor.name,
    [packed_dim] + rest,
    tensor.dtype,
    raw_tensor=packed,
    sparse_dim=tensor.sparse_dim,
    feature_dim=feature,
  )


def unpack(tensor: Tensor, *, max_time: Optional[tf.Tensor] = None, name: Optional[str] = None) -> Tensor:
  """Inverse of :func:`pack`: ``[N,...]`` → ``[B,T,...]`` with zeros in the padded frames.

  Args:
    tensor: with one :class:`PackedDim`.
    max_time: T of the result (default: T of the tensor it was packed from).
  Returns:
    dims ``[batch_dim, time_dim, rest...]``.
  """
  from returnn_rc import ops  # pylint: disable=import-outside-toplevel

  if not isinstance(tensor, Tensor):
    raise TypeError(f"rc.unpack: expected an rc.Tensor, got {type(tensor).__name__}")
  packed_dims = [d for d in tensor.dims if isinstance(d, PackedDim)]
  if len(packed_dims) != 1:
    raise ValueError(f"rc.unpack: {tensor} must have exactly one packed dim, has {len(packed_dims)}")
  pdim = packed_dims[0]
  rest = [d for d in tensor.dims if d is not pdim]
  x = tensor.copy_transpose([pdim] + rest)
  if max_time is None:
    max_time = pdim.get_max_time()
  raw = ops.unflatten_with_seq_len_mask(x.get_raw(), pdim.seq_lens, max_time, batch_dim_axis=0, time_dim_axis=1)
  return Tensor(
    name or tensor.name,
    [batch_dim, pdim.time_dim] + rest,
    tensor.dtype,
    raw_tensor=raw,
    sparse_dim=tensor.sparse_dim,
    feature_dim=tensor.feature_dim,
  )
