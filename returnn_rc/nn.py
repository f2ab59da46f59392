"""Train-flag-aware functions. Each reads ``get_run_ctx().is_train_flag_enabled(func=<itself>)``,
so ``train_flag_ctx(False, func=rc.dropout)`` switches off just that function."""

from __future__ import annotations

import zlib
from typing import List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from returnn_rc.run_ctx import get_run_ctx
from returnn_rc.tensor import Dim, Tensor


def dropout(
  x: Union[Tensor, tf.Tensor],
  drop_prob: Union[float, tf.Tensor],
  *,
  axis: Optional[Union[Dim, int, bool, Sequence[Union[Dim, int]]]] = None,
  on_forward: bool = False,
  batch_axis: Optional[int] = None,
) -> Union[Tensor, tf.Tensor]:
  """Dropout: zeroes elements with probability ``drop_prob`` and scales the rest by ``1/(1-drop_prob)``.

  Applied when the train flag (as seen by this function) is on, or always with ``on_forward``.

  - Python-bool flag: ``False`` returns ``x`` itself (no random op, no cond); ``True`` applies it.
  - Tensor flag (placeholder / variable): the graph holds one dropout whose *drop probability* is
    ``where(flag, drop_prob, 0)``, a scalar. With the flag off the mask is all ones and the scale 1,
    so the output equals ``x`` exactly. The flag selects only this non-differentiable scalar; the
    differentiable path is the same ``x * mask`` in both modes, with no ``tf.cond`` around it.

  The masks are stateless (a function of the seed, the op, the step and, in a ``tf.while_loop`` body,
  the iteration) when the run context's step is a tensor; see :func:`set_stateless_dropout_seed`. For an
  :class:`Tensor` with the batch dim they are then also independent of how the batch is split and
  padded: the mask value of an element is a hash of (seed, op, step, iterations, global sequence index =
  ``get_run_ctx().global_seq_offset`` + batch index, its position on the other axes); see
  :func:`_uniform_by_index`.

  Args:
    x: ``[...]`` an :class:`Tensor` or a raw ``tf.Tensor``; the result is of the same kind.
    drop_prob: probability in ``[0, 1)``: a Python float, or a scalar float tensor (checked at run time:
      ``InvalidArgumentError`` outside ``[0, 1)``).
    axis: the axes the mask varies over (it is broadcast over the others): a :class:`Dim` (or a
      list), ``True`` for the feature dim of an :class:`Tensor`, an int axis (or list) for a raw
      tensor; ``None``: an independent mask per element.
    on_forward: apply also with the train flag off (e.g. MC dropout at inference); a bool.
    batch_axis: for a raw ``x``: its batch axis (an int), so that its stateless mask is a function of the
      global sequence index (as for an :class:`Tensor` with the batch dim); its axes of unknown static
      size count as dynamic. None: the mask is drawn over the whole shape (it then depends on how a
      batch is split). Not allowed for an :class:`Tensor` (its dims say which axis is the batch).
  Returns:
    ``[...]`` the same shape, dims and dtype as ``x``.
  """
  if not isinstance(on_forward, (bool, np.bool_)):
    raise TypeError(f"dropout: on_forward must be a bool, got {type(on_forward).__name__} {on_forward!r}")
  if batch_axis is not None:
    if isinstance(x, Tensor):
      raise ValueError(f"dropout: batch_axis is for raw tensors only; {x!r} has dims {list(x.dims)}")
    if isinstance(batch_axis, (bool, np.bool_)) or not isinstance(batch_axis, (int, np.integer)):
      raise TypeError(f"dropout: batch_axis must be an int, got {type(batch_axis).__name__} {batch_axis!r}")
  if isinstance(drop_prob, (int, float, np.integer, np.floating)) and not isinstance(drop_prob, (bool, np.bool_)):
    drop_prob = float(drop_prob)
    if not 0.0 <= drop_prob < 1.0:
      raise ValueError(f"dropout: drop_prob must be in [0, 1), got {drop_prob}")
    if drop_prob == 0.0:
      return x
  elif isinstance(drop_prob, (tf.Tensor, tf.Variable)):
    if not drop_prob.dtype.is_floating:
      raise TypeError(f"dropout: a tensor drop_prob must be a float tensor, got dtype {drop_prob.dtype.name}")
    if drop_prob.shape.rank is not None and drop_prob.shape.rank != 0:
      raise ValueError(f"dropout: a tensor drop_prob must be a scalar, got shape {drop_prob.shape}")
  else:
    raise TypeError(f"dropout: drop_prob must be a float or scalar tensor, got {type(drop_prob).__name__}")
  flag = True if on_forward else get_run_ctx().is_train_flag_enabled(func=dropout)
  if flag is False:
    return x
  raw = x.get_raw() if isinstance(x, Tensor) else tf.convert_to_tensor(x)
  if not raw.dtype.is_floating:
    raise TypeError(f"dropout: x must be a float tensor, got dtype {raw.dtype.name}")
  with tf.name_scope("dropout"):
    prob = tf.cast(drop_prob, tf.float32)
    if isinstance(drop_prob, (tf.Tensor, tf.Variable)):
      # Checked at run time (also with the flag off: a bad value is a bug whatever the mode). String data
      # only: other data would put the check under a tf.cond.
      check = tf.debugging.Assert(
        tf.logical_and(prob >= 0.0, prob < 1.0),
        ["dropout: the tensor drop_prob is out of range: it must be in [0, 1)"],
        name="check_drop_prob",
      )
      with tf.control_dependencies([check]):
        prob = tf.identity(prob)
    if flag is not True:
      prob = tf.where(flag, prob, tf.zeros_like(prob))
    noise_axes = _noise_axes(x, raw, axis)
    layout = _index_layout(x, raw, batch_axis)
    if layout is not None and isinstance(get_run_ctx().step, tf.Tensor):
      uniform = _uniform_by_index(raw, noise_axes, *layout)
    else:
      uniform = _uniform(_noise_shape(raw, noise_axes))
    keep = uniform >= prob
    mask = tf.cast(keep, raw.dtype) * tf.cast(1.0 / (1.0 - prob), raw.dtype)
    out = raw * mask
  if isinstance(x, Tensor):
    return Tensor(x.name, x.dims, x.dtype, raw_tensor=out, sparse_dim=x.sparse_dim, feature_dim=x.feature_dim)
  return out


