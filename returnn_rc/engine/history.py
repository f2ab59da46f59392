"""Per-epoch results, the epoch table, and TensorBoard scalars from fetched figures.

Figures are computed in Python from one fetch per step (``rc.report_fetches``): per batch
``summed / inv_norm`` per loss, per epoch ``Σ summed / Σ inv_norm`` (``rc.EpochAccumulator``).
Scale and ``use_normalized_loss`` never change them; ``as_error`` losses are listed as errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow as tf


@dataclasses.dataclass
class EpochResult:
  """Figures of one epoch. ``train`` / ``dev``: loss name → Σ summed / Σ inv_norm."""

  epoch: int
  step: int  # global step after the epoch
  learning_rate: float  # the rate used in this epoch
  train: Dict[str, float]
  dev: Dict[str, float]
  num_batches: int = 0
  steps_per_sec: float = 0.0
  seconds: float = 0.0
  batch_figures: List[Dict[str, float]] = dataclasses.field(default_factory=list, repr=False)

  def to_json(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d.pop("batch_figures")
    return d

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "EpochResult":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in fields})


def figure_label(name: str, errors: Sequence[str]) -> str:
  """Column label: ``name`` for a loss, ``name(err)`` for an ``as_error`` loss."""
  return f"{name}(err)" if name in errors else name


def format_table(results: Sequence[EpochResult], *, names: Sequence[str], errors: Sequence[str]) -> str:
  """A plain-text table: epoch, step, lr, train and dev figure per loss, steps/s."""
  cols = ["epoch", "step", "lr"]
  cols += [f"train {figure_label(n, errors)}" for n in names]
  has_dev = any(r.dev for r in results)
  if has_dev:
    cols += [f"dev {figure_label(n, errors)}" for n in names]
  cols += ["steps/s", "sec"]
  rows = []
  for r in results:
    row = [str(r.epoch), str(r.step), f"{r.learning_rate:.3g}"]
    row += [_fmt(r.train.get(n)) for n in names]
    if has_dev:
      row += [_fmt(r.dev.get(n)) for n in names]
    row += [f"{r.steps_per_sec:.1f}", f"{r.seconds:.1f}"]
    rows.append(row)
  widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
  lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
  lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
  return "\n".join(lines)


def _fmt(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4f}"


class SummaryWriter:
  """Per-loss TensorBoard scalars (``tf.compat.v1.summary.FileWriter`` in the train dir; ``filename_suffix``
  ends the event file's name, so the engine knows its own files).

  Written from the already fetched numbers as ``Summary`` protos: no summary ops in the graph, no
  extra ``Session.run``.
  """

  def __init__(self, logdir: str, *, filename_suffix: str = ""):
    self._writer = tf.compat.v1.summary.FileWriter(logdir, filename_suffix=filename_suffix)

  def scalars(self, prefix: str, figures: Mapping[str, float], step: int) -> None:
    values = [tf.compat.v1.Summary.Value(tag=f"{prefix}/{name}", simple_value=float(v)) for name, v in figures.items()]
    self._writer.add_summary(tf.compat.v1.Summary(value=values), global_step=int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
