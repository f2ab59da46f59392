"""returnn_rc: RETURNN's run context (``returnn.frontend.run_ctx``) for TensorFlow graph mode.

Write a model once as RETURNN-style ``train_step`` / ``forward_step`` functions, build one
``tf.compat.v1`` graph from them, and switch training / evaluation / forwarding at
``Session.run`` time through a symbolic train flag, step and epoch (:mod:`returnn_rc.graph_state`).
"""

from returnn_rc import graph_state, packing
from returnn_rc.losses import Loss
from returnn_rc.nn import dropout
from returnn_rc.packing import pack, unpack
from returnn_rc.reporting import EpochAccumulator, report_fetches
from returnn_rc.run_ctx import (
  RunCtx,
  get_run_ctx,
  get_run_ctx_step,
  init_forward_step_run_ctx,
  init_train_step_run_ctx,
  reset_run_ctx,
)
from returnn_rc.tensor import Dim, Tensor, TensorDict, batch_dim, convert_to_tensor

__version__ = "0.1.0"

__all__ = [
  "Dim",
  "EpochAccumulator",
  "Loss",
  "RunCtx",
  "Tensor",
  "TensorDict",
  "batch_dim",
  "convert_to_tensor",
  "dropout",
  "get_run_ctx",
  "get_run_ctx_step",
  "graph_state",
  "init_forward_step_run_ctx",
  "init_train_step_run_ctx",
  "pack",
  "packing",
  "report_fetches",
  "reset_run_ctx",
  "unpack",
]


def __getattr__(name):
  # `rc.ops` is imported lazily: it loads the custom-op library only on first use.
  if name == "ops":
    import importlib  # pylint: disable=import-outside-toplevel

    return importlib.import_module("returnn_rc.ops")
  raise AttributeError(f"module 'returnn_rc' has no attribute {name!r}")