# Graph attribute (as graph_state): the explicit seed of stateless dropout in that graph.
_STATELESS_SEED_ATTR = "_returnn_rc_stateless_dropout_seed"
#: The stateless-dropout seed of a graph with neither an explicit seed nor a graph-level seed.
DEFAULT_STATELESS_SEED = 0


def set_stateless_dropout_seed(seed: int, graph: Optional[tf.Graph] = None) -> None:
  """Sets the seed of the stateless dropout masks of ``graph`` (default: the current graph).

  With a tensor step in the run context (e.g. ``step=rc.graph_state.get_graph_state().step``), dropout is
  stateless by default: the mask of each dropout op is ``stateless_uniform(seed=(f(seed, op), step))``, a
  function of the seed, the op and the step only. So a run restarted from a checkpoint draws the same
  masks as an uninterrupted one (stateful random ops restart their sequence in a new session), an
  evaluation run in between changes no later mask, and an XLA-compiled train step draws the same masks
  as an uncompiled one (the masks are drawn outside XLA clusters). The seed is, in this order: the one
  set here, the graph-level seed (``tf.compat.v1.set_random_seed``), :data:`DEFAULT_STATELESS_SEED`.
  It is read when a dropout op is built. Note: the masks change only when the step does.

  ``f(seed, op)`` hashes the seed and the op's name scope (within ``tf.while_loop`` / ``tf.cond`` /
  ``tf.map_fn`` bodies: the name scopes of the enclosing graphs and of the body), so every dropout
  call site has its own mask. In a ``tf.while_loop`` body (also ``tf.map_fn``, and nested loops) the
  loop's iteration counter is folded in as well (``tf.random.fold_in``), so each iteration draws its
  own mask, again the same in every run at that step. (With control flow v1, switched off by default
  in TF 2, a loop body has no counter of its own: its masks are the same in every iteration.)

  With a Python-int step (a constant) the masks are drawn by stateful random ops (the graph-level seed
  applies): a stateless mask would then be the same in every run.

  Raises:
    TypeError: ``seed`` not an int, ``graph`` not a ``tf.Graph``.
    ValueError: ``seed`` negative or not below 2**63.
  """
  if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"stateless dropout seed must be an int, got {type(seed).__name__} {seed!r}")
  if not 0 <= int(seed) < 2**63:
    raise ValueError(f"stateless dropout seed must be in [0, 2**63), got {seed}")
  graph = graph if graph is not None else tf.compat.v1.get_default_graph()
  if not isinstance(graph, tf.Graph):
    raise TypeError(f"graph must be a tf.Graph, got {type(graph).__name__}")
  setattr(graph, _STATELESS_SEED_ATTR, int(seed))


def _graph_chain(graph: tf.Graph) -> List[tf.Graph]:
  """``graph`` and its enclosing graphs (of loop / cond / function bodies), innermost first."""
  chain = []
  while graph is not None:
    chain.append(graph)
    graph = getattr(graph, "outer_graph", None)
  return chain


