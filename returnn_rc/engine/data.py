"""The ``tf.data`` input pipelines of the engine: sequences → length-bucketed padded batches.

Two sources, one batch format:

- **memory** (:func:`make_dataset`): a list of sequences, one ``dict`` per sequence: input name →
  numpy array of the extern-data template's shape without the batch axis, dynamic axes at their
  true length (the contract of ``graphs/__init__.py``), fed through ``from_generator``;
- **files** (:func:`scan_files` then :func:`make_file_dataset`): record files
  (:mod:`returnn_rc.engine.records`), or files of a graph module's own format read by its
  ``dataset_from_files`` hook (:data:`DATASET_HOOK`). Listing, reading (parallel interleave over
  the files), shuffling, length bucketing (within windows), parsing (one vectorized parse per batch,
  parallel map) and prefetching all run in the ``tf.data`` graph: no Python per sequence, memory
  bounded by the shuffle buffer and the window, not by the corpus.

Both yield padded batches, each a ``dict``:

- ``<name>``: ``[B,T,...]`` the input, zero-padded;
- ``<name>:size<axis>``: ``[B]`` int32, the true lengths of dynamic axis ``axis`` of ``<name>``
  (the key format of :meth:`rc.TensorDict.as_raw_tensor_dict`).

The order of sequences in an epoch is a function of ``(seed, epoch)`` only (the epoch is fed at
iterator initialisation): memory: a permutation (:func:`epoch_order`); files: the file order and
a shuffle buffer, both seeded by :func:`epoch_seeds`. So a resumed run sees the same batches as an
uninterrupted one. The batches do not depend on the number of workers either: every worker builds
the same *global* batches and takes its contiguous part with :func:`split_global_batch`.
:func:`extern_data_from_batch` wraps the iterator's ``get_next()`` as the :class:`rc.TensorDict` the
model sees, with the dynamic dims' sizes set from the lengths.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from returnn_rc.engine import records as _records
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
          f"extern_data expects {list(template)}"
        )
      arr = np.asarray(seq[name])
      want_rank = tmpl.batch_ndim - 1
      if arr.ndim != want_rank:
        raise ValueError(
          f"{what}: sequence {i}, input {name!r}: rank {arr.ndim} (shape {arr.shape}) but extern_data "
          f"{tmpl} expects rank {want_rank} per sequence (its dims without the batch dim)"
        )
      if arr.dtype.name != tmpl.dtype:
        raise TypeError(
          f"{what}: sequence {i}, input {name!r}: dtype {arr.dtype.name} but extern_data {tmpl} expects {tmpl.dtype}"
        )
      for axis, (d, size) in enumerate(zip(tmpl.dims[1:], arr.shape), start=1):
        if d.is_static() and d.dimension != size:
          raise ValueError(
            f"{what}: sequence {i}, input {name!r}: axis {axis} ({d}) has size {size}, expected {d.dimension}"
          )
        if d.is_dynamic():
          prev = dim_lens.setdefault(id(d), size)
          if prev != size:
            raise ValueError(
              f"{what}: sequence {i}, input {name!r}: dynamic dim {d} has length {size} here but "
              f"{prev} in another input sharing it"
            )


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
  lengths = np.asarray(lengths, np.int64)
  if lengths.size == 0:
    return [1]
  return bucket_boundaries_from_counts(np.bincount(lengths), num_buckets)


def bucket_boundaries_from_counts(counts: np.ndarray, num_buckets: int = 8) -> List[int]:
  """:func:`bucket_boundaries` from a histogram (``counts[L]`` = number of sequences of length ``L``).

  The bounds are ``floor(q) + 1`` of the ``k / num_buckets`` quantiles (``np.quantile``'s linear
  interpolation, computed in integers): memory and file sources of the same lengths get the same
  buckets, and the file source needs ``O(max length)`` memory, not ``O(number of sequences)``.
  """
  counts = np.asarray(counts, np.int64)
  n = int(counts.sum())
  if n == 0:
    return [1]
  cum = np.cumsum(counts)

  def order_stat(i: int) -> int:  # the i-th smallest length (0-based)
    return int(np.searchsorted(cum, i, side="right"))

  bounds = set()
  for k in range(1, num_buckets):
    lo, rem = divmod((n - 1) * k, num_buckets)
    a_lo = order_stat(lo)
    a_hi = order_stat(lo + 1) if rem else a_lo
    bounds.add(a_lo + (rem * (a_hi - a_lo)) // num_buckets + 1)
  return sorted(bounds) or [len(counts)]


def epoch_order(num_seqs: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The order of the sequences in ``epoch``: a permutation that depends on ``(seed, epoch)`` only."""
  if not shuffle:
    return np.arange(num_seqs)
  return np.random.default_rng([int(seed), int(epoch)]).permutation(num_seqs)


