"""The graph-module contract: loading and checking a graph module, its templates, placeholders, batches.

A graph module (RETURNN's config-function style; examples in the repository's ``graphs/``) defines:

- ``extern_data_template() -> rc.TensorDict``: one template :class:`rc.Tensor` (no raw tensor) per
  input, ``rc.batch_dim`` at axis 0, dynamic dims ``rc.Dim(None, ...)``.
- ``get_model(*, epoch, step)``: creates the variables, returns the model object.
- ``train_step(*, model, extern_data)``: marks losses (``rc.get_run_ctx().mark_as_loss``).
- ``forward_step(*, model, extern_data)``: marks outputs (``mark_as_output``).
- optional ``model_outputs_template([extern_data]) -> rc.TensorDict``: the expected outputs.
- optional ``default_data(split, max_seqs=None) -> list[dict[str, np.ndarray]]``: the built-in data,
  one dict per sequence (no batch axis, dynamic axes at their true length).
- optional ``dataset_from_files(files: tf.data.Dataset, *, extern_data: rc.TensorDict) -> tf.data.Dataset``:
  reads files of the module's own format (instead of the engine's record files, see
  ``returnn_rc.engine.records``). ``files`` yields the file names (scalar ``tf.string``, already
  globbed and in the epoch's order); the result yields one sequence per element, a dict input name
  → tensor of ``extern_data``'s shape without the batch axis (dynamic axes at their true length) and
  its dtype. Build it from ``tf.data`` ops (e.g. ``files.interleave(tf.data.TextLineDataset, ...)``
  + a parallel ``map``), not ``from_generator``, to keep Python out of the per-sequence path. The
  engine adds the lengths, shuffling, bucketing and batching (``returnn_rc.engine.data.DATASET_HOOK``).

This module is core: it knows nothing of the engine, the export or the ``graphs`` package.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import types
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import Tensor, TensorDict, check_name, size_key

REQUIRED_FUNCTIONS = ("extern_data_template", "get_model", "train_step", "forward_step")
#: Prefix of the ``sys.modules`` key of a graph module loaded from a ``.py`` path.
PATH_MODULE_PREFIX = "returnn_rc_graph."

Seq = Mapping[str, np.ndarray]


# --- loading ------------------------------------------------------------------------------------


def load_graph_module(name_or_path: str) -> types.ModuleType:
  """Imports and checks a graph module given as a dotted module name or a path to a ``.py`` file.

  A file is registered in ``sys.modules`` (as ``returnn_rc_graph.<file stem>``) before it runs, so
  that ``dataclasses``, ``pickle`` and ``typing`` find it (e.g. a ``@dataclass`` under ``from
  __future__ import annotations``). Short names such as ``"char_lm"`` of the repository's ``graphs/``
  are resolved by the tools (``tools/graph_names.py``), not here.

  Raises:
    ValueError: the module or file does not exist, or lacks one of :data:`REQUIRED_FUNCTIONS`.
  """
  if not isinstance(name_or_path, str) or not name_or_path:
    raise ValueError(f"graph module must be a dotted module name or a .py path, got {name_or_path!r}")
  if name_or_path.endswith(".py") or os.sep in name_or_path or (os.altsep and os.altsep in name_or_path):
    module = _load_file(name_or_path)
  else:
    try:
      module = importlib.import_module(name_or_path)
    except ModuleNotFoundError as exc:
      if exc.name is None or not name_or_path.startswith(exc.name):
        raise  # the module exists but one of its own imports is missing
      raise ValueError(
        f"graph module {name_or_path!r} not found (no module {exc.name!r} on sys.path); pass a "
        f"dotted module name or a path to a .py file"
      ) from None
  check_graph_module(module)
  return module


def _load_file(path: str) -> types.ModuleType:
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise ValueError(f"graph module file {path!r} does not exist")
  if not path.endswith(".py"):
    raise ValueError(f"graph module file {path!r} is not a .py file")
  stem = os.path.splitext(os.path.basename(path))[0]
  if not stem.isidentifier():
    raise ValueError(f"graph module file {path!r}: the file name {stem!r} must be a Python identifier")
  key = PATH_MODULE_PREFIX + stem
  spec = importlib.util.spec_from_file_location(key, path)
  module = importlib.util.module_from_spec(spec)
  previous = sys.modules.get(key)
  sys.modules[key] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    if previous is None:
      sys.modules.pop(key, None)
    else:
      sys.modules[key] = previous
    raise
  return module


def graph_name_of(module: Any) -> str:
  """The short name of a graph module (the last component of its module name, or its file stem)."""
  name = getattr(module, "__name__", None) or type(module).__name__
  return name.rsplit(".", 1)[-1]


def check_graph_module(module: Any) -> None:
  """``ValueError`` naming the module and the missing functions if one of :data:`REQUIRED_FUNCTIONS` is missing."""
  missing = [f for f in REQUIRED_FUNCTIONS if not callable(getattr(module, f, None))]
  if missing:
    raise ValueError(
      f"graph module {graph_name_of(module)!r} is missing function(s) {missing}; a graph module must define "
      f"{list(REQUIRED_FUNCTIONS)} (see returnn_rc.graph_module)"
    )


# --- templates ----------------------------------------------------------------------------------


def extern_data_template(module: Any) -> TensorDict:
  """``module.extern_data_template()``, checked.

  Raises:
    TypeError / ValueError: not a :class:`rc.TensorDict` of :class:`rc.Tensor`, no inputs, an invalid input
      name (see :data:`returnn_rc.tensor.VALID_NAME_TEXT`), batch dim not at axis 0, or a batch dim twice.
  """
  what = f"graph module {graph_name_of(module)!r}"
  template = module.extern_data_template()
  if not isinstance(template, TensorDict):
    raise TypeError(f"{what}: extern_data_template() must return an rc.TensorDict, got {type(template).__name__}")
  if not len(template):
    raise ValueError(f"{what}: extern_data_template() returned no inputs")
  for name, tmpl in template.items():
    check_name(name, f"{what}: extern-data input", key="signature key")
    if not isinstance(tmpl, Tensor):
      raise TypeError(f"{what}: extern_data {name!r} must be an rc.Tensor, got {type(tmpl).__name__}")
    if not tmpl.dims or not tmpl.dims[0].is_batch_dim:
      raise ValueError(f"{what}: extern_data {name!r} must have rc.batch_dim as axis 0, got dims {list(tmpl.dims)}")
    if any(d.is_batch_dim for d in tmpl.dims[1:]):
      raise ValueError(f"{what}: extern_data {name!r} has the batch dim twice: {list(tmpl.dims)}")
  return template


def outputs_template(module: Any, extern_data: TensorDict) -> Optional[TensorDict]:
  """``module.model_outputs_template`` called with ``extern_data`` (or without arguments, if it takes
  none); None if the module has none. ``TypeError`` unless it returns an :class:`rc.TensorDict`."""
  func = getattr(module, "model_outputs_template", None)
  if func is None:
    return None
  if not callable(func):
    raise TypeError(f"{graph_name_of(module)}.model_outputs_template must be a function, got {type(func).__name__}")
  expected = func(extern_data) if inspect.signature(func).parameters else func()
  if not isinstance(expected, TensorDict):
    raise TypeError(
      f"{graph_name_of(module)}.model_outputs_template must return an rc.TensorDict, got {type(expected).__name__}"
    )
  return expected


def default_data(module: Any, split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  """``module.default_data(split[, max_seqs])`` as a list; ``ValueError`` if the module has none."""
  if not isinstance(split, str) or not split:
    raise TypeError(f"split must be a non-empty str such as 'train' or 'dev', got {split!r}")
  if max_seqs is not None and (isinstance(max_seqs, (bool, np.bool_)) or not isinstance(max_seqs, (int, np.integer))):
    raise TypeError(f"max_seqs must be an int or None, got {type(max_seqs).__name__} {max_seqs!r}")
  if max_seqs is not None and max_seqs < 1:
    raise ValueError(f"max_seqs must be >= 1 (or None for all), got {max_seqs}")
  func = getattr(module, "default_data", None)
  if not callable(func):
    raise ValueError(
      f"graph module {graph_name_of(module)!r} has no default_data(split) function; pass the "
      f"data explicitly (e.g. train_data=..., or --train_data=<files>)"
    )
  if max_seqs is not None and "max_seqs" in inspect.signature(func).parameters:
    seqs = func(split, max_seqs=max_seqs)
  else:
    seqs = func(split)
  seqs = list(seqs)
  return seqs if max_seqs is None else seqs[:max_seqs]


# --- placeholders and padded batches ------------------------------------------------------------


def make_placeholders(template: TensorDict, *, check_shape: bool = False) -> Dict[str, tf.Tensor]:
  """Gives each input of ``template`` a placeholder ``[B,...]`` and each dynamic dim int32 sizes ``[B]``.

  Sets the raw tensors of ``template`` (and the sizes of its dynamic dims) in place, in the current
  graph, under the name scope ``extern_data/``: ``extern_data/<name>`` and
  ``extern_data/<name>_size<axis>``. A dim shared by several inputs gets one sizes placeholder, named
  after the first input that has it. Sizes are per graph (:attr:`rc.Dim.dyn_size_ext`): a dynamic dim
  gets a placeholder unless it has sizes in the current graph already, so the same template (e.g.
  with module-level dims) serves several graphs.

  Args:
    template: a template (:func:`extern_data_template`); its dynamic dims need no sizes in this graph.
    check_shape: wrap each input in ``tf.ensure_shape`` (a fed value of the wrong rank then fails
      naming the input, also through a SavedModel signature).
  Returns:
    key → placeholder, the keys being ``"<name>"`` and ``"<name>:size<axis>"`` (the feed keys of
    :func:`pad_batch`'s result; see :func:`feed_dict`).
  """
  placeholders: Dict[str, tf.Tensor] = {}
  for name, tensor in template.items():
    shape = [d.dimension if d.is_static() else None for d in tensor.dims]
    raw = tf.compat.v1.placeholder(tf.as_dtype(tensor.dtype), shape, name=f"extern_data/{name}")
    placeholders[name] = raw
    if check_shape:
      raw = tf.ensure_shape(raw, shape, name=f"extern_data/{name}_checked")
    tensor.raw_tensor = raw
    for axis, d in enumerate(tensor.dims):
      if d.is_dynamic() and d.dyn_size is None:
        d.dyn_size = tf.compat.v1.placeholder(tf.int32, [None], name=f"extern_data/{name}_size{axis}")
        placeholders[size_key(name, axis)] = d.dyn_size
  return placeholders


def feed_dict(placeholders: Mapping[str, tf.Tensor], batch: Mapping[str, np.ndarray]) -> Dict[tf.Tensor, Any]:
  """``{placeholder: value}`` for a :func:`pad_batch` batch (keys without a placeholder are ignored:
  the sizes of a shared dim are fed once)."""
  missing = sorted(k for k in placeholders if k not in batch)
  if missing:
    raise ValueError(f"batch lacks {missing}; it has {sorted(batch)}")
  return {ph: batch[key] for key, ph in placeholders.items()}


def pad_arrays(
  arrays: Sequence[np.ndarray],
  *,
  rank: int,
  dtype: Any,
  static_shape: Optional[Sequence[Optional[int]]] = None,
  what: str = "sequence",
) -> np.ndarray:
  """Per-sequence arrays of rank ``rank`` → one zero-padded ``[N,...]`` array (the max size per axis).

  Args:
    arrays: ``N`` arrays, each of rank ``rank``.
    rank: the rank of each array (without the batch axis).
    dtype: of the result.
    static_shape: per axis the size every array must have (None: any); it is also the size of that axis
      when ``arrays`` is empty, so an empty batch keeps its static dims (``[0,0,F]``, not ``[0,0,0]``).
    what: named in error messages (e.g. the input's name).
  Raises:
    ValueError: an array of another rank, or of another size on a static axis.
  """
  if static_shape is not None and len(static_shape) != rank:
    raise ValueError(f"{what}: static_shape {list(static_shape)} must have {rank} entries (the rank)")
  for i, arr in enumerate(arrays):
    if arr.ndim != rank:
      raise ValueError(f"{what}: sequence {i} has rank {arr.ndim} (shape {arr.shape}), expected rank {rank}")
    for k, size in enumerate(static_shape or ()):
      if size is not None and arr.shape[k] != size:
        raise ValueError(
          f"{what}: sequence {i} has size {arr.shape[k]} at axis {k} (shape {arr.shape}), "
          f"expected the static size {size}"
        )
  max_shape = [
    max(
      [a.shape[k] for a in arrays],
      default=static_shape[k] if static_shape is not None and static_shape[k] is not None else 0,
    )
    for k in range(rank)
  ]
  padded = np.zeros([len(arrays)] + max_shape, dtype=dtype)
  for i, arr in enumerate(arrays):
    padded[(i,) + tuple(slice(0, s) for s in arr.shape)] = arr
  return padded


def pad_batch(template: TensorDict, seqs: Sequence[Seq]) -> Dict[str, np.ndarray]:
  """One padded batch of ``seqs``: ``"<name>"`` ``[B,...]`` zero-padded per input and
  ``"<name>:size<axis>"`` ``[B]`` int32 per dynamic axis (the format of the engine's ``tf.data``
  batches and of :meth:`rc.TensorDict.as_raw_tensor_dict`). Static dims keep their size, also in an
  empty batch.

  Raises:
    ValueError: a sequence lacks an input, or an input of the wrong rank or static size.
  """
  out: Dict[str, np.ndarray] = {}
  for i, seq in enumerate(seqs):
    missing = [name for name in template if name not in seq]
    if missing:
      raise ValueError(f"sequence {i} lacks input(s) {missing}; it has {sorted(seq)}")
  for name, tmpl in template.items():
    arrays = [np.asarray(seq[name]) for seq in seqs]
    static = [d.dimension if d.is_static() else None for d in tmpl.dims[1:]]
    out[name] = pad_arrays(
      arrays,
      rank=tmpl.batch_ndim - 1,
      dtype=tf.as_dtype(tmpl.dtype).as_numpy_dtype,
      static_shape=static,
      what=f"input {name!r}",
    )
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        out[size_key(name, axis)] = np.array([a.shape[axis - 1] for a in arrays], np.int32)
  return out
