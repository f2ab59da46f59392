"""The parameter update of a train step: optimizer, decoupled weight decay, global-norm clipping, and
gradient accumulation over ``k`` batches with exact normalisation.

Optimizers (TF1 ``tf.compat.v1.train`` optimizers, graph mode):

- ``"adam"``: ``AdamOptimizer`` (``beta1=0.9, beta2=0.999, epsilon=1e-8``);
- ``"adamw"``: Adam with *decoupled* weight decay (Loshchilov & Hutter): in the same step as Adam's
  update, every trained variable also gets ``var -= lr * weight_decay * var`` (from the value before
  the step; ``lr`` the step's learning rate, as PyTorch's ``AdamW``);
- ``"momentum"``: SGD with momentum, ``MomentumOptimizer``: ``accum = momentum * accum + g; var -= lr * accum``.

Global-norm clipping (``tf.clip_by_global_norm``) scales the gradient ``g`` of the update to
``g * clip / max(||g||, clip)`` (``||g||`` over all variables together).

Gradient accumulation over ``k`` batches: the update made after ``k`` batches equals the update of
ONE batch made of the ``k`` batches, also for ``use_normalized_loss`` losses, which are normalised by
the inverse norm factor summed over all ``k`` batches (not per batch: per-batch normalisation weights
the frames of short batches more). Per batch, the engine accumulates

- ``G_sum``: the gradient of the summed losses' part of the total loss (``Σ scale * summed``);
- per normalised loss ``l``: ``G_l``, the gradient of its *summed* loss, and ``N_l``, its inverse norm factor;

and after the ``k``-th batch applies ``G_sum + Σ_l scale_l * G_l / N_l`` (``0`` where ``N_l = 0``),
clipped, then resets the sums. This costs one backward pass per normalised loss (plus one for the
summed losses) per batch, and one accumulator per variable per group. It assumes the inverse norm
factors do not depend on the parameters (frame counts and lengths do not). The global step counts
batches (it advances every batch); a partial group at the end of an epoch is applied by
``flush_op`` (the engine runs it), so checkpoints never hold pending gradients.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from returnn_rc.losses import Loss, total

OPTIMIZERS = ("adam", "adamw", "momentum")


def check_update_options(
  *,
  optimizer: str,
  weight_decay: float,
  momentum: float,
  grad_clip_global_norm: Optional[float],
  accum_grad_multiple_step: int,
) -> None:
  """``ValueError`` naming the value for an unknown optimizer or an option out of range."""
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {list(OPTIMIZERS)}")
  if not (math.isfinite(weight_decay) and weight_decay >= 0):
    raise ValueError(f"weight_decay must be a finite float >= 0, got {weight_decay!r}")
  if weight_decay and optimizer != "adamw":
    raise ValueError(
      f"weight_decay={weight_decay} is decoupled weight decay of optimizer 'adamw'; optimizer "
      f"{optimizer!r} does not use it (choose optimizer='adamw', or weight_decay=0)"
    )
  if not (math.isfinite(momentum) and 0 <= momentum < 1):
    raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
  if grad_clip_global_norm is not None and not (math.isfinite(grad_clip_global_norm) and grad_clip_global_norm > 0):
    raise ValueError(
      f"grad_clip_global_norm must be a finite float > 0 (or None: no clipping), got {grad_clip_global_norm!r}"
    )
  if (
    isinstance(accum_grad_multiple_step, bool)
    or not isinstance(accum_grad_multiple_step, int)
    or accum_grad_multiple_step < 1
  ):
    raise ValueError(f"accum_grad_multiple_step (k) must be an int >= 1, got {accum_grad_multiple_step!r}")


#: One group of the gradient accumulation: (name, variable → gradient of the group's summed loss (or None),
#: the inverse norm factor to divide the accumulated gradient by (None: summed losses), scale).
Group = Tuple[str, Dict[tf.Variable, Optional[tf.Tensor]], Optional[tf.Tensor], float]


def accumulation_groups(losses: Mapping[str, Loss], variables: Sequence[tf.Variable]) -> List[Group]:
  """The groups of the exact gradient accumulation (see the module docstring): the summed losses together,
  then each normalised loss (its summed loss's gradient, its inverse norm factor and scale)."""
  used = [loss for loss in losses.values() if loss.used_for_optimizer]
  summed = [loss for loss in used if not loss.use_normalized_loss]
  normed = [loss for loss in used if loss.use_normalized_loss]
  groups: List[Group] = []
  if summed:
    part = total(summed).get_raw()
    groups.append(("summed", dict(zip(variables, tf.gradients(part, variables))), None, 1.0))
  for loss in normed:
    grads = tf.gradients(loss.get_summed_loss().get_raw(), variables)
    groups.append((loss.name, dict(zip(variables, grads)), loss.get_inv_norm_factor().get_raw(), float(loss.scale)))
  return groups


def make_optimizer(name: str, learning_rate: tf.Tensor, *, momentum: float = 0.9) -> tf.compat.v1.train.Optimizer:
  """The TF1 optimizer ``name`` (:data:`OPTIMIZERS`) reading ``learning_rate``."""
  if name in ("adam", "adamw"):
    return tf.compat.v1.train.AdamOptimizer(learning_rate=learning_rate)
  if name == "momentum":
    return tf.compat.v1.train.MomentumOptimizer(learning_rate=learning_rate, momentum=momentum)
  raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")


def dense(grad):
  """A sparse (``IndexedSlices``) gradient as a dense tensor (see ``train_graph.dense_gradients``)."""
  return tf.convert_to_tensor(grad) if isinstance(grad, tf.IndexedSlices) else grad


@dataclasses.dataclass
class Update:
  """The update ops of a train graph.

  Attributes:
    train_op: run once per batch: (accumulates and) updates the variables, advances the global step.
    flush_op: applies gradients accumulated since the last update (a partial group at the end of an
      epoch); a no-op without accumulation or when nothing is pending.
    local_init_op: zeroes the accumulators (local variables, not checkpointed); run after creating or
      restoring a session.
    optimizer: the TF1 optimizer.
    grads_and_vars: the per-batch (dense) gradients of the total loss and their variables.
  """

  train_op: tf.Operation
  flush_op: tf.Operation
  local_init_op: tf.Operation
  optimizer: tf.compat.v1.train.Optimizer
  grads_and_vars: List[Tuple[tf.Tensor, tf.Variable]]


def _apply(
  optimizer,
  grads_and_vars,
  *,
  learning_rate: tf.Tensor,
  weight_decay: float,
  grad_clip_global_norm: Optional[float],
  global_step: Optional[tf.Variable],
) -> tf.Operation:
  """Clip, decoupled decay, optimizer step (in this order; decay from the values before the step)."""
  grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
  grads = [g for g, _ in grads_and_vars]
  variables = [v for _, v in grads_and_vars]
  if grad_clip_global_norm is not None:
    grads, _ = tf.clip_by_global_norm(grads, grad_clip_global_norm)
  decay_ops = []
  if weight_decay:
    with tf.name_scope("weight_decay"), tf.control_dependencies(grads):
      for v in variables:
        rate = tf.cast(learning_rate, v.dtype.base_dtype) * tf.constant(weight_decay, v.dtype.base_dtype)
        decay_ops.append(v.assign_sub(rate * v.read_value(), read_value=False))
  with tf.control_dependencies(decay_ops):
    return optimizer.apply_gradients(list(zip(grads, variables)), global_step=global_step)


def _local_zeros(shape, dtype: tf.DType, name: str) -> tf.Variable:
  """A zero-initialised local (not checkpointed, not trained) variable."""
  return tf.compat.v1.Variable(
    tf.zeros(shape, dtype), trainable=False, name=name, collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES]
  )