def make_dataset(
  template: TensorDict,
  seqs: Sequence[Seq],
  *,
  batch_size: int,
  order_seed: tf.Tensor,
  shuffle: bool,
  seed: int,
  pad_to_bucket_boundary: bool = False,
) -> tf.data.Dataset:
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
  length_key = _length_key(template)
  counts = None
  if length_key is not None:
    name, axis = length_key.rsplit(":size", 1)
    counts = np.bincount([arr[name].shape[int(axis) - 1] for arr in arrays])
  return _bucketed_batches(
    ds, template, counts, batch_size=batch_size, pad_to_bucket_boundary=pad_to_bucket_boundary
  ).prefetch(2)


def _bucketed_batches(
  ds: tf.data.Dataset,
  template: TensorDict,
  length_counts: Optional[np.ndarray],
  *,
  batch_size: int,
  pad_to_bucket_boundary: bool,
) -> tf.data.Dataset:
  """Sequences → padded batches of at most ``batch_size``, bucketed by the length key's value
  (bounds from the histogram ``length_counts``; plain batches if the template has no dynamic dim)."""
  specs = _input_specs(template)
  length_key = _length_key(template)
  if length_key is None:
    return ds.batch(batch_size)
  bounds = bucket_boundaries_from_counts(length_counts)
  max_len = len(length_counts) - 1
  if pad_to_bucket_boundary and bounds[-1] <= max_len:
    bounds.append(max_len + 1)  # every length must lie below the last bound
  return ds.bucket_by_sequence_length(
    element_length_func=lambda elem: elem[length_key],
    bucket_boundaries=bounds,
    bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
    padded_shapes={key: spec.shape for key, spec in specs.items()},
    pad_to_bucket_boundary=pad_to_bucket_boundary,
  )


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
    out[name] = Tensor(
      name, tmpl.dims, tmpl.dtype, raw_tensor=batch[name], sparse_dim=tmpl.sparse_dim, feature_dim=tmpl.feature_dim
    )
  return out


# --- files ----------------------------------------------------------------------------------------

#: Name of the optional graph-module function that reads files of the module's own format:
#: ``dataset_from_files(files: tf.data.Dataset, *, extern_data: rc.TensorDict) -> tf.data.Dataset``.
#: ``files`` yields the file names (scalar ``tf.string``) in the epoch's order; the result yields one
#: sequence per element, ``{input name: tensor}`` of the template's shape without the batch axis,
#: dynamic axes at their true length, the template's dtype. Build it from ``tf.data`` ops only (no
#: ``from_generator``, no ``py_function``) to keep Python out of the per-sequence path.
DATASET_HOOK = "dataset_from_files"
#: Default size (sequences) of the shuffle buffer of the file source.
DEFAULT_SHUFFLE_BUFFER = 10000
#: At most this many files are read at the same time (parallel interleave).
MAX_CYCLE_LENGTH = 16
_SCAN_BATCH = 8192


@dataclasses.dataclass
class FileData:
  """The files of one split, listed, checked and scanned by :func:`scan_files`.

  Attributes:
    files: the sorted file names.
    num_seqs: number of (valid) sequences in them.
    length_counts: histogram of the bucketing length (``counts[L]`` = sequences of length ``L``);
      None if the template has no dynamic dim.
    num_skipped: corrupt records skipped (only with ``skip_corrupt``).
    skip_corrupt: skip corrupt records while reading (they were counted by the scan).
    reader: the graph module's :data:`DATASET_HOOK` function, or None for record files.
  """

  files: List[str]
  num_seqs: int
  length_counts: Optional[np.ndarray]
  num_skipped: int = 0
  skip_corrupt: bool = False
  reader: Optional[Callable[..., tf.data.Dataset]] = None


