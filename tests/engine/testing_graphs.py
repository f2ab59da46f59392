"""Tiny graph modules for the engine tests (built in the test, no files needed)."""

import types
from typing import List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc


def make_sum_graph(
  name: str = "sum_graph",
  *,
  times_epoch: bool = False,
  nan_at_step: Optional[int] = None,
  drop_input: Optional[str] = None,
) -> types.ModuleType:
  """Input ``"x"`` float32 ``[B,T]``; loss ``"x"`` = ``x * w`` (``w`` a variable, 1 at init), optionally
  times the epoch, or NaN from step ``nan_at_step`` on. With learning rate 0 the epoch figure is
  ``Σ x / Σ seq_len`` (times the epoch)."""
  module = types.ModuleType(name)

  def extern_data_template():
    return rc.TensorDict({"x": rc.Tensor("x", [rc.batch_dim, rc.Dim(None, name="time")], "float32")})

  def get_model(*, epoch, step):
    del epoch, step
    return tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.ones_initializer())

  def train_step(*, model, extern_data):
    x = extern_data["x"]
    loss = x.get_raw() * model
    ctx = rc.get_run_ctx()
    if times_epoch:
      loss = loss * tf.cast(ctx.epoch, tf.float32)
    if nan_at_step is not None:
      loss = loss + tf.where(ctx.step >= nan_at_step, np.nan, 0.0)  # no NaN gradient before that step
    ctx.mark_as_loss(rc.Tensor("x", x.dims, "float32", raw_tensor=loss), "x")

  def forward_step(*, model, extern_data):
    x = extern_data["x"]
    rc.get_run_ctx().mark_as_default_output(rc.Tensor("out", x.dims, "float32", raw_tensor=x.get_raw() * model))

  module.extern_data_template = extern_data_template
  module.get_model = get_model
  module.train_step = train_step
  module.forward_step = forward_step
  if drop_input is not None:
    delattr(module, drop_input)
  return module


def sum_data(lengths: List[int], seed: int = 0) -> List[dict]:
  rng = np.random.default_rng(seed)
  return [{"x": rng.uniform(0, 10, size=[n]).astype(np.float32)} for n in lengths]