def build_update(
  losses: Mapping[str, Loss],
  total_loss: tf.Tensor,
  *,
  learning_rate: tf.Tensor,
  step_var: tf.Variable,
  optimizer: str = "adam",
  weight_decay: float = 0.0,
  momentum: float = 0.9,
  grad_clip_global_norm: Optional[float] = None,
  accum_grad_multiple_step: int = 1,
  var_list: Optional[Sequence[tf.Variable]] = None,
  grads_and_vars: Optional[Sequence[Tuple[tf.Tensor, tf.Variable]]] = None,
  groups: Optional[List[Group]] = None,
) -> Update:
  """Builds the update of the trainable variables (see the module docstring).

  Args:
    losses: the marked losses (name → :class:`rc.Loss`), for the accumulation's groups.
    total_loss: scalar, what the optimizer minimises (``ctx.total_loss()``), for ``k = 1``.
    learning_rate: scalar float tensor, the step's learning rate.
    step_var: the global step; advanced by one per batch.
    optimizer / weight_decay / momentum / grad_clip_global_norm / accum_grad_multiple_step: the
      options (:func:`check_update_options`).
    var_list: the variables to train; default: all trainable variables.
    grads_and_vars: the gradients to apply, already computed (e.g. summed over replicas by an
      all-reduce); only with ``accum_grad_multiple_step == 1``. Default: the gradients of ``total_loss``.
    groups: the accumulation's groups, already computed (:func:`accumulation_groups`, e.g. their gradients
      summed over replicas); only with ``accum_grad_multiple_step > 1``. Default: computed here.
  """
  check_update_options(
    optimizer=optimizer,
    weight_decay=weight_decay,
    momentum=momentum,
    grad_clip_global_norm=grad_clip_global_norm,
    accum_grad_multiple_step=accum_grad_multiple_step,
  )
  opt = make_optimizer(optimizer, learning_rate, momentum=momentum)
  variables = list(var_list if var_list is not None else tf.compat.v1.trainable_variables())
  if groups is not None:
    if accum_grad_multiple_step == 1:
      raise ValueError("precomputed accumulation groups need accum_grad_multiple_step > 1, got 1")
    grads_and_vars = []  # the groups' gradients are what is applied
  elif grads_and_vars is not None:
    if accum_grad_multiple_step != 1:
      raise ValueError(f"precomputed gradients need accum_grad_multiple_step=1, got {accum_grad_multiple_step}")
    grads_and_vars = [(dense(g), v) for g, v in grads_and_vars]
  else:
    grads_and_vars = [(dense(g), v) for g, v in opt.compute_gradients(total_loss, var_list=variables)]
  opts = dict(learning_rate=learning_rate, weight_decay=weight_decay, grad_clip_global_norm=grad_clip_global_norm)
  if accum_grad_multiple_step == 1:
    train_op = _apply(opt, grads_and_vars, global_step=step_var, **opts)
    return Update(
      train_op=train_op,
      flush_op=tf.no_op(name="flush_noop"),
      local_init_op=tf.no_op(name="no_locals"),
      optimizer=opt,
      grads_and_vars=grads_and_vars,
    )

  with tf.name_scope("grad_accum"):
    if groups is None:
      groups = accumulation_groups(losses, variables)
    trained = [v for v in variables if any(g[v] is not None for _, g, _, _ in groups)]
    accs, norms, updates = [], [], []
    for gi, (_, grads, inv_norm, _) in enumerate(groups):
      acc = {}
      for v in trained:
        acc[v] = _local_zeros(v.shape, v.dtype.base_dtype, f"acc{gi}_{v.op.name.replace('/', '_')}")
        if grads[v] is not None:
          updates.append(acc[v].assign_add(tf.cast(dense(grads[v]), v.dtype.base_dtype), read_value=False))
      norm = None
      if inv_norm is not None:
        norm = _local_zeros([], inv_norm.dtype, f"acc{gi}_inv_norm")
        updates.append(norm.assign_add(inv_norm, read_value=False))
      accs.append(acc)
      norms.append(norm)
    count = _local_zeros([], tf.int64, "count")
    local_vars = [count] + [a for acc in accs for a in acc.values()] + [n for n in norms if n is not None]

    def apply_accumulated():
      combined = []
      for v in trained:
        g = None
        for (_, _, _, scale), acc, norm in zip(groups, accs, norms):
          part = acc[v].read_value()
          if norm is not None:
            part = tf.math.divide_no_nan(part, tf.cast(norm.read_value(), part.dtype)) * tf.cast(scale, part.dtype)
          g = part if g is None else g + part
        combined.append((g, v))
      applied = _apply(opt, combined, global_step=None, **opts)
      with tf.control_dependencies([applied]):
        resets = [var.assign(tf.zeros_like(var), read_value=False) for var in local_vars]
        return tf.group(*resets)

    with tf.control_dependencies(updates):
      n = count.assign_add(1)
    accumulate = tf.cond(tf.equal(n, accum_grad_multiple_step), apply_accumulated, tf.no_op, name="apply_if_kth")
    with tf.control_dependencies([accumulate]):
      train_op = step_var.assign_add(1, read_value=False)
    flush_op = tf.cond(tf.greater(count.read_value(), 0), apply_accumulated, tf.no_op, name="flush")
    local_init_op = tf.compat.v1.variables_initializer(local_vars, name="grad_accum_init")
  return Update(
    train_op=train_op, flush_op=flush_op, local_init_op=local_init_op, optimizer=opt, grads_and_vars=grads_and_vars
  )
