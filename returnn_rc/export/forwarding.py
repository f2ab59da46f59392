"""Forwarding: run ``forward_step`` (graph module + checkpoint, or an exported SavedModel) over sequences.

Sequences are dicts name → numpy array of one sequence (no batch axis, dynamic axes at their true
length), as ``default_data(split)`` of a graph module returns them. They are batched in order
(``batch_size`` sequences per ``Session.run``), padded with zeros, and the outputs are cut back to
per-sequence arrays using the ``"<name>:size<axis>"`` outputs.

The ``.npz`` format (outputs written by ``tools/forward.py``, and one of its input formats), for N
sequences and each tensor ``<name>`` with dims ``[B,...]``:

- ``<name>``: ``[N,...]`` the sequences stacked, each dynamic axis zero-padded to the longest;
- ``<name>:size<axis>``: ``[N]`` int32, the true length of dynamic axis ``axis`` of each sequence.

So sequence ``i`` of a ``[B,T,F]`` output is ``out["<name>"][i, :out["<name>:size1"][i]]``.
Inputs may also be given per sequence, as keys ``"seq<i>/<name>"`` (unpadded arrays).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from returnn_rc.export import dims as export_dims
from returnn_rc.export.forward_graph import build_forward_graph, make_session, read_step_epoch, resolve_checkpoint
from returnn_rc.graph_module import pad_arrays

Seq = Dict[str, np.ndarray]
TensorsDesc = Mapping[str, Mapping[str, Any]]


# --- padding ----------------------------------------------------------------------------------------


def _batch_axis0(name: str, desc: Mapping[str, Any]) -> None:
  if desc["batch_axis"] != 0:
    raise ValueError(
      f"{name!r} has its batch dim at axis {desc['batch_axis']}, not 0; forwarding needs "
      f"[B,...] tensors (mark the output with dims=[batch_dim, ...])"
    )


def pad_sequences(seqs: Sequence[Seq], tensors_desc: TensorsDesc) -> Dict[str, np.ndarray]:
  """Stacks per-sequence arrays into the padded format: ``<name>`` ``[N,...]``, ``<name>:size<axis>`` ``[N]``.

  Raises ``ValueError`` naming the tensor if a sequence lacks it or has the wrong rank, dtype or
  static size.
  """
  out: Dict[str, np.ndarray] = {}
  for name, desc in tensors_desc.items():
    _batch_axis0(name, desc)
    dims = desc["dims"][1:]
    dtype = np.dtype(desc["dtype"]) if desc["dtype"] != "bfloat16" else tf.bfloat16.as_numpy_dtype
    arrays = []
    for i, seq in enumerate(seqs):
      if name not in seq:
        raise ValueError(f"sequence {i} has no {name!r} (it has {sorted(seq)})")
      arr = np.asarray(seq[name])
      if arr.ndim != len(dims):
        raise ValueError(
          f"sequence {i}: {name!r} must have rank {len(dims)} (dims {[d['name'] for d in dims]}, "
          f"no batch axis), got shape {arr.shape}"
        )
      if arr.dtype != dtype:
        raise ValueError(f"sequence {i}: {name!r} must have dtype {desc['dtype']}, got {arr.dtype}")
      for axis, d in enumerate(dims):
        if d["kind"] == export_dims.KIND_STATIC and arr.shape[axis] != d["size"]:
          raise ValueError(
            f"sequence {i}: {name!r} axis {axis + 1} ({d['name']!r}) must have size {d['size']}, got shape {arr.shape}"
          )
      arrays.append(arr)
    out[name] = pad_arrays(arrays, rank=len(dims), dtype=dtype)
    for axis in desc["dynamic_axes"]:
      out[export_dims.size_key(name, axis)] = np.array([a.shape[axis - 1] for a in arrays], dtype=np.int32)
  return out


def unpad_sequences(padded: Mapping[str, np.ndarray], tensors_desc: TensorsDesc) -> List[Seq]:
  """The inverse of :func:`pad_sequences`: one dict per sequence with the padding cut off.

  The sizes of dynamic axis ``axis`` of ``<name>`` are read from ``padded["<name>:size<axis>"]``, or
  else from the key the description names (``size_key``, e.g. a shared input dim).
  """
  n = None
  for name, desc in tensors_desc.items():
    _batch_axis0(name, desc)
    if name not in padded:
      raise ValueError(f"no {name!r} in the given arrays (keys {sorted(padded)})")
    n = padded[name].shape[0] if n is None else n
    if padded[name].shape[0] != n:
      raise ValueError(f"{name!r} has {padded[name].shape[0]} sequences, others have {n}")
  seqs: List[Seq] = [{} for _ in range(n or 0)]
  for name, desc in tensors_desc.items():
    arr = padded[name]
    sizes = {}
    for axis in desc["dynamic_axes"]:
      key = export_dims.size_key(name, axis)
      if key not in padded:
        key = desc["dims"][axis].get("size_key", key)
      if key not in padded:
        raise ValueError(f"no sizes {export_dims.size_key(name, axis)!r} for {name!r} (keys {sorted(padded)})")
      sizes[axis] = check_sizes(padded[key], key=key, data=np.asarray(arr), name=name, axis=axis)
    for i in range(len(seqs)):
      index = [i] + [slice(0, int(sizes[a][i])) if a in sizes else slice(None) for a in range(1, arr.ndim)]
      seqs[i][name] = arr[tuple(index)]
  return seqs


def check_sizes(sizes: Any, *, key: str, data: np.ndarray, name: str, axis: int) -> np.ndarray:
  """``sizes`` as an int array ``[N]``, checked against the padded ``data`` ``[N,...]`` of ``name``.

  Raises ``ValueError`` naming ``key`` unless the sizes are integers (not float, not bool), one per
  sequence of ``data`` (``N``), and each in ``[0, data.shape[axis]]`` (the padded length).
  """
  sizes = np.asarray(sizes)
  if sizes.dtype == np.bool_ or not np.issubdtype(sizes.dtype, np.integer):
    raise ValueError(f"sizes {key!r} must be integers, got dtype {sizes.dtype}")
  if sizes.ndim != 1 or sizes.shape[0] != data.shape[0]:
    raise ValueError(
      f"sizes {key!r} must have shape [{data.shape[0]}] (one per sequence of {name!r}), got shape {list(sizes.shape)}"
    )
  if sizes.size and (sizes.min() < 0 or sizes.max() > data.shape[axis]):
    bad = int(np.flatnonzero((sizes < 0) | (sizes > data.shape[axis]))[0])
    raise ValueError(
      f"sizes {key!r}: sequence {bad} has size {int(sizes[bad])}, outside [0, {data.shape[axis]}] "
      f"(the padded length of {name!r} at axis {axis})"
    )
  return sizes


def feed_from_padded(padded: Mapping[str, np.ndarray], inputs_desc: TensorsDesc) -> Dict[str, np.ndarray]:
  """Signature feed (``"<name>"``, and the dims' ``size_key``) from :func:`pad_sequences` output.

  A dynamic dim shared by several inputs gets one size key; their lengths must agree.
  """
  feed: Dict[str, np.ndarray] = {}
  for name, desc in inputs_desc.items():
    if name not in padded:
      raise ValueError(f"no {name!r} in the padded arrays (keys {sorted(padded)})")
    feed[name] = padded[name]
    for axis in desc["dynamic_axes"]:
      key = desc["dims"][axis]["size_key"]
      sizes = padded[export_dims.size_key(name, axis)]
      if key in feed and not np.array_equal(feed[key], sizes):
        raise ValueError(
          f"{name!r} axis {axis} shares its dim {desc['dims'][axis]['name']!r} with {key!r}, "
          f"but the lengths differ: {sizes.tolist()} vs {feed[key].tolist()}"
        )
      feed[key] = sizes
  return feed


def check_feed(
  feed: Mapping[str, Any],
  inputs: Mapping[str, Tuple[tf.DType, tf.TensorShape]],
  inputs_desc: Optional[TensorsDesc] = None,
) -> None:
  """``ValueError`` naming the key if ``feed`` lacks a signature input, has an unknown one, or a value
  of the wrong dtype or rank (``inputs``: key → (dtype, shape) of the signature); with ``inputs_desc``
  (the dims description's ``"inputs"``) also sizes that do not fit their input (:func:`check_sizes`)."""
  missing = sorted(set(inputs) - set(feed))
  unknown = sorted(set(feed) - set(inputs))
  if missing or unknown:
    raise ValueError(
      f"inputs mismatch: missing {missing}, unknown {unknown}; the signature inputs are {sorted(inputs)}"
    )
  for key, (dtype, shape) in inputs.items():
    value = np.asarray(feed[key])
    if value.dtype != dtype.as_numpy_dtype:
      raise ValueError(f"input {key!r} must have dtype {dtype.name}, got {value.dtype}")
    if not shape.is_compatible_with(value.shape):
      raise ValueError(f"input {key!r} must have shape {shape} (None: any size), got {value.shape}")
  for name, desc in (inputs_desc or {}).items():
    for axis in desc["dynamic_axes"]:
      key = desc["dims"][axis]["size_key"]
      if name in feed and key in feed:
        check_sizes(feed[key], key=key, data=np.asarray(feed[name]), name=name, axis=axis)


# --- forwarders -------------------------------------------------------------------------------------


class Forwarder:
  """Runs one padded batch: signature key → array in, signature key → array out.

  Attributes:
    description: the dims description (``"inputs"``, ``"outputs"``), as in the export.
  """

  description: Dict[str, Any]

  def __call__(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    check_feed(feed, self._input_specs(), self.description["inputs"])
    return self._run(feed)

  def _input_specs(self) -> Mapping[str, Tuple[tf.DType, tf.TensorShape]]:
    raise NotImplementedError

  def _run(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    raise NotImplementedError

  def close(self) -> None:
    raise NotImplementedError

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class GraphModuleForwarder(Forwarder):
  """``forward_step`` of a graph module, restored from a checkpoint (``None``: fresh random init).

  Built exactly as the export builds it (:func:`returnn_rc.export.forward_graph.build_forward_graph`), so
  its outputs equal those of the exported SavedModel.
  """

  def __init__(
    self, graph_module: Any, checkpoint_path: Optional[str], *, epoch: Optional[int] = None, step: Optional[int] = None
  ):
    saved = {"step": 0, "epoch": 1}
    if checkpoint_path is not None:
      checkpoint_path = resolve_checkpoint(checkpoint_path)
      saved = read_step_epoch(checkpoint_path)
    self.forward_graph = build_forward_graph(
      graph_module, epoch=saved["epoch"] if epoch is None else epoch, step=saved["step"] if step is None else step
    )
    self.description = self.forward_graph.description
    self.session = make_session(self.forward_graph, checkpoint_path)

  def _input_specs(self):
    return {k: (t.dtype, t.shape) for k, t in self.forward_graph.inputs.items()}

  def _run(self, feed):
    return self.forward_graph.run(self.session, feed)

  def close(self):
    self.session.close()


class SavedModelForwarder(Forwarder):
  """An exported SavedModel, loaded with ``tf.compat.v1.saved_model.loader.load`` into its own graph."""

  def __init__(self, export_dir: str, *, signature_key: str = "serving_default"):
    self.description = export_dims.load_dims(export_dir)
    self.graph = tf.Graph()
    self.session = tf.compat.v1.Session(graph=self.graph)
    meta = tf.compat.v1.saved_model.loader.load(self.session, self.description["tags"], export_dir)
    if signature_key not in meta.signature_def:
      raise ValueError(f"{export_dir!r} has no signature {signature_key!r} (it has {sorted(meta.signature_def)})")
    sig = meta.signature_def[signature_key]
    self.inputs = {k: self.graph.get_tensor_by_name(v.name) for k, v in sig.inputs.items()}
    self.fetches = {k: self.graph.get_tensor_by_name(v.name) for k, v in sig.outputs.items()}

  def _input_specs(self):
    return {k: (t.dtype, t.shape) for k, t in self.inputs.items()}

  def _run(self, feed):
    return self.session.run(self.fetches, feed_dict={self.inputs[k]: v for k, v in feed.items()})

  def close(self):
    self.session.close()


def forward_sequences(
  forwarder: Forwarder, seqs: Sequence[Seq], *, batch_size: int, log_every_s: float = 10.0
) -> List[Seq]:
  """Runs ``forwarder`` over ``seqs`` in batches of ``batch_size``; returns per-sequence outputs.

  Each returned dict has every output ``<name>`` cut to its true lengths (no batch axis). Progress is
  logged at most every ``log_every_s`` seconds (``absl.logging.log_every_n_seconds``), and after the
  last batch.
  """
  if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
  if (
    isinstance(log_every_s, (bool, np.bool_))
    or not isinstance(log_every_s, numbers.Real)
    or not math.isfinite(log_every_s)
    or log_every_s <= 0
  ):
    raise ValueError(f"log_every_s must be a finite number of seconds > 0, got {log_every_s!r}")
  desc = forwarder.description
  results: List[Seq] = []
  n_batches = (len(seqs) + batch_size - 1) // batch_size
  for b in range(n_batches):
    batch = seqs[b * batch_size : (b + 1) * batch_size]
    feed = feed_from_padded(pad_sequences(batch, desc["inputs"]), desc["inputs"])
    results.extend(unpad_sequences(forwarder(feed), desc["outputs"]))
    if b + 1 < n_batches:
      logging.log_every_n_seconds(
        logging.INFO, "forward: batch %d/%d, %d/%d sequences", log_every_s, b + 1, n_batches, len(results), len(seqs)
      )
  logging.info("forward: batch %d/%d, %d/%d sequences", n_batches, n_batches, len(results), len(seqs))
  return results


# --- files ------------------------------------------------------------------------------------------

_PER_SEQ_KEY = re.compile(r"^seq(\d+)/(.+)$")


def read_sequences_npz(path: str, inputs_desc: TensorsDesc) -> List[Seq]:
  """Input sequences from ``path``: the padded format, or per-sequence keys ``"seq<i>/<name>"``.

  Raises ``ValueError`` naming the file and the key for a missing file, unknown layout, or sizes that
  are not integers, not one per sequence, negative or above the padded length.
  """
  if not isinstance(path, str) or not os.path.isfile(path):
    raise ValueError(f"input file {path!r} does not exist (expected an .npz file)")
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  per_seq = {k: _PER_SEQ_KEY.match(k) for k in arrays}
  if arrays and all(per_seq.values()):
    seqs: Dict[int, Seq] = {}
    for key, m in per_seq.items():
      seqs.setdefault(int(m.group(1)), {})[m.group(2)] = arrays[key]
    if sorted(seqs) != list(range(len(seqs))):
      raise ValueError(f"{path!r}: per-sequence keys must be numbered seq0 .. seq{len(seqs) - 1}, got {sorted(seqs)}")
    return [seqs[i] for i in range(len(seqs))]
  try:
    return unpad_sequences(arrays, inputs_desc)
  except ValueError as exc:
    raise ValueError(
      f"{path!r}: {exc}; expected the padded format ('<name>', '<name>:size<axis>') or "
      f"per-sequence keys 'seq<i>/<name>'"
    ) from None


def check_output_path(path: Any) -> str:
  """``path`` if an ``.npz`` can be written there: ``ValueError`` unless it ends with ``.npz`` (``np.savez``
  would append it) and its directory exists."""
  if not isinstance(path, str) or not path.endswith(".npz") or path.endswith(os.sep + ".npz") or path == ".npz":
    raise ValueError(f"output file must be a path ending with '.npz', got {path!r}")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ValueError(f"output file {path!r}: directory {directory!r} does not exist")
  if os.path.isdir(path):
    raise ValueError(f"output file {path!r} is a directory")
  return path


def write_outputs_npz(path: str, outputs: Sequence[Seq], outputs_desc: TensorsDesc) -> None:
  """Writes per-sequence outputs in the padded format (``<name>`` ``[N,...]`` + ``<name>:size<axis>``) to
  ``path`` (checked by :func:`check_output_path`)."""
  check_output_path(path)
  np.savez(path, **pad_sequences(outputs, outputs_desc))
