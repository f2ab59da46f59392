"""Train-flag-aware functions. Each reads ``get_run_ctx().is_train_flag_enabled(func=<itself>)``,
so ``train_flag_ctx(False, func=rc.dropout)`` switches off just that function."""

from __future__ import annotations

import zlib
from typing import Optional, Sequence, Union

import tensorflow as tf

from returnn_rc.run_ctx import get_run_ctx
from returnn_rc.tensor import Dim, Tensor


def dropout(x: Union[Tensor, tf.Tensor], drop_prob: Union[float, tf.Tensor], *,
            axis: Optional[Union[Dim, int, bool, Sequence[Union[Dim, int]]]] = None,
            on_forward: bool = False) -> Union[Tensor, tf.Tensor]:
  """Dropout: zeroes elements with probability ``drop_prob`` and scales the rest by ``1/(1-drop_prob)``.

  Applied when the train flag (as seen by this function) is on, or always with ``on_forward``.

  - Python-bool flag: ``False`` returns ``x`` itself (no random op, no cond); ``True`` applies it.
  - Tensor flag (placeholder / variable): the graph holds one dropout whose *drop probability* is
    ``where(flag, drop_prob, 0)``, a scalar. With the flag off the mask is all ones and the scale 1,
    so the output equals ``x`` exactly. The flag selects only this non-differentiable scalar; the
    differentiable path is the same ``x * mask`` in both modes, with no ``tf.cond`` around it.

  Args:
    x: ``[...]`` an :class:`Tensor` or a raw ``tf.Tensor``; the result is of the same kind.
    drop_prob: probability in ``[0, 1)``, Python float or scalar tensor.
    axis: the axes the mask varies over (it is broadcast over the others): a :class:`Dim` (or a
      list), ``True`` for the feature dim of an :class:`Tensor`, an int axis (or list) for a raw
      tensor; ``None``: an independent mask per element.
    on_forward: apply also with the train flag off (e.g. MC dropout at inference).
  Returns:
    ``[...]`` the same shape, dims and dtype as ``x``.
  """
  if isinstance(drop_prob, (int, float)) and not isinstance(drop_prob, bool):
    if not 0.0 <= drop_prob < 1.0:
      raise ValueError(f"dropout: drop_prob must be in [0, 1), got {drop_prob}")
    if drop_prob == 0.0:
      return x
  elif not isinstance(drop_prob, (tf.Tensor, tf.Variable)):
    raise TypeError(f"dropout: drop_prob must be a float or scalar tensor, got {type(drop_prob).__name__}")
  flag = True if on_forward else get_run_ctx().is_train_flag_enabled(func=dropout)
  if flag is False:
    return x
  raw = x.get_raw() if isinstance(x, Tensor) else tf.convert_to_tensor(x)
  if not raw.dtype.is_floating:
    raise TypeError(f"dropout: x must be a float tensor, got dtype {raw.dtype.name}")
  with tf.name_scope("dropout"):
    prob = tf.cast(drop_prob, tf.float32)
    if flag is not True:
      prob = tf.where(flag, prob, tf.zeros_like(prob))
    noise_shape = _noise_shape(x, raw, axis)
    keep = _uniform(noise_shape) >= prob
    mask = tf.cast(keep, raw.dtype) * tf.cast(1.0 / (1.0 - prob), raw.dtype)
    out = raw * mask
  if isinstance(x, Tensor):
    return Tensor(x.name, x.dims, x.dtype, raw_tensor=out, sparse_dim=x.sparse_dim, feature_dim=x.feature_dim)
  return out


# Graph attribute (as graph_state): the seed of stateless dropout in that graph, if opted in.
_STATELESS_SEED_ATTR = "_returnn_rc_stateless_dropout_seed"


def set_stateless_dropout_seed(seed: int, graph: Optional[tf.Graph] = None) -> None:
  """Opts ``graph`` (default: the current graph) in to stateless dropout masks.

  With a tensor step in the run context, the mask of each dropout op created afterwards in this
  graph is ``stateless_uniform(seed=(f(seed, op name), step))``: a function of the seed, the op and
  the step only, so a run restarted from a checkpoint draws the same masks as an uninterrupted one
  (stateful random ops restart their sequence in a new session), and an XLA-compiled train step the
  same masks as an uncompiled one (the masks are drawn outside XLA clusters). Used by
  :mod:`returnn_rc.engine`. Note: the masks change only when the step does.
  """
  setattr(graph or tf.compat.v1.get_default_graph(), _STATELESS_SEED_ATTR, int(seed))


def _uniform(shape: tf.Tensor) -> tf.Tensor:
  """``[shape]`` float32 uniform in [0, 1): stateless if the graph opted in and the step is a tensor."""
  graph = tf.compat.v1.get_default_graph()
  seed = getattr(graph, _STATELESS_SEED_ATTR, None)
  step = get_run_ctx().step
  if seed is None or not isinstance(step, tf.Tensor):
    return tf.random.uniform(shape, dtype=tf.float32)
  op_key = zlib.crc32(f"{seed}/{graph.get_name_scope()}".encode()) & 0x7FFFFFFF
  # Drawn outside any XLA cluster: XLA's stateless RNG gives other numbers than the TF kernel, and
  # the masks must not depend on whether the train step is compiled.
  with tf.xla.experimental.jit_scope(compile_ops=False):
    stateless_seed = tf.stack([tf.constant(op_key, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.stateless_uniform(shape, seed=stateless_seed, dtype=tf.float32)


def _noise_shape(x: Union[Tensor, tf.Tensor], raw: tf.Tensor, axis) -> tf.Tensor:
  """Shape of the mask: ``raw``'s shape on the axes in ``axis``, 1 elsewhere (all axes for None)."""
  shape = tf.shape(raw)
  if axis is None:
    return shape
  if axis is True:
    if not isinstance(x, Tensor) or x.feature_dim is None:
      raise ValueError(f"dropout: axis=True needs an rc.Tensor with a feature_dim, got {x!r}")
    axis = x.feature_dim
  axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
  rank = raw.shape.rank
  if rank is None:
    raise ValueError("dropout: axis needs x of known rank")
  idx = []
  for a in axes:
    if isinstance(a, Dim):
      if not isinstance(x, Tensor):
        raise TypeError(f"dropout: axis {a} is an rc.Dim but x is a raw tensor; pass int axes")
      idx.append(x.get_axis_from_dim(a))
    elif isinstance(a, int) and not isinstance(a, bool):
      if not -rank <= a < rank:
        raise ValueError(f"dropout: axis {a} out of range for rank {rank}")
      idx.append(a % rank)
    else:
      raise TypeError(f"dropout: axis must be rc.Dim, int, True or a list, got {a!r}")
  return tf.stack([shape[i] if i in idx else 1 for i in range(rank)])
