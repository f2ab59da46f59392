"""Where loss reduction meets the rewrite: which losses qualify, the switch, and the debug listing."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Set

import tensorflow as tf

from returnn_rc.packing import rewrite, switch
from returnn_rc.packing.rewrite import PackingReport
from returnn_rc.tensor import Tensor, batch_dim


def frame_loss_dims(loss: Tensor) -> Optional[str]:
  """None if ``loss`` is ``[B,T,...]`` with one dynamic dim T at axis 1 (rewritable), else why not."""
  dynamic = loss.dynamic_dims
  if len(dynamic) != 1:
    return f"{len(dynamic)} dynamic dims (only losses with one are rewritten)"
  if len(loss.dims) < 2 or loss.dims[0] is not batch_dim or loss.dims[1] is not dynamic[0]:
    return f"dims {list(loss.dims)} are not [batch, time, ...]"
  raw = loss.raw_tensor
  if raw is None or not isinstance(raw, tf.Tensor) or raw.shape.rank is None:
    return "raw tensor of unknown rank"
  return None


def in_xla_context() -> bool:
  from returnn_rc.ops import flatten as _flatten  # pylint: disable=import-outside-toplevel

  return _flatten._in_xla_context()  # pylint: disable=protected-access


def _packed_loss_sinks(graph: tf.Graph, sibling_losses: Sequence[Tensor]) -> Set[str]:
  """Ops of the raw tensors of the sibling losses (marked in the same run context) that will be packed."""
  out = set()
  for loss in sibling_losses:
    raw = loss.raw_tensor
    if isinstance(raw, tf.Tensor) and raw.graph is graph and frame_loss_dims(loss) is None:
      out.add(raw.op.name)
  return out


def pack_frames_upstream(tensor: Tensor, *, sibling_losses: Sequence[Tensor] = ()) -> Optional[tf.Tensor]:
  """``tensor`` ``[B,T,...]`` packed to ``[N,...]`` with its row-wise producers rebuilt on packed frames.

  None if the rewrite is switched off (see :mod:`returnn_rc.packing.switch`), ``tensor`` is not
  ``[B,T,...]`` with one dynamic dim, or no op upstream is row-wise: the caller packs the values then.
  Every call leaves a :class:`PackingReport` (:func:`report`).
  """
  raw = tensor.raw_tensor
  why = frame_loss_dims(tensor)
  xla = in_xla_context()
  if why is None:
    on, why = switch.decide(xla=xla)
    why = None if on else why
  if why is not None:
    if isinstance(raw, tf.Tensor):
      rewrite.store(raw.graph).reports[raw.name] = PackingReport(root=raw.name, reason=why)
    return None
  seq_lens = tensor.dims[1].get_dyn_size()
  packed, _ = rewrite.pack_upstream(
    raw, seq_lens, excluded_sinks=_packed_loss_sinks(raw.graph, sibling_losses), checks=not xla
  )
  return packed


def report(x: Any) -> PackingReport:
  """The :class:`PackingReport` of a loss: an ``rc.Loss`` (reduced first if it was not yet), or the raw
  tensor (``rc.Tensor`` / ``tf.Tensor``) of a reduced loss or of ``rc.pack``; ValueError if none."""
  marked = None
  if hasattr(x, "get_summed_loss") and hasattr(x, "use_flatten_frames"):  # an rc.Loss
    marked = x
    x.get_summed_loss()  # the rewrite happens when the loss is reduced
    x = x.loss
  if isinstance(x, Tensor):
    x = x.get_raw()
  if not isinstance(x, tf.Tensor):
    raise TypeError(f"expected an rc.Loss, rc.Tensor or tf.Tensor, got {type(x).__name__} {x!r}")
  rep = rewrite.report(x.name, x.graph)
  if rep is not None:
    return rep
  if marked is not None:  # reduced without asking the rewrite
    why = "use_flatten_frames=False" if not marked.use_flatten_frames else frame_loss_dims(marked.loss)
    return PackingReport(root=x.name, reason=why or "not reduced through the packed path")
  raise ValueError(f"no packing report for {x.name}: its loss was not reduced (get_summed_loss) yet")


def packed_ops(x: Any) -> List[str]:
  """Names of the ops the rewrite rebuilt on packed frames for this loss (see :func:`report`)."""
  return list(report(x).packed_ops)
