"""Exact reporting of marked losses: per batch and per epoch ``Σ summed / Σ inv_norm``.

One ``Session.run`` per step fetches :func:`report_fetches` (the summed loss and the inverse norm
factor of each loss, two scalars per loss); :class:`EpochAccumulator` adds them up over the batches of
an epoch. The figure is never a mean of per-batch means, and a loss's ``scale`` or
``use_normalized_loss`` never changes it.

The same rule holds for a batch and for an epoch (:func:`ratio`): ``summed / inv_norm``, and 0 where
``inv_norm`` is 0 (an empty batch or epoch), as the graph's ``Loss.get_mean_loss()``.
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import tensorflow as tf

from returnn_rc.losses import Loss


def report_fetches(losses: Mapping[str, Loss]) -> Dict[str, Tuple[tf.Tensor, tf.Tensor]]:
  """name → (summed, inv_norm) raw scalars: everything per-batch and per-epoch reports need, for one
  ``Session.run`` fetch together with the train op. ``TypeError`` unless ``losses`` maps names to
  :class:`Loss` (e.g. ``ctx.losses``)."""
  if not isinstance(losses, Mapping) or not all(isinstance(loss, Loss) for loss in losses.values()):
    raise TypeError(f"report_fetches: losses must map names to rc.Loss (e.g. ctx.losses), got {type(losses).__name__}")
  return {
    name: (loss.get_summed_loss().get_raw(), loss.get_inv_norm_factor().get_raw()) for name, loss in losses.items()
  }


def ratio(summed: float, inv_norm: float) -> float:
  """``summed / inv_norm``; 0 for ``inv_norm == 0`` (the rule of ``Loss.get_mean_loss()``)."""
  if inv_norm == 0:
    return 0.0
  return summed / inv_norm


class EpochAccumulator:
  """Exact per-epoch figures: ``sum(summed) / sum(inv_norm)`` over the batches of an epoch.

  Usage::

    acc = EpochAccumulator()
    for each batch: acc.add(session.run(report_fetches(ctx.losses)))
    acc.figures()  # name -> float
  """

  def __init__(self):
    self._summed: Dict[str, float] = {}
    self._inv_norm: Dict[str, float] = {}
    self.num_batches = 0

  def add(self, fetched: Mapping[str, Tuple[float, float]]) -> Dict[str, float]:
    """Adds one batch's ``{name: (summed, inv_norm)}``; returns that batch's figures."""
    batch = {}
    for name, pair in fetched.items():
      try:
        summed, inv_norm = (float(v) for v in pair)
      except (TypeError, ValueError):
        raise TypeError(
          f"EpochAccumulator.add: loss {name!r} must be a pair of numbers (summed, inv_norm) as "
          f"report_fetches() gives, got {pair!r}"
        ) from None
      batch[name] = (summed, inv_norm)
    for name, (summed, inv_norm) in batch.items():
      self._summed[name] = self._summed.get(name, 0.0) + summed
      self._inv_norm[name] = self._inv_norm.get(name, 0.0) + inv_norm
    self.num_batches += 1
    return {name: ratio(s, n) for name, (s, n) in batch.items()}

  def figures(self) -> Dict[str, float]:
    """name → sum(summed) / sum(inv_norm) over all batches added so far."""
    return {name: ratio(self._summed[name], self._inv_norm[name]) for name in self._summed}

  def totals(self) -> Dict[str, Tuple[float, float]]:
    """name → (sum(summed), sum(inv_norm))."""
    return {name: (self._summed[name], self._inv_norm[name]) for name in self._summed}