def dataset_hook(module: Any) -> Optional[Callable[..., tf.data.Dataset]]:
  """The graph module's :data:`DATASET_HOOK` function, or None; ``TypeError`` if it is not callable."""
  hook = getattr(module, DATASET_HOOK, None)
  if hook is not None and not callable(hook):
    raise TypeError(f"graph module attribute {DATASET_HOOK} must be a function, got {type(hook).__name__}")
  return hook


def _with_sizes(template: TensorDict, seq: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  out = {name: seq[name] for name in template}
  for name, tmpl in template.items():
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        out[size_key(name, axis)] = tf.shape(seq[name], out_type=tf.int32)[axis - 1]
  return out


def _check_hook_spec(template: TensorDict, ds: tf.data.Dataset, what: str) -> None:
  spec = ds.element_spec
  if not isinstance(spec, Mapping):
    raise TypeError(
      f"{what}: {DATASET_HOOK} must return a dataset of dicts {{input name: tensor}}, got elements {spec}"
    )
  missing = [name for name in template if name not in spec]
  if missing:
    raise ValueError(
      f"{what}: the elements of {DATASET_HOOK} lack extern_data input(s) {missing}; they have {sorted(spec)}"
    )
  for name, tmpl in template.items():
    want = tf.TensorShape([d.dimension if d.is_static() else None for d in tmpl.dims[1:]])
    got = spec[name]
    if got.dtype != tf.as_dtype(tmpl.dtype) or not want.is_compatible_with(got.shape):
      raise ValueError(
        f"{what}: {DATASET_HOOK} yields {name!r} as {got.dtype.name} {got.shape}, extern_data "
        f"expects {tmpl.dtype} {want} (one sequence, no batch axis)"
      )


def _interleaved_records(
  files: tf.data.Dataset, *, num_files: int, skip_corrupt: bool, deterministic: bool
) -> tf.data.Dataset:
  """Record files → their serialized records after the schema record, interleaved one record at a time."""

  def records_of(path):
    ds = tf.data.TFRecordDataset(path, buffer_size=1 << 18).skip(1)  # record 0: the schema
    return ds.ignore_errors() if skip_corrupt else ds  # TF's reader ends a file at a corrupt record

  return files.interleave(
    records_of,
    cycle_length=max(1, min(num_files, MAX_CYCLE_LENGTH)),
    block_length=1,
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=deterministic,
  )


def _read_serialized(
  files: tf.data.Dataset, template: TensorDict, *, num_files: int, skip_corrupt: bool
) -> tf.data.Dataset:
  """Record files → their serialized sequence records (scalar strings), interleaved one record at a time.
  With ``skip_corrupt``, records that do not parse are dropped here (a per-record check)."""
  ds = _interleaved_records(files, num_files=num_files, skip_corrupt=skip_corrupt, deterministic=True)
  if skip_corrupt:

    def check(record):
      with tf.control_dependencies([tf.size(v) for v in _records.parse_sequence(template, record).values()]):
        return tf.identity(record)

    ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
  return ds


def _read_records(
  files: tf.data.Dataset, template: TensorDict, *, num_files: int, skip_corrupt: bool, deterministic: bool = True
) -> tf.data.Dataset:
  """Record files → parsed sequences, in the order of ``files``, interleaved one record at a time."""
  ds = _interleaved_records(files, num_files=num_files, skip_corrupt=skip_corrupt, deterministic=deterministic)
  ds = ds.map(
    lambda r: _records.parse_sequence(template, r), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
  )
  return ds.ignore_errors() if skip_corrupt else ds


def read_sequences(
  files: tf.data.Dataset, template: TensorDict, file_data: FileData, *, deterministic: bool = True
) -> tf.data.Dataset:
  """The sequences of ``files`` (in their order): ``{name: [...], "<name>:size<axis>": int32}`` each."""
  if file_data.reader is None:
    return _read_records(
      files, template, num_files=len(file_data.files), skip_corrupt=file_data.skip_corrupt, deterministic=deterministic
    )
  ds = file_data.reader(files, extern_data=template)
  return ds.map(
    lambda seq: _with_sizes(template, seq), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
  )


def scan_files(
  patterns: Any,
  template: TensorDict,
  *,
  what: str,
  graph_name: Optional[str] = None,
  skip_corrupt: bool = False,
  reader: Optional[Callable[..., tf.data.Dataset]] = None,
) -> FileData:
  """Lists, checks and reads once (in ``tf.data``, files in parallel) the files of one split.

  Record files: every file's schema record must match ``template``; every sequence record is
  parsed and checked; the scan counts the sequences and builds the length histogram for the
  bucket bounds. Memory: ``O(number of files + max length)``.

  Args:
    patterns: a glob (or list of globs) of the files.
    template: the extern-data template.
    what: for messages, e.g. ``"graph 'char_lm' train data"``.
    graph_name: for messages.
    skip_corrupt: skip corrupt records (counted in ``num_skipped`` and logged) instead of raising.
    reader: the graph module's :data:`DATASET_HOOK` (files of its own format), or None for records.
  Raises:
    ValueError: a pattern matches no file; an empty file, a file of another format or of another
      graph's schema; a corrupt record (naming the file and the record, unless ``skip_corrupt``);
      no sequence at all.
  """
  files = _records.list_files(patterns, what=what)
  schema_sizes = None if reader is not None else _records.check_files(files, template, what=what, graph_name=graph_name)
  length_key = _length_key(template)
  counts = np.zeros([0], np.int64)
  per_file_seqs = np.zeros([len(files)], np.int64)
  per_file_bytes = np.zeros([len(files)], np.int64)
  with tf.Graph().as_default():
    if reader is not None:
      ds = read_sequences(
        tf.data.Dataset.from_tensor_slices(files),
        template,
        FileData(files=files, num_seqs=0, length_counts=None, reader=reader),
      )
      _check_hook_spec(template, ds, what)
      ds = ds.map(
        lambda seq: (
          tf.constant(0, tf.int64),
          tf.constant(0, tf.int64),
          seq[length_key] if length_key else tf.constant(0, tf.int32),
        )
      )
      ds = ds.batch(_SCAN_BATCH)
    else:
      vectorized = _records.batch_parse_supported(template)

      def stats(records):
        """``[N]`` records → ([N] bytes incl. framing, [N] lengths); fails if one does not parse."""
        if vectorized:
          batch = _records.parse_batch(template, records)
          checked = [tf.shape(v)[0] for v in batch.values()]
          lengths = batch[length_key] if length_key else tf.zeros(tf.shape(records), tf.int32)
        else:
          seq = _records.parse_sequence(template, records)
          checked = [tf.size(v) for v in seq.values()]
          lengths = seq[length_key] if length_key else tf.constant(0, tf.int32)
        with tf.control_dependencies(checked):
          return tf.cast(tf.strings.length(records), tf.int64) + _records.FRAME_OVERHEAD, tf.identity(lengths)

      def scan_file(index, path):
        recs = tf.data.TFRecordDataset(path, buffer_size=1 << 18).skip(1).ignore_errors()
        if vectorized:  # a batch with a corrupt record is dropped: the file's bytes then do not add up
          parsed = (
            recs.batch(_SCAN_BATCH).map(stats, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
          )
        else:
          parsed = recs.map(stats, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
          parsed = parsed.batch(_SCAN_BATCH)
        return parsed.map(lambda nbytes, lengths: (tf.fill(tf.shape(nbytes), index), nbytes, lengths))

      ds = tf.data.Dataset.from_tensor_slices((np.arange(len(files), dtype=np.int64), files)).interleave(
        scan_file,
        cycle_length=max(1, min(len(files), MAX_CYCLE_LENGTH)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
      )
    nxt = tf.compat.v1.data.make_one_shot_iterator(ds.prefetch(2)).get_next()
    with tf.compat.v1.Session() as sess:
      while True:
        try:
          index, nbytes, lengths = sess.run(nxt)
        except tf.errors.OutOfRangeError:
          break
        except tf.errors.OpError as exc:
          if reader is None:
            raise
          raise ValueError(
            f"{what}: the graph module's {DATASET_HOOK} failed while reading {patterns!r}: "
            f"{_records.error_summary(exc)}"
          ) from None
        if reader is None:
          np.add.at(per_file_seqs, index, 1)
          np.add.at(per_file_bytes, index, nbytes)
        else:
          per_file_seqs[0] += len(lengths)
        if length_key:
          hist = np.bincount(lengths)
          if len(hist) > len(counts):
            counts = np.pad(counts, [0, len(hist) - len(counts)])
          counts[: len(hist)] += hist
  num_skipped = 0
  if reader is None:
    num_skipped = _check_scanned(
      files, template, schema_sizes, per_file_seqs, per_file_bytes, what=what, skip_corrupt=skip_corrupt
    )
  num_seqs = int(per_file_seqs.sum())
  if num_seqs == 0:
    raise ValueError(f"{what}: the files {patterns!r} ({len(files)} file(s)) hold no sequence")
  return FileData(
    files=files,
    num_seqs=num_seqs,
    length_counts=counts if length_key else None,
    num_skipped=num_skipped,
    skip_corrupt=skip_corrupt,
    reader=reader,
  )


def _check_scanned(
  files: Sequence[str],
  template: TensorDict,
  schema_sizes: Sequence[int],
  seqs: np.ndarray,
  nbytes: np.ndarray,
  *,
  what: str,
  skip_corrupt: bool,
) -> int:
  """Number of corrupt records, and ``seqs`` corrected to the valid ones (a file whose valid records do
  not add up to its size has corrupt ones; they are located in Python); ``ValueError`` naming the
  file and the record unless ``skip_corrupt``."""
  skipped = 0
  for i, path in enumerate(files):
    expected = os.path.getsize(path) - schema_sizes[i] - _records.FRAME_OVERHEAD
    if nbytes[i] == expected:
      continue
    bad, valid = _records.inspect_records(path, template)
    where = "; ".join(f"record {index} ({why})" for index, why in bad) or "a record that fails to parse in tf.data"
    if not skip_corrupt:
      raise ValueError(
        f"{what}: record file {path!r} has corrupt records: {where} (record 0 is the schema record); "
        f"{valid} of its records are valid. Rewrite the file, or pass skip_corrupt_records=True "
        f"(--skip_corrupt_records) to skip corrupt records"
      )
    frames, complete = _records.count_frames(path)
    lost = max(frames - 1 - valid, 1)
    tail = "" if complete else " and an unreadable tail"
    logging.warning("%s: skipping %d corrupt record(s)%s of %s: %s", what, lost, tail, path, where)
    seqs[i] = valid
    skipped += lost
  if skipped:
    logging.warning("%s: skipped %d corrupt record(s) in total", what, skipped)
  return skipped


def epoch_seeds(seed: int, order_seed: tf.Tensor) -> tf.Tensor:
  """``[2]`` int64: the seeds of the file order and of the shuffle buffer of the epoch ``order_seed``
  (a scalar int64 tensor), a function of ``(seed, epoch)`` only."""
  key = tf.stack([tf.constant(int(seed), tf.int64), tf.cast(order_seed, tf.int64)])
  return tf.random.stateless_uniform([2], seed=key, minval=0, maxval=2**62, dtype=tf.int64)


#: The record source buckets sequences within windows of this many batches (see :func:`make_file_dataset`).
WINDOW_BATCHES = 64


def _window_batches(
  serialized: tf.data.Dataset,
  template: TensorDict,
  length_counts: Optional[np.ndarray],
  *,
  batch_size: int,
  shuffle: bool,
  seeds: tf.Tensor,
  pad_to_bucket_boundary: bool,
) -> tf.data.Dataset:
  """Serialized sequence records → padded batches, bucketed by length within windows, parsed per batch.

  Per window of ``WINDOW_BATCHES * batch_size`` records (in arrival order): each record goes to its
  length bucket (the bounds of :func:`bucket_boundaries_from_counts`, as the memory source); each
  bucket's records, in arrival order, form batches of ``batch_size`` (its last one smaller); the
  window's batches come in a random order drawn from ``(seeds[1], window index)`` (training) or in
  bucket order (evaluation). Every per-sequence step is a C++ ``tf.data`` op; graph functions run
  per window and per batch only.
  """
  length_key = _length_key(template)
  window = WINDOW_BATCHES * batch_size
  if length_key is None:
    bounds, pad_lens = [], [-1]
  else:
    bounds = bucket_boundaries_from_counts(length_counts)
    max_len = len(length_counts) - 1
    if pad_to_bucket_boundary and bounds[-1] <= max_len:
      bounds.append(max_len + 1)
    # as bucket_by_sequence_length: pad to the bucket's bound minus 1 (its longest possible length)
    pad_lens = [b - 1 for b in bounds] + [-1] if pad_to_bucket_boundary else [-1] * (len(bounds) + 1)
  num_buckets = len(bounds) + 1

  def plan(index, records):
    """One window → (records sorted by bucket, [num batches] start, end, pad length)."""
    n = tf.shape(records)[0]
    if length_key is None:
      bucket = tf.zeros([n], tf.int32)
    else:
      lengths = _records.record_lengths(template, records, length_key)
      bucket = tf.searchsorted(tf.constant(bounds, tf.int32), lengths, side="right", out_type=tf.int32)
    order = tf.argsort(bucket, stable=True)
    sorted_bucket = tf.gather(bucket, order)
    counts = tf.math.bincount(bucket, minlength=num_buckets, maxlength=num_buckets, dtype=tf.int32)
    first = tf.cumsum(counts, exclusive=True)
    pos = tf.range(n) - tf.gather(first, sorted_bucket)
    starts = tf.cast(tf.where(tf.equal(pos % batch_size, 0))[:, 0], tf.int32)
    ends = tf.concat([starts[1:], [n]], 0)
    pads = tf.gather(tf.constant(pad_lens, tf.int32), tf.gather(sorted_bucket, starts))
    if shuffle:
      key = tf.random.stateless_uniform([tf.shape(starts)[0]], seed=tf.stack([seeds[1], index]), dtype=tf.float32)
      perm = tf.argsort(key, stable=True)
      starts, ends, pads = tf.gather(starts, perm), tf.gather(ends, perm), tf.gather(pads, perm)
    return tf.gather(records, order), starts, ends, pads

  def batches_of(records, starts, ends, pads):
    return tf.data.Dataset.from_tensor_slices((starts, ends, pads)).map(
      lambda start, end, pad: (records[start:end], pad)
    )

  ds = serialized.batch(window).enumerate().map(plan).flat_map(batches_of)
  return ds.map(
    lambda records, pad: _records.parse_batch(template, records, pad),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )


def make_file_dataset(
  template: TensorDict,
  file_data: FileData,
  *,
  batch_size: int,
  order_seed: tf.Tensor,
  shuffle: bool,
  seed: int,
  shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
  pad_to_bucket_boundary: bool = False,
  max_seqs: Optional[int] = None,
) -> tf.data.Dataset:
  """Length-bucketed, padded batches of the sequences in ``file_data``'s files (the module docstring's format).

  Per epoch (``order_seed`` fed at iterator initialisation): the files in an order drawn from
  :func:`epoch_seeds`, read ``min(#files, 16)`` at a time one record each (the order of
  :func:`returnn_rc.engine.records.write_shards`' round robin when not shuffled), shuffled as
  serialized records in a buffer of ``shuffle_buffer`` seeded per epoch, then bucketed by length
  within windows of ``WINDOW_BATCHES * batch_size`` records and parsed one batch at a time
  (:func:`_window_batches`; the buckets are the memory source's, and within one window the batches
  are the ones ``bucket_by_sequence_length`` makes), prefetched. No graph function runs per
  sequence, so the pipeline is not bound by per-element overhead. Deterministic: the same
  ``(seed, epoch)`` gives the same batches. Files of a graph module's own format
  (:data:`DATASET_HOOK`), and templates :func:`returnn_rc.engine.records.batch_parse_supported`
  refuses (a dynamic dim not at axis 1, or two), go per sequence through ``bucket_by_sequence_length``.

  Args:
    template: the extern-data templates.
    file_data: :func:`scan_files` of the split.
    batch_size: maximum number of sequences per batch.
    order_seed: scalar int64 tensor (placeholder), the epoch.
    shuffle: shuffle per epoch (training) or keep the file order (evaluation).
    seed: the run's seed.
    shuffle_buffer: sequences in the shuffle buffer (memory ~ this times a sequence's size).
    pad_to_bucket_boundary: see :func:`make_dataset`.
    max_seqs: read only the first ``max_seqs`` sequences (in file order; the files are then not
      shuffled, the sequences are).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if shuffle_buffer < 1:
    raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
  seeds = epoch_seeds(seed, order_seed)
  files = tf.data.Dataset.from_tensor_slices(file_data.files)
  if shuffle and max_seqs is None:
    files = files.shuffle(len(file_data.files), seed=seeds[0], reshuffle_each_iteration=False)
  if file_data.reader is None and _records.batch_parse_supported(template):
    ds = _read_serialized(files, template, num_files=len(file_data.files), skip_corrupt=file_data.skip_corrupt)
    if max_seqs is not None:
      ds = ds.take(max_seqs)
    if shuffle:
      ds = ds.shuffle(shuffle_buffer, seed=seeds[1], reshuffle_each_iteration=False)
    ds = _window_batches(
      ds,
      template,
      file_data.length_counts,
      batch_size=batch_size,
      shuffle=shuffle,
      seeds=seeds,
      pad_to_bucket_boundary=pad_to_bucket_boundary,
    )
    return ds.prefetch(2)
  ds = read_sequences(files, template, file_data)
  if max_seqs is not None:
    ds = ds.take(max_seqs)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seeds[1], reshuffle_each_iteration=False)
  return _bucketed_batches(
    ds, template, file_data.length_counts, batch_size=batch_size, pad_to_bucket_boundary=pad_to_bucket_boundary
  ).prefetch(2)


# --- workers ----------------------------------------------------------------------------------------


def _check_worker(worker_index: int, num_workers: int) -> None:
  if not isinstance(num_workers, int) or num_workers < 1:
    raise ValueError(f"num_workers must be an int >= 1, got {num_workers!r}")
  if not isinstance(worker_index, int) or not 0 <= worker_index < num_workers:
    raise ValueError(f"worker_index must be an int in [0, {num_workers}), got {worker_index!r}")


def worker_slice(batch_size: tf.Tensor, worker_index: int, num_workers: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """``(start, end)`` of worker ``worker_index``'s contiguous part of a global batch of ``batch_size``
  sequences: ``[floor(B i / n), floor(B (i+1) / n))``; parts differ by at most one sequence, and
  are empty where ``B < n``."""
  _check_worker(worker_index, num_workers)
  b = tf.cast(batch_size, tf.int64)
  return b * worker_index // num_workers, b * (worker_index + 1) // num_workers


def split_global_batch(batch: Mapping[str, tf.Tensor], worker_index: int, num_workers: int) -> Dict[str, tf.Tensor]:
  """Worker ``worker_index`` of ``num_workers``' part of one global padded batch (graph ops).

  Every entry (``[B,...]`` inputs and ``[B]`` sizes) is sliced to the same contiguous rows
  (:func:`worker_slice`); the padded length stays the global batch's. The parts of all workers,
  concatenated in worker order, are the global batch.
  """
  keys = sorted(batch)
  if not keys:
    raise ValueError("split_global_batch: the batch is empty (no keys)")
  start, end = worker_slice(tf.shape(batch[keys[0]], out_type=tf.int64)[0], worker_index, num_workers)
  return {key: value[start:end] for key, value in batch.items()}


def shard_batches(ds: tf.data.Dataset, worker_index: int, num_workers: int) -> tf.data.Dataset:
  """``ds`` (global padded batches) mapped to worker ``worker_index``'s parts (:func:`split_global_batch`)."""
  _check_worker(worker_index, num_workers)  # now, not in the map
  return ds.map(lambda batch: split_global_batch(batch, worker_index, num_workers))
