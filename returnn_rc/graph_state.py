"""Symbolic train flag, step and epoch of a ``tf.compat.v1`` graph.

They are created once per graph and set per ``Session.run``, so the same graph serves training,
evaluation and forwarding with nothing rebuilt:

- train flag: ``tf.compat.v1.placeholder_with_default(False, [])`` (set through :meth:`feed_dict`),
  or a non-trainable bool ``tf.Variable`` with an assign op (set through :meth:`set_train_flag`);
- step: the graph's global step (int64), so ``optimizer.minimize(global_step=...)`` advances it;
- epoch: a non-trainable int64 variable, set through :meth:`set_epoch`.

With ``step=gs.step`` in the run context, dropout masks are stateless: a function of the seed, the op
and the step (:func:`returnn_rc.nn.set_stateless_dropout_seed`), so an evaluation run or a restart
from a checkpoint changes no mask.

Example::

  gs = rc.graph_state.get_graph_state()
  rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
  ...
  sess.run(train_op, feed_dict=gs.feed_dict(train=True))
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

TRAIN_FLAG_PLACEHOLDER = "placeholder"
TRAIN_FLAG_VARIABLE = "variable"
# Kept as an attribute of the graph, not in a graph collection: collections are serialised into
# checkpoint meta graphs, and a global dict would keep every graph alive.
_ATTR = "_returnn_rc_graph_state"


class GraphState:
  """The symbolic train flag / step / epoch of one graph. Create via :func:`get_graph_state`."""

  def __init__(self, graph: tf.Graph, train_flag_kind: str):
    if train_flag_kind not in (TRAIN_FLAG_PLACEHOLDER, TRAIN_FLAG_VARIABLE):
      raise ValueError(
        f"train_flag_kind must be {TRAIN_FLAG_PLACEHOLDER!r} or {TRAIN_FLAG_VARIABLE!r}, got {train_flag_kind!r}"
      )
    self.graph = graph
    self.train_flag_kind = train_flag_kind
    with graph.as_default(), tf.name_scope("returnn_rc_state/"):
      self._train_flag_var: Optional[tf.Variable] = None
      if train_flag_kind == TRAIN_FLAG_PLACEHOLDER:
        self.train_flag: tf.Tensor = tf.compat.v1.placeholder_with_default(False, shape=(), name="train_flag")
        self._train_flag_assign = None
      else:
        self._train_flag_var = tf.compat.v1.Variable(False, trainable=False, name="train_flag", dtype=tf.bool)
        self.train_flag = tf.identity(self._train_flag_var, name="train_flag_value")
        self._train_flag_in = tf.compat.v1.placeholder(tf.bool, shape=(), name="train_flag_in")
        self._train_flag_assign = self._train_flag_var.assign(self._train_flag_in)
      self.step_var: tf.Variable = tf.compat.v1.train.get_or_create_global_step(graph)
      self.step: tf.Tensor = tf.identity(self.step_var, name="step")
      self.epoch_var = tf.compat.v1.Variable(1, trainable=False, name="epoch", dtype=tf.int64)
      self.epoch: tf.Tensor = tf.identity(self.epoch_var, name="epoch_value")
      self._epoch_in = tf.compat.v1.placeholder(tf.int64, shape=(), name="epoch_in")
      self._epoch_assign = self.epoch_var.assign(self._epoch_in)
      self._step_in = tf.compat.v1.placeholder(tf.int64, shape=(), name="step_in")
      self._step_assign = self.step_var.assign(self._step_in)

  def feed_dict(self, *, train: bool) -> Dict[tf.Tensor, bool]:
    """Feeds for one ``Session.run`` with the given train flag (a bool; empty for the variable kind)."""
    train = _check_bool("train", train)
    if self.train_flag_kind == TRAIN_FLAG_PLACEHOLDER:
      return {self.train_flag: train}
    return {}

  def set_train_flag(self, session: tf.compat.v1.Session, train: bool) -> None:
    """Assigns the train-flag variable (variable kind); a no-op for the placeholder kind."""
    train = _check_bool("train", train)
    if self._train_flag_assign is not None:
      session.run(self._train_flag_assign, feed_dict={self._train_flag_in: train})

  def set_epoch(self, session: tf.compat.v1.Session, epoch: int) -> None:
    """Assigns the epoch variable (epochs start at 1)."""
    epoch = _check_int("epoch", epoch, 1)
    session.run(self._epoch_assign, feed_dict={self._epoch_in: epoch})

  def set_step(self, session: tf.compat.v1.Session, step: int) -> None:
    """Assigns the global step (steps start at 0)."""
    step = _check_int("step", step, 0)
    session.run(self._step_assign, feed_dict={self._step_in: step})

  def get_epoch(self, session: tf.compat.v1.Session) -> int:
    return int(session.run(self.epoch_var))

  def get_step(self, session: tf.compat.v1.Session) -> int:
    return int(session.run(self.step_var))


def _check_bool(what: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{what} must be a bool, got {type(value).__name__} {value!r}")
  return bool(value)


def _check_int(what: str, value: Any, minimum: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
  if not minimum <= int(value) < 2**63:
    raise ValueError(f"{what} must be >= {minimum}, got {value}")
  return int(value)


def get_graph_state(graph: Optional[tf.Graph] = None, *, train_flag_kind: str = TRAIN_FLAG_PLACEHOLDER) -> GraphState:
  """The :class:`GraphState` of ``graph`` (default: the current graph), created on first call.

  A second call with another ``train_flag_kind`` for the same graph is a ``ValueError``.
  """
  graph = graph if graph is not None else tf.compat.v1.get_default_graph()
  if not isinstance(graph, tf.Graph):
    raise TypeError(f"graph must be a tf.Graph, got {type(graph).__name__}")
  state = getattr(graph, _ATTR, None)
  if state is not None:
    if state.train_flag_kind != train_flag_kind:
      raise ValueError(
        f"graph already has a train flag of kind {state.train_flag_kind!r}, asked for {train_flag_kind!r}"
      )
    return state
  state = GraphState(graph, train_flag_kind)
  setattr(graph, _ATTR, state)
  return state
