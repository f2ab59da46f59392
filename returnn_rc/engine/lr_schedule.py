"""Learning-rate warm-up and schedules as functions of the symbolic global step.

The rate the optimizer uses in a step is ``newbob_rate * warmup(step) * schedule(step)``:
``newbob_rate`` is the per-epoch Newbob variable (:mod:`returnn_rc.engine.lr_control`, starting at
the configured learning rate), ``step`` the global step (int64, the number of batches trained
before this one). Everything is a graph op on the step, so a resumed run (step restored from the
checkpoint) continues the schedule exactly.

- warm-up over ``W`` steps (``W = 0``: none): ``min(1, (step + 1) / W)``, linear up to 1 at step ``W - 1``;
- ``"constant"``: 1;
- ``"exponential"``: ``rate ** (step / decay_steps)`` (smooth);
- ``"step"``: ``rate ** floor(step / decay_steps)`` (staircase);
- ``"inverse_sqrt"``: ``sqrt(decay_steps / max(step + 1, decay_steps))``: 1 up to ``decay_steps``, then
  ``1 / sqrt`` of the step (with ``W = decay_steps``: the Transformer schedule, peak 1 at step ``W - 1``).
"""

from __future__ import annotations

import math

import tensorflow as tf

SCHEDULES = ("constant", "exponential", "step", "inverse_sqrt")


def check_schedule(*, schedule: str, warmup_steps: int, decay_steps: int, decay_rate: float) -> None:
  """``ValueError`` naming the value unless the options are valid."""
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {list(SCHEDULES)}")
  if not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise ValueError(f"lr_warmup_steps must be an int >= 0, got {warmup_steps!r}")
  if schedule != "constant" and (not isinstance(decay_steps, int) or decay_steps < 1):
    raise ValueError(f"lr_schedule {schedule!r} needs lr_schedule_steps >= 1, got {decay_steps!r}")
  if schedule in ("exponential", "step") and not (0 < decay_rate <= 1 and math.isfinite(decay_rate)):
    raise ValueError(f"lr_schedule {schedule!r} needs lr_schedule_rate in (0, 1], got {decay_rate!r}")


def schedule_factor(
  step: tf.Tensor, *, schedule: str = "constant", warmup_steps: int = 0, decay_steps: int = 0, decay_rate: float = 1.0
) -> tf.Tensor:
  """The factor ``warmup(step) * schedule(step)`` (float32 scalar) for the global step ``step`` (int64 scalar)."""
  check_schedule(schedule=schedule, warmup_steps=warmup_steps, decay_steps=decay_steps, decay_rate=decay_rate)
  with tf.name_scope("lr_schedule"):
    s = tf.cast(step, tf.float32)
    factor = tf.constant(1.0, tf.float32)
    if warmup_steps > 0:
      factor = tf.minimum(1.0, (s + 1.0) / float(warmup_steps))
    if schedule == "exponential":
      factor = factor * tf.pow(float(decay_rate), s / float(decay_steps))
    elif schedule == "step":
      factor = factor * tf.pow(float(decay_rate), tf.floor(s / float(decay_steps)))
    elif schedule == "inverse_sqrt":
      factor = factor * tf.sqrt(float(decay_steps) / tf.maximum(s + 1.0, float(decay_steps)))
    return factor
