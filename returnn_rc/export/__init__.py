"""Serving: forward graph (flag frozen off, op → pure-TF fallback) → SavedModel + dims JSON → forwarding.

- :mod:`~returnn_rc.export.forward_graph`: the ``forward_step`` graph as it is exported and forwarded;
- :mod:`~returnn_rc.export.saved_model`: :func:`export_saved_model`;
- :mod:`~returnn_rc.export.dims`: the dims description stored beside the SavedModel;
- :mod:`~returnn_rc.export.forwarding`: batched forwarding (graph module + checkpoint, or SavedModel).
"""

from returnn_rc.export.dims import DIMS_FILE, load_dims, tensors_from_outputs
from returnn_rc.export.forward_graph import ForwardGraph, build_forward_graph
from returnn_rc.export.saved_model import SIGNATURE_KEY, TAGS, check_export_dir, export_saved_model
from returnn_rc.tensor import size_key

__all__ = [
  "DIMS_FILE",
  "ForwardGraph",
  "SIGNATURE_KEY",
  "TAGS",
  "build_forward_graph",
  "check_export_dir",
  "export_saved_model",
  "load_dims",
  "size_key",
  "tensors_from_outputs",
]
