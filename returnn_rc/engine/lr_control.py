"""Learning-rate control keyed by a loss name (Newbob-like), with its state in graph variables.

The learning rate is a non-trainable float32 variable the optimizer reads; after each epoch it is
multiplied by ``decay`` when the keyed loss's figure (dev, else train) did not improve on the
previous epoch's by at least ``rel_threshold`` (relative). The rate and the previous figure are
variables, so a checkpoint restores them and a resumed run uses the same rate.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import tensorflow as tf


def check_loss_name(name: str, available: Iterable[str]) -> str:
  """``name`` if it is one of ``available``; else ``ValueError`` naming it and the loss names."""
  available = list(available)
  if name not in available:
    raise ValueError(f"learning-rate control: unknown loss name {name!r}; the graph's losses are {available}")
  return name


class NewbobLR:
  """Builds the LR variables in the current graph (call before ``graph.finalize()``).

  Args:
    learning_rate: initial learning rate (>= 0).
    loss_name: the loss whose epoch figure controls the rate (checked by :func:`check_loss_name`).
    decay: factor applied when the figure did not improve (``1`` disables the control).
    rel_threshold: minimal relative improvement, ``(prev - new) / |prev|``.
  """

  def __init__(self, *, learning_rate: float, loss_name: str, decay: float = 0.5, rel_threshold: float = 0.01):
    if learning_rate < 0 or not math.isfinite(learning_rate):
      raise ValueError(f"learning_rate must be a finite float >= 0, got {learning_rate}")
    if not 0 < decay <= 1:
      raise ValueError(f"lr decay must be in (0, 1], got {decay}")
    if not math.isfinite(rel_threshold) or rel_threshold < 0:
      raise ValueError(f"lr decay threshold must be a finite float >= 0, got {rel_threshold}")
    self.loss_name = loss_name
    self.decay = float(decay)
    self.rel_threshold = float(rel_threshold)
    with tf.compat.v1.variable_scope("lr_control"):
      self.lr_var = tf.compat.v1.get_variable(
        "learning_rate",
        shape=(),
        dtype=tf.float32,
        trainable=False,
        initializer=tf.compat.v1.constant_initializer(learning_rate),
      )
      self.prev_var = tf.compat.v1.get_variable(
        "prev_figure",
        shape=(),
        dtype=tf.float64,
        trainable=False,
        initializer=tf.compat.v1.constant_initializer(float("nan")),
      )
      self._lr_in = tf.compat.v1.placeholder(tf.float32, (), name="lr_in")
      self._prev_in = tf.compat.v1.placeholder(tf.float64, (), name="prev_in")
      self._assign = tf.group(self.lr_var.assign(self._lr_in), self.prev_var.assign(self._prev_in))
    self.learning_rate: tf.Tensor = tf.identity(self.lr_var, name="learning_rate")

  def get(self, session: tf.compat.v1.Session) -> float:
    return float(session.run(self.lr_var))

  def update(self, session: tf.compat.v1.Session, figure: float) -> Optional[float]:
    """Feeds the epoch's figure of the keyed loss; returns the new rate if it was decayed, else None."""
    lr, prev = session.run([self.lr_var, self.prev_var])
    new_lr = float(lr)
    if math.isfinite(prev) and math.isfinite(figure):
      improvement = (prev - figure) / max(abs(prev), 1e-12)
      if improvement < self.rel_threshold:
        new_lr = float(lr) * self.decay
    session.run(self._assign, feed_dict={self._lr_in: new_lr, self._prev_in: float(figure)})
    return new_lr if new_lr != float(lr) else None