def _stateless_seed(chain: Sequence[tf.Graph]) -> int:
  for graph in chain:
    seed = getattr(graph, _STATELESS_SEED_ATTR, None)
    if seed is not None:
      return seed
  graph_seed = chain[0].seed  # a body graph has its outer graph's seed
  return DEFAULT_STATELESS_SEED if graph_seed is None else int(graph_seed)


def _loop_counters(chain: Sequence[tf.Graph]) -> List[tf.Tensor]:
  """The iteration counters of the enclosing ``tf.while_loop`` bodies (control flow v2), outermost first:
  a while body's first input is the loop's own counter (``loop_counter``, int32 scalar)."""
  counters = []
  for graph in chain:
    if type(graph).__name__ != "WhileBodyFuncGraph":
      continue
    inputs = list(getattr(graph, "inputs", None) or ())
    if inputs and inputs[0].dtype == tf.int32 and inputs[0].shape.rank == 0 and "loop_counter" in inputs[0].name:
      counters.append(inputs[0])
  return counters[::-1]


def _uniform(shape: tf.Tensor) -> tf.Tensor:
  """``[shape]`` float32 uniform in [0, 1): stateless if the step is a tensor (see
  :func:`set_stateless_dropout_seed`), else stateful."""
  step = get_run_ctx().step
  if not isinstance(step, tf.Tensor):
    return tf.random.uniform(shape, dtype=tf.float32)
  chain = _graph_chain(tf.compat.v1.get_default_graph())
  seed = _stateless_seed(chain)
  scope = "/".join(s for s in (g.get_name_scope() for g in reversed(chain)) if s)
  op_key = zlib.crc32(f"{seed}/{scope}".encode()) & 0x7FFFFFFF
  # Drawn outside any XLA cluster: XLA's stateless RNG gives other numbers than the TF kernel, and
  # the masks must not depend on whether the train step is compiled.
  with tf.xla.experimental.jit_scope(compile_ops=False):
    stateless_seed = tf.stack([tf.constant(op_key, tf.int64), tf.cast(step, tf.int64)])
    for counter in _loop_counters(chain):
      stateless_seed = tf.random.experimental.stateless_fold_in(stateless_seed, tf.cast(counter, tf.int64))
    return tf.random.stateless_uniform(shape, seed=stateless_seed, dtype=tf.float32)


def _noise_axes(x: Union[Tensor, tf.Tensor], raw: tf.Tensor, axis) -> Optional[List[int]]:
  """The axes the mask varies over (None: all), from ``axis`` (see :func:`dropout`)."""
  if axis is None:
    return None
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
  return idx


def _noise_shape(raw: tf.Tensor, noise_axes: Optional[List[int]]) -> tf.Tensor:
  """Shape of the mask: ``raw``'s shape on ``noise_axes``, 1 elsewhere (all axes for None)."""
  shape = tf.shape(raw)
  if noise_axes is None:
    return shape
  return tf.stack([shape[i] if i in noise_axes else 1 for i in range(raw.shape.rank)])


# Constants of the 32-bit finaliser of MurmurHash3 (a bijection on uint32 with full avalanche).
_FMIX_MUL1, _FMIX_MUL2 = 0x85EBCA6B, 0xC2B2AE35


def _fmix32(h: tf.Tensor) -> tf.Tensor:
  """MurmurHash3's 32-bit finaliser, elementwise on a uint32 tensor."""
  shift = lambda v, n: tf.bitwise.right_shift(v, tf.constant(n, tf.uint32))  # noqa: E731
  h = tf.bitwise.bitwise_xor(h, shift(h, 16)) * tf.constant(_FMIX_MUL1, tf.uint32)
  h = tf.bitwise.bitwise_xor(h, shift(h, 13)) * tf.constant(_FMIX_MUL2, tf.uint32)
  return tf.bitwise.bitwise_xor(h, shift(h, 16))


