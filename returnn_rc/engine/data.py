"""The ``tf.data`` input pipeline of the engine: checked sequences → length-bucketed padded batches.

A data set is a list of sequences, one ``dict`` per sequence: input name → numpy array of the
extern-data template's shape without the batch axis, dynamic axes at their true length (the
contract of ``graphs/__init__.py``). :func:`make_dataset` turns it into a ``tf.data.Dataset`` of
padded batches, each a ``dict``:

- ``<name>``: ``[B,T,...]`` the input, zero-padded;
- ``<name>:size<axis>``: ``[B]`` int32, the true lengths of dynamic axis ``axis`` of ``<name>``
  (the key format of :meth:`rc.TensorDict.as_raw_tensor_dict`).

The order of sequences in an epoch is a function of ``(seed, epoch)`` only (fed at iterator
initialisation), so a resumed run sees the same batches as an uninterrupted one.
:func:`extern_data_from_batch` wraps the iterator's ``get_next()`` as the :class:`rc.TensorDict` the
model sees, with the dynamic dims' sizes set from the lengths.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import Tensor, TensorDict, size_key

Seq = Mapping[str, np.ndarray]


def check_data(template: TensorDict, seqs: Sequence[Seq], *, what: str) -> None:
  """``ValueError`` / ``TypeError`` naming the sequence and input unless ``seqs`` matches ``template``.

  Checked per sequence: every template name is present, rank = template rank - 1 (no batch axis),
  dtype equal to the template's, static dims of the right size, and the dynamic dims that two
  inputs share have the same length.
  """
  if not isinstance(seqs, (list, tuple)):
    raise TypeError(f"{what}: data must be a list of dicts (one per sequence), got {type(seqs).__name__}")
  if not seqs:
    raise ValueError(f"{what}: data is empty (no sequences)")
  for i, seq in enumerate(seqs):
    if not isinstance(seq, Mapping):
      raise TypeError(f"{what}: sequence {i} must be a dict name -> np.ndarray, got {type(seq).__name__}")
    dim_lens: Dict[int, int] = {}
    for name, tmpl in template.items():
      if name not in seq:
        raise ValueError(
            f"{what}: sequence {i} has no input {name!r} of extern_data; it has {sorted(seq)}, "
            f"extern_data expects {list(template)}")
      arr = np.asarray(seq[name])
      want_rank = tmpl.batch_ndim - 1
      if arr.ndim != want_rank:
        raise ValueError(
            f"{what}: sequence {i}, input {name!r}: rank {arr.ndim} (shape {arr.shape}) but extern_data "
            f"{tmpl} expects rank {want_rank} per sequence (its dims without the batch dim)")
      if arr.dtype.name != tmpl.dtype:
        raise TypeError(
            f"{what}: sequence {i}, input {name!r}: dtype {arr.dtype.name} but extern_data {tmpl} "
            f"expects {tmpl.dtype}")
      for axis, (d, size) in enumerate(zip(tmpl.dims[1:], arr.shape), start=1):
        if d.is_static() and d.dimension != size:
          raise ValueError(
              f"{what}: sequence {i}, input {name!r}: axis {axis} ({d}) has size {size}, expected {d.dimension}")
        if d.is_dynamic():
          prev = dim_lens.setdefault(id(d), size)
          if prev != size:
            raise ValueError(
                f"{what}: sequence {i}, input {name!r}: dynamic dim {d} has length {size} here but "
                f"{prev} in another input sharing it")


def _input_specs(template: TensorDict) -> Dict[str, tf.TensorSpec]:
  specs = {}
  for name, tmpl in template.items():
    specs[name] = tf.TensorSpec([d.dimension for d in tmpl.dims[1:]], tf.as_dtype(tmpl.dtype))
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        specs[size_key(name, axis)] = tf.TensorSpec([], tf.int32)
  return specs


def _length_key(template: TensorDict) -> Optional[str]:
  """The size key that buckets batches: the first dynamic axis of the first input that has one."""
  for name, tmpl in template.items():
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        return size_key(name, axis)
  return None


def bucket_boundaries(lengths: Sequence[int], num_buckets: int = 8) -> List[int]:
  """Strictly increasing upper bounds (exclusive) splitting ``lengths`` into ~equal-count buckets."""
  lengths = np.asarray(lengths)
  if lengths.size == 0:
    return [1]
  qs = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1])
  bounds = sorted({int(q) + 1 for q in qs})
  return bounds or [int(lengths.max()) + 1]


def epoch_order(num_seqs: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The order of the sequences in ``epoch``: a permutation that depends on ``(seed, epoch)`` only."""
  if not shuffle:
    return np.arange(num_seqs)
  return np.random.default_rng([int(seed), int(epoch)]).permutation(num_seqs)


