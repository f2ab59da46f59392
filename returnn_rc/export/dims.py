"""The dims description of an exported SavedModel: JSON that rebuilds the :class:`rc.Tensor` views.

A SavedModel signature only knows raw tensors (``[B,T,F]`` with ``B`` and ``T`` unknown). The export
stores next to it, in ``<export_dir>/assets.extra/returnn_rc_dims.json``, for every signature input
and output: dtype, and per axis the dim's name, kind (``"batch"``, ``"dynamic"``, ``"static"``),
static size, and for a dynamic dim the signature key holding its sizes ``[B]``. Dims shared between
tensors (the same :class:`rc.Dim` object) share a ``dim_id``. Example (``[B,T,F]`` float input)::

  {"format": "returnn_rc.export", "version": 1, "signature_key": "serving_default", "tags": ["serve"],
   "inputs": {"data": {"dtype": "float32", "batch_axis": 0, "dynamic_axes": [1], "feature_axis": 2,
                       "sparse_dim": null,
                       "dims": [{"dim_id": 0, "name": "batch", "kind": "batch", "size": null},
                                {"dim_id": 1, "name": "time", "kind": "dynamic", "size": null,
                                 "size_key": "data:size1"},
                                {"dim_id": 2, "name": "feature", "kind": "static", "size": 3}]}},
   "outputs": {...same form...}, "graph_module": "graphs.char_lm", "epoch": 3, "step": 1200, ...}

Reading it needs only ``json``; :func:`tensors_from_outputs` rebuilds :class:`rc.Tensor` objects.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import tensorflow as tf

from returnn_rc.tensor import Dim, Tensor, TensorDict, batch_dim, size_key

DIMS_FORMAT = "returnn_rc.export"
DIMS_VERSION = 1
#: Path of the dims JSON relative to the export dir (``assets.extra`` is not loaded by TensorFlow).
DIMS_FILE = os.path.join("assets.extra", "returnn_rc_dims.json")

KIND_BATCH = "batch"
KIND_DYNAMIC = "dynamic"
KIND_STATIC = "static"


class DimIds:
  """Gives each distinct :class:`rc.Dim` object a small int id (the same object, the same id)."""

  def __init__(self):
    self._ids: Dict[int, int] = {}
    self._keep = []  # keeps the dims alive, so that id() values are not reused

  def __call__(self, dim: Dim) -> int:
    key = id(dim)
    if key not in self._ids:
      self._ids[key] = len(self._ids)
      self._keep.append(dim)
    return self._ids[key]


def describe_tensor(tensor: Tensor, *, dim_ids: DimIds, size_keys: Mapping[int, str]) -> Dict[str, Any]:
  """JSON-able description of ``tensor``; ``size_keys`` maps ``id(dim)`` → signature key of its sizes."""
  dims = []
  for axis, d in enumerate(tensor.dims):
    if d.is_batch_dim:
      kind = KIND_BATCH
    elif d.is_dynamic():
      kind = KIND_DYNAMIC
    else:
      kind = KIND_STATIC
    entry: Dict[str, Any] = {"dim_id": dim_ids(d), "name": d.name, "kind": kind, "size": d.dimension}
    if kind == KIND_DYNAMIC:
      entry["size_key"] = size_keys.get(id(d), size_key(tensor.name, axis))
    dims.append(entry)
  sparse = None
  if tensor.sparse_dim is not None:
    sparse = {"dim_id": dim_ids(tensor.sparse_dim), "name": tensor.sparse_dim.name, "size": tensor.sparse_dim.dimension}
  return {
    "dtype": tensor.dtype,
    "dims": dims,
    "batch_axis": next((i for i, d in enumerate(tensor.dims) if d.is_batch_dim), None),
    "dynamic_axes": [i for i, d in enumerate(tensor.dims) if d.is_dynamic()],
    "feature_axis": None if tensor.feature_dim is None else tensor.get_axis_from_dim(tensor.feature_dim),
    "sparse_dim": sparse,
  }


def dims_path(export_dir: str) -> str:
  return os.path.join(export_dir, DIMS_FILE)


def save_dims(export_dir: str, description: Mapping[str, Any]) -> str:
  """Writes ``description`` to ``<export_dir>/assets.extra/returnn_rc_dims.json``; returns the path."""
  path = dims_path(export_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(description, f, indent=1, sort_keys=True)
    f.write("\n")
  return path


def load_dims(export_dir: str) -> Dict[str, Any]:
  """The dims description of an export made by :func:`returnn_rc.export.export_saved_model`.

  Raises ``ValueError`` naming the path if it is missing or not such a description.
  """
  path = dims_path(export_dir)
  if not os.path.isfile(path):
    raise ValueError(
      f"{export_dir!r} has no returnn_rc dims description {DIMS_FILE!r}; "
      f"was it exported with returnn_rc.export.export_saved_model?"
    )
  with open(path, encoding="utf-8") as f:
    desc = json.load(f)
  if not isinstance(desc, dict) or desc.get("format") != DIMS_FORMAT:
    raise ValueError(f"{path!r} is not a returnn_rc dims description (format {DIMS_FORMAT!r})")
  if desc.get("version") != DIMS_VERSION:
    raise ValueError(
      f"{path!r} has dims format version {desc.get('version')!r}; this returnn_rc reads version {DIMS_VERSION}"
    )
  return desc


def _as_raw(value: Any) -> tf.Tensor:
  return value if isinstance(value, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(np.asarray(value))


def tensors_from_description(
  tensors_desc: Mapping[str, Mapping[str, Any]], raw: Optional[Mapping[str, Any]] = None
) -> TensorDict:
  """Rebuilds :class:`rc.Tensor` views from a description (``desc["inputs"]`` or ``desc["outputs"]``).

  Dims with the same ``dim_id`` become the same :class:`rc.Dim` object; the batch dim is
  ``rc.batch_dim``. With ``raw`` (signature key → array or ``tf.Tensor``, e.g. what a
  ``serving_default`` call returned) the tensors get their raw tensors and each dynamic dim its
  sizes ``[B]`` from ``raw[size_key]``; without, they are templates.
  """
  dims: Dict[int, Dim] = {}

  def get_dim(entry: Mapping[str, Any], kind: str) -> Dim:
    dim_id = entry["dim_id"]
    if dim_id not in dims:
      if kind == KIND_BATCH:
        dims[dim_id] = batch_dim
      else:
        dims[dim_id] = Dim(entry["size"] if kind == KIND_STATIC else None, name=entry["name"])
    return dims[dim_id]

  out = TensorDict()
  for name, t_desc in tensors_desc.items():
    t_dims = [get_dim(e, e["kind"]) for e in t_desc["dims"]]
    sparse = None
    if t_desc.get("sparse_dim") is not None:
      s = t_desc["sparse_dim"]
      sparse = get_dim(s, KIND_STATIC if s["size"] is not None else KIND_DYNAMIC)
    feature_axis = t_desc.get("feature_axis")
    raw_t = None
    if raw is not None:
      if name not in raw:
        raise ValueError(f"no value for {name!r} in the given outputs (keys {sorted(raw)})")
      raw_t = _as_raw(raw[name])
      for e, d in zip(t_desc["dims"], t_dims):
        if e["kind"] == KIND_DYNAMIC and d.dyn_size is None:
          key = e["size_key"]
          if key not in raw:
            raise ValueError(
              f"no sizes {key!r} for dim {e['name']!r} of {name!r} in the given outputs (keys {sorted(raw)})"
            )
          d.dyn_size = _as_raw(raw[key])
    out[name] = Tensor(
      name,
      t_dims,
      t_desc["dtype"],
      raw_tensor=raw_t,
      sparse_dim=sparse,
      feature_dim=None if feature_axis is None else t_dims[feature_axis],
    )
  return out


def tensors_from_outputs(dims_or_export_dir: Union[str, Mapping[str, Any]], outputs: Mapping[str, Any]) -> TensorDict:
  """The outputs of a ``serving_default`` call as :class:`rc.Tensor` views with their dims.

  Args:
    dims_or_export_dir: the export dir, or the description from :func:`load_dims`.
    outputs: signature output key → array / ``tf.Tensor`` (``"<name>"`` and ``"<name>:size<axis>"``).
  """
  desc = load_dims(dims_or_export_dir) if isinstance(dims_or_export_dir, str) else dims_or_export_dir
  return tensors_from_description(desc["outputs"], outputs)