def _fold(h: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  """Mixes the int ``value`` (any int dtype; its low and high 32 bits for 64-bit ones) into the uint32 hash
  ``h`` (both broadcast)."""
  if value.dtype in (tf.int64, tf.uint64):
    low = tf.cast(tf.bitwise.bitwise_and(value, tf.constant(0xFFFFFFFF, value.dtype)), tf.uint32)
    high = tf.cast(tf.bitwise.right_shift(value, tf.constant(32, value.dtype)), tf.uint32)
    return _fmix32(tf.bitwise.bitwise_xor(_fmix32(tf.bitwise.bitwise_xor(h, low)), high))
  return _fmix32(tf.bitwise.bitwise_xor(h, tf.cast(value, tf.uint32)))


def _index_layout(x: Union[Tensor, tf.Tensor], raw: tf.Tensor, batch_axis: Optional[int]):
  """(batch axis, static size or None per axis) for the index-hash mask, or None (no batch axis known)."""
  rank = raw.shape.rank
  if isinstance(x, Tensor):
    if not x.have_batch_axis() or rank is None:
      return None
    return [d.is_batch_dim for d in x.dims].index(True), [d.dimension if d.is_static() else None for d in x.dims]
  if batch_axis is None:
    return None
  if rank is None:
    raise ValueError("dropout: batch_axis needs x of known rank")
  if not -rank <= int(batch_axis) < rank:
    raise ValueError(f"dropout: batch_axis {batch_axis} out of range for rank {rank}")
  return int(batch_axis) % rank, raw.shape.as_list()


def _replica_independent(scope: str) -> str:
  """``scope`` without the ``replica_<i>/`` prefix that ``MirroredStrategy`` gives the ops of replica i > 0
  (so the same dropout op has the same key on every replica)."""
  if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
    return scope
  replica_id = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
  if replica_id is None or int(replica_id) == 0:
    return scope
  prefix = f"replica_{int(replica_id)}"
  if scope == prefix or scope.startswith(prefix + "/"):
    return scope[len(prefix) + 1 :]
  return scope


def _uniform_by_index(
  raw: tf.Tensor, noise_axes: Optional[List[int]], batch_axis: int, static_sizes: Sequence[Optional[int]]
) -> tf.Tensor:
  """Uniform in [0, 1) float32 of the mask shape (``raw``'s shape, 1 on the axes not in ``noise_axes``),
  each value a counter-based hash of (seed, op, step, loop iterations, global sequence index, position).

  The global sequence index is ``global_seq_offset`` (of the run context) + the batch index. The
  position on the other axes is folded in per group of axes: a group starts at every dynamic dim (and
  at the first non-batch axis) and holds the static dims after it, whose linear index within the group
  only depends on the static sizes. So no value depends on the local batch size or on the padded
  lengths: the same sequence in a batch split or padded otherwise gets the same mask on its frames.
  Vectorised (broadcast index tensors, a few uint32 ops per element); drawn outside XLA clusters.
  """
  ctx = get_run_ctx()
  chain = _graph_chain(tf.compat.v1.get_default_graph())
  seed = _stateless_seed(chain)
  scope = _replica_independent("/".join(s for s in (g.get_name_scope() for g in reversed(chain)) if s))
  op_key = zlib.crc32(f"{seed}/{scope}".encode()) & 0x7FFFFFFF
  rank = raw.shape.rank
  in_mask = [noise_axes is None or i in noise_axes for i in range(rank)]
  shape = tf.shape(raw)

  def along(axis: int, values: tf.Tensor) -> tf.Tensor:  # [n] -> [1,..,n,..,1] on ``axis``
    return tf.reshape(values, [-1 if i == axis else 1 for i in range(rank)])

  with tf.xla.experimental.jit_scope(compile_ops=False), tf.name_scope("mask_hash"):
    h = _fmix32(tf.constant(op_key, tf.uint32))
    h = _fold(h, tf.cast(ctx.step, tf.int64))
    for counter in _loop_counters(chain):
      h = _fold(h, tf.cast(counter, tf.int64))
    h = tf.reshape(h, [1] * rank)
    if in_mask[batch_axis]:
      offset = tf.cast(ctx.global_seq_offset, tf.int64)
      h = _fold(h, along(batch_axis, offset + tf.range(tf.cast(shape[batch_axis], tf.int64))))
    groups: List[List[int]] = []
    for i in range(rank):
      if i == batch_axis:
        continue
      if not groups or static_sizes[i] is None:
        groups.append([])
      groups[-1].append(i)
    for group in groups:
      if not any(in_mask[i] for i in group):
        continue
      linear, stride = None, 1
      for i in reversed(group):
        if not in_mask[i]:
          continue
        index = along(i, tf.range(shape[i], dtype=tf.int32) * tf.constant(stride, tf.int32))
        linear = index if linear is None else linear + index
        stride *= static_sizes[i] if static_sizes[i] is not None else 1
      h = _fold(h, linear)
    return tf.multiply(
      tf.cast(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), tf.float32),
      tf.constant(1.0 / (1 << 24), tf.float32),
      name=HASH_UNIFORM_OP_NAME,
    )


#: Name of the op giving the index-hash uniform numbers of a dropout mask (see :func:`is_hash_uniform_op`).
HASH_UNIFORM_OP_NAME = "hash_uniform"


def is_hash_uniform_op(op: tf.Operation) -> bool:
  """Whether ``op`` draws the uniform numbers of an index-hash dropout mask (:func:`_uniform_by_index`): the
  random-number source of those masks, where a stateless or stateful mask has a random op."""
  base = op.name.rsplit("/", 1)[-1]
  return op.type == "Mul" and (base == HASH_UNIFORM_OP_NAME or base.startswith(HASH_UNIFORM_OP_NAME + "_"))