def make_dataset(template: TensorDict, seqs: Sequence[Seq], *, batch_size: int, order_seed: tf.Tensor,
                 shuffle: bool, seed: int, pad_to_bucket_boundary: bool = False) -> tf.data.Dataset:
  """Length-bucketed, padded batches of ``seqs`` (see the module docstring for the element format).

  Args:
    template: the extern-data templates (``graph_module.extern_data_template()``).
    seqs: the sequences, already checked by :func:`check_data`.
    batch_size: maximum number of sequences per batch (the last batch of a bucket may be smaller).
    order_seed: scalar int64 tensor (placeholder), the epoch, fed when the iterator is initialised;
      the order of the sequences is :func:`epoch_order` ``(seed, epoch)``.
    shuffle: shuffle per epoch (training) or keep the given order (evaluation).
    seed: the run's seed.
    pad_to_bucket_boundary: pad the length to the bucket's bound (few distinct shapes, e.g. for XLA,
      which compiles once per shape) instead of to the longest sequence of the batch.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  specs = _input_specs(template)
  names = list(template)
  dyn_axes = {name: [axis for axis, d in enumerate(tmpl.dims) if d.is_dynamic()] for name, tmpl in template.items()}
  arrays = [{name: np.asarray(seq[name]) for name in names} for seq in seqs]

  def generate(epoch):
    for i in epoch_order(len(arrays), seed=seed, epoch=int(epoch), shuffle=shuffle):
      seq = arrays[i]
      elem = dict(seq)
      for name in names:
        for axis in dyn_axes[name]:
          elem[size_key(name, axis)] = np.int32(seq[name].shape[axis - 1])
      yield elem

  ds = tf.data.Dataset.from_generator(generate, output_signature=specs, args=(order_seed,))
  padded_shapes = {key: spec.shape for key, spec in specs.items()}
  length_key = _length_key(template)
  if length_key is None:
    ds = ds.batch(batch_size)
  else:
    name, axis = length_key.rsplit(":size", 1)
    lengths = [arr[name].shape[int(axis) - 1] for arr in arrays]
    bounds = bucket_boundaries(lengths)
    if pad_to_bucket_boundary and bounds[-1] <= max(lengths):
      bounds.append(max(lengths) + 1)  # every length must lie below the last bound
    ds = ds.bucket_by_sequence_length(
        element_length_func=lambda elem: elem[length_key], bucket_boundaries=bounds,
        bucket_batch_sizes=[batch_size] * (len(bounds) + 1), padded_shapes=padded_shapes,
        pad_to_bucket_boundary=pad_to_bucket_boundary)
  return ds.prefetch(2)


def extern_data_from_batch(template: TensorDict, batch: Mapping[str, tf.Tensor]) -> TensorDict:
  """The extern data the model sees: ``template``'s tensors with raw tensors from ``batch``.

  Args:
    template: a fresh template (its dims become this graph's dims; their sizes are set here).
    batch: ``iterator.get_next()``: ``{name: [B,...], "<name>:size<axis>": [B]}``.
  """
  out = TensorDict()
  for name, tmpl in template.items():
    if name not in batch:
      raise ValueError(f"extern_data input {name!r} is not in the input batch (keys {sorted(batch)})")
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic() and d.dyn_size is None:
        d.dyn_size = batch[size_key(name, axis)]
    out[name] = Tensor(name, tmpl.dims, tmpl.dtype, raw_tensor=batch[name], sparse_dim=tmpl.sparse_dim,
                       feature_dim=tmpl.feature_dim)
  return out
