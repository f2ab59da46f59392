"""The run context: which stage we are in, the train flag, step and epoch, losses and outputs.

Mirrors ``returnn.frontend.run_ctx`` for TensorFlow graph mode. The current context lives in a
``contextvars.ContextVar``: two threads building graphs never see each other's context.

Stages:
  - ``"init"``: parameter creation (the implicit context; ``train_flag=False``);
  - ``"train_step"``: training and evaluation, where losses are marked with :meth:`RunCtx.mark_as_loss`;
  - ``"forward_step"``: forwarding, where outputs are marked with :meth:`RunCtx.mark_as_output`.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from returnn_rc.losses import (
  Loss,
  all_reduce_losses,
  check_loss_dims,
  check_loss_options,
  custom_inv_norm_tensor,
  total,
)
from returnn_rc.tensor import Dim, Tensor, TensorDict, batch_dim, check_name, convert_to_tensor

STAGE_INIT = "init"
STAGE_TRAIN_STEP = "train_step"
STAGE_FORWARD_STEP = "forward_step"
_STAGES = (STAGE_INIT, STAGE_TRAIN_STEP, STAGE_FORWARD_STEP)

TrainFlag = Union[bool, tf.Tensor]
DEFAULT_OUTPUT_NAME = "output"


def _check_train_flag(flag: Any) -> TrainFlag:
  """Returns a Python bool or a scalar bool ``tf.Tensor``; raises ``TypeError``/``ValueError``."""
  if isinstance(flag, (bool, np.bool_)):
    return bool(flag)
  if isinstance(flag, Tensor):
    flag = flag.get_raw()
  if isinstance(flag, tf.Variable):
    flag = tf.convert_to_tensor(flag)
  if isinstance(flag, tf.Tensor):
    if flag.dtype != tf.bool:
      raise TypeError(f"train_flag must be a bool or a scalar bool tensor, got a {flag.dtype.name} tensor {flag}")
    if flag.shape.rank != 0:
      raise ValueError(f"train_flag must be a scalar bool tensor, got shape {flag.shape} ({flag})")
    return flag
  raise TypeError(f"train_flag must be a Python bool or a scalar bool tf.Tensor, got {type(flag).__name__} {flag!r}")


def _check_step_or_epoch(what: str, value: Any, minimum: int) -> Union[int, tf.Tensor]:
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{what} must be an int or a scalar int tensor, got bool {value!r}")
  if isinstance(value, (int, np.integer)):
    if value < minimum:
      raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return int(value)
  if isinstance(value, Tensor):
    value = value.get_raw()
  if isinstance(value, tf.Variable):
    value = tf.convert_to_tensor(value)
  if isinstance(value, tf.Tensor):
    if not value.dtype.is_integer:
      raise TypeError(f"{what} must be an int tensor, got dtype {value.dtype.name} ({value})")
    if value.shape.rank != 0:
      raise ValueError(f"{what} must be a scalar tensor, got shape {value.shape} ({value})")
    return value
  raise TypeError(f"{what} must be an int or a scalar int tf.Tensor, got {type(value).__name__} {value!r}")


def _func_key(func: Any) -> Callable:
  """The plain function behind ``func`` (a function or bound method); ``TypeError`` otherwise."""
  if isinstance(func, types.MethodType):
    func = func.__func__
  if not isinstance(func, types.FunctionType):
    raise TypeError(f"func must be a Python function (or a list of them), got {type(func).__name__} {func!r}")
  return func


class RunCtx:
  """The run context of one stage. Create via :func:`init_train_step_run_ctx` /
  :func:`init_forward_step_run_ctx`, read via :func:`get_run_ctx`.

  Args:
    stage: ``"init"``, ``"train_step"`` (also eval) or ``"forward_step"``.
    train_flag: Python bool, or a scalar bool tensor (placeholder, variable) for run-time switching.
    step: global train step (starts at 0), int or scalar int tensor.
    epoch: epoch (starts at 1), int or scalar int tensor.
    expected_outputs: templates of the outputs :meth:`mark_as_output` must produce (forward stage).
    global_seq_offset: the global index of this replica's first sequence in the global batch (int >= 0 or
      scalar int tensor): dropout masks are a function of the global sequence index (local batch index
      + offset), so they do not depend on how a batch is split across replicas.
    cross_replica: inside a replica context of a ``tf.distribute`` strategy, reduce the losses over all
      replicas (:meth:`reduce_losses`); False: local reductions only (e.g. a test's negative control).
  """

  def __init__(
    self,
    *,
    stage: str,
    train_flag: TrainFlag = False,
    step: Union[int, tf.Tensor] = 0,
    epoch: Union[int, tf.Tensor] = 1,
    expected_outputs: Optional[TensorDict] = None,
    global_seq_offset: Union[int, tf.Tensor] = 0,
    cross_replica: bool = True,
  ):
    if stage not in _STAGES:
      raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
    self.stage = stage
    self._train_flag: TrainFlag = _check_train_flag(train_flag)
    self._step = _check_step_or_epoch("step", step, 0)
    self._epoch = _check_step_or_epoch("epoch", epoch, 1)
    self._global_seq_offset = _check_step_or_epoch("global_seq_offset", global_seq_offset, 0)
    if not isinstance(cross_replica, (bool, np.bool_)):
      raise TypeError(f"cross_replica must be a bool, got {type(cross_replica).__name__} {cross_replica!r}")
    self.cross_replica = bool(cross_replica)
    self.num_replicas: int = _num_replicas_in_sync()
    # The replica context whose collective reduced the losses (None: not reduced across replicas).
    self._reduced_in: Optional[Any] = None
    if expected_outputs is not None:
      if not isinstance(expected_outputs, TensorDict):
        raise TypeError(f"expected_outputs must be an rc.TensorDict, got {type(expected_outputs).__name__}")
      for key in expected_outputs:
        check_name(key, "expected output", key="signature key")
    self.expected_outputs = expected_outputs
    self.losses: Dict[str, Loss] = {}
    self.outputs = TensorDict()
    self._step_tensor: Optional[Tensor] = None
    self._epoch_tensor: Optional[Tensor] = None
    # The token restoring the previous context (set when made current by init_*_run_ctx or __enter__).
    self._scope_token: Optional[contextvars.Token] = None
    self._entered = False

  def __repr__(self) -> str:
    return f"RunCtx(stage={self.stage!r}, train_flag={self._train_flag!r})"

  # --- scope ------------------------------------------------------------------------------------

  def __enter__(self) -> "RunCtx":
    """Makes this the current context (if it is not yet) until ``__exit__``.

    ``with rc.init_train_step_run_ctx(...) as ctx:`` restores, on exit (also on an exception), the
    context that was current before ``init_train_step_run_ctx`` was called.
    """
    if self._entered:
      raise RuntimeError(f"{self!r} is already entered; a run context cannot be entered twice")
    if self._scope_token is None:
      self._scope_token = _set_current(self)
    elif _current.get() is not self:
      raise RuntimeError(
        f"{self!r} is no longer the current run context (current: {_current.get()!r}); enter it with 'with' "
        f"right where it is created: 'with rc.init_train_step_run_ctx(...) as ctx:'"
      )
    self._entered = True
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    token, self._scope_token, self._entered = self._scope_token, None, False
    current = _current.get()
    try:
      _current.reset(token)
    except ValueError:
      raise RuntimeError(
        f"{self!r} was entered in another thread or asyncio task (another contextvars.Context) than the one "
        f"exiting it; enter and exit a run context in the same thread or task"
      ) from None
    if current is not self and exc_type is None:
      raise RuntimeError(
        f"run contexts exited out of order: exiting {self!r} while {current!r} is current (nested 'with' "
        f"blocks must exit innermost first); restored the context that was current before {self!r}"
      )

  # --- train flag -------------------------------------------------------------------------------

  @property
  def train_flag(self) -> TrainFlag:
    """Whether we train (dropout etc. on): a Python bool, or a scalar bool tensor set at run time.

    Inside :meth:`train_flag_ctx` the flag of the latest override still active in this thread / asyncio
    task, else the flag the context was created with.
    """
    for record in reversed(_flag_overrides.get()):
      if record.active and record.ctx is self and record.funcs is None:
        return record.flag
    return self._train_flag

  @contextlib.contextmanager
  def train_flag_ctx(
    self, train_flag: TrainFlag, *, func: Optional[Union[Callable, Sequence[Callable]]] = None
  ) -> Iterator[None]:
    """Temporarily overrides the train flag, globally or (with ``func``) for those functions only.

    A per-function override wins over any global override, also a nested one::

      with ctx.train_flag_ctx(False, func=rc.dropout):  # no dropout ...
        with ctx.train_flag_ctx(True):                   # ... even here
          ...

    Each entry is a record of its own, removed on exit: the flag seen is always that of the latest
    override still active, also when overrides exit out of order (e.g. two context managers exited
    explicitly in the order they were entered). The records are kept in a ``contextvars.ContextVar``,
    as the current run context is: each thread and each asyncio task sees only its own overrides, so
    two tasks that each hold an override across an ``await`` never see, nor undo, each other's. A task
    also sees the overrides active where it was created, until their ``with`` block exits. Exiting an
    override in another thread or task than the one that entered it ends it and raises ``RuntimeError``.
    """
    flag = _check_train_flag(train_flag)
    funcs = None
    if func is not None:
      func_list = list(func) if isinstance(func, (list, tuple)) else [func]
      if not func_list:
        raise TypeError("func must be a Python function or a non-empty list of them, got an empty list")
      funcs = frozenset(_func_key(f) for f in func_list)
    record = _FlagOverride(self, flag, funcs)
    _flag_overrides.set(tuple(r for r in _flag_overrides.get() if r.active) + (record,))
    try:
      yield
    finally:
      record.active = False  # for every context that holds it (also where it was entered, see below)
      current = _flag_overrides.get()
      if not any(r is record for r in current):
        raise RuntimeError(
          f"train_flag_ctx({flag!r}) of {self!r} exited in another thread or asyncio task (another "
          f"contextvars.Context) than the one that entered it; enter and exit it in the same thread or task "
          f"(the override has ended)"
        )
      _flag_overrides.set(tuple(r for r in current if r.active))

  def is_train_flag_enabled(self, *, func: Optional[Callable]) -> TrainFlag:
    """The train flag as seen by ``func``: its own latest active override if any, else :attr:`train_flag`."""
    if func is not None:
      key = _func_key(func)
      for record in reversed(_flag_overrides.get()):
        if record.active and record.ctx is self and record.funcs is not None and key in record.funcs:
          return record.flag
    return self.train_flag

  # --- step / epoch -----------------------------------------------------------------------------

  @property
  def step(self) -> Union[int, tf.Tensor]:
    """Global train step, from 0, not reset per epoch; may be a tensor (graph's global step)."""
    return self._step

  @property
  def epoch(self) -> Union[int, tf.Tensor]:
    """Epoch, from 1; may be a tensor."""
    return self._epoch

  @property
  def global_seq_offset(self) -> Union[int, tf.Tensor]:
    """Global index of this replica's first sequence (0 outside a split batch); may be a tensor."""
    return self._global_seq_offset

  def get_step_tensor(self) -> Tensor:
    """The step as a scalar int64 :class:`Tensor` (created in the current graph on first call)."""
    if self._step_tensor is None or not _in_current_graph(self._step_tensor):
      self._step_tensor = _scalar_int64(self._step, "step")
    return self._step_tensor

  def get_epoch_tensor(self) -> Tensor:
    """The epoch as a scalar int64 :class:`Tensor` (created in the current graph on first call)."""
    if self._epoch_tensor is None or not _in_current_graph(self._epoch_tensor):
      self._epoch_tensor = _scalar_int64(self._epoch, "epoch")
    return self._epoch_tensor

  # --- losses -----------------------------------------------------------------------------------

  def mark_as_loss(
    self,
    loss: Union[Tensor, Any],
    name: str,
    *,
    dims: Optional[Sequence[Dim]] = None,
    scale: float = 1.0,
    as_error: bool = False,
    use_normalized_loss: bool = False,
    use_flatten_frames: bool = True,
    custom_inv_norm_factor: Optional[Union[Tensor, Any]] = None,
  ) -> None:
    """Marks ``loss`` (e.g. ``[B,T]`` frame-wise or ``[B]`` sequence-level) as a loss called ``name``.

    Do not reduce axes over which epoch statistics should be collected. ``scale`` only affects the
    optimizer; ``as_error`` reports it as an error and keeps it out of the optimizer.

    Args:
      loss: e.g. ``[B,T]`` or ``[B]``, an :class:`Tensor` or a raw tensor with ``dims``; float, int or bool.
      name: see :data:`returnn_rc.tensor.VALID_NAME_TEXT`.
      dims: for a raw ``loss``: one :class:`Dim` per axis.
      scale: finite; the factor for the optimizer only.
      as_error, use_normalized_loss, use_flatten_frames: bools, as in RETURNN.
      custom_inv_norm_factor: replaces the number of valid elements: its sum over its *valid* elements
        (padded frames of its dynamic dims excluded, as in RETURNN). An :class:`Tensor` says by its dims
        which axes are dynamic; a raw scalar, ``[B]`` vector or tensor of the loss's shape (then it has
        the loss's dims) is accepted, any other raw shape is ambiguous (``ValueError``); see
        :func:`returnn_rc.losses.custom_inv_norm_tensor`. Its valid values must be finite and >= 0
        (run-time ``InvalidArgumentError``).
    Raises:
      RuntimeError: not in stage ``"train_step"``; the losses were already reduced across replicas.
      TypeError / ValueError: a bad name, option, dims or dtype, before any graph node is built.
    """
    if self.stage != STAGE_TRAIN_STEP:
      raise RuntimeError(
        f"mark_as_loss({name!r}) called in stage {self.stage!r}; losses can only be marked in stage "
        f"{STAGE_TRAIN_STEP!r} (use init_train_step_run_ctx())"
      )
    if self._reduced_in is not None:
      raise RuntimeError(
        f"mark_as_loss({name!r}) called after the losses {list(self.losses)} were reduced across replicas "
        f"(by reduce_losses(), or by reading a reduction such as get_summed_loss() or total_loss()); inside a "
        f"tf.distribute replica context mark all losses before reading any of their reductions"
      )
    check_name(name, "loss")
    if name in self.losses:
      raise ValueError(f"duplicate loss name {name!r}: already marked losses are {list(self.losses)}")
    check_loss_options(
      name,
      scale=scale,
      as_error=as_error,
      use_normalized_loss=use_normalized_loss,
      use_flatten_frames=use_flatten_frames,
    )
    loss_t = _to_tensor(loss, dims, kind="loss", name=name)
    dtype = tf.as_dtype(loss_t.dtype)
    if dtype.is_complex or not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
      raise TypeError(f"loss {name!r} must be a float, int or bool tensor, got dtype {dtype.name}")
    if not dtype.is_floating:
      raw = tf.cast(loss_t.get_raw(), tf.float32)
      loss_t = Tensor(loss_t.name, loss_t.dims, "float32", raw_tensor=raw, feature_dim=loss_t.feature_dim)
    check_loss_dims(loss_t, name)
    inv_norm = None
    if custom_inv_norm_factor is not None:
      inv_norm = custom_inv_norm_tensor(custom_inv_norm_factor, loss_t, name)
    self.losses[name] = Loss(
      loss=loss_t,
      name=name,
      scale=float(scale),
      as_error=bool(as_error),
      use_normalized_loss=bool(use_normalized_loss),
      use_flatten_frames=bool(use_flatten_frames),
      custom_inv_norm_factor=inv_norm,
      siblings=self.losses,
      reduce_hook=self.reduce_losses,
    )

  def reduce_losses(self) -> None:
    """Finalises the losses' reductions; idempotent. Called by the builder after ``train_step``, and by any
    reduction getter (``Loss.get_summed_loss()`` ..., :meth:`total_loss`).

    Inside the replica context of a ``tf.distribute`` strategy (``tf.distribute.has_strategy()`` and not
    ``in_cross_replica_context()``, any ``num_replicas_in_sync``) and with ``cross_replica`` on, the
    (summed, inv_norm) of all marked losses are summed over the replicas by ONE all-reduce collective
    (:func:`returnn_rc.losses.all_reduce_losses`, in marking order): every reduction (summed, inverse norm
    factor, mean, total loss, reports) is then the global one, while its gradient is this replica's
    contribution, so summing the replicas' gradients gives the exact gradient of the global figure. Marking
    a loss after that is a ``RuntimeError``. Elsewhere nothing is built (the reductions stay local and lazy).
    """
    if self._reduced_in is not None or self.stage != STAGE_TRAIN_STEP or not self.cross_replica:
      return
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
      return
    replica_ctx = tf.distribute.get_replica_context()
    built = [
      name
      for name, loss in self.losses.items()
      if loss._summed_loss_cached is not None or loss._inv_norm_factor_cached is not None
    ]  # pylint: disable=protected-access
    if built:
      raise RuntimeError(
        f"reduce_losses(): the reductions of losses {built} were built outside the replica "
        f"context; build them inside the strategy's replica function"
      )
    self._reduced_in = replica_ctx
    all_reduce_losses(list(self.losses.values()), replica_ctx)

  def total_loss(self) -> Tensor:
    """Sum of the scaled reduced losses, excluding ``as_error`` and ``scale == 0`` ones, scalar."""
    if self.stage != STAGE_TRAIN_STEP:
      raise RuntimeError(f"total_loss() called in stage {self.stage!r}; only valid in {STAGE_TRAIN_STEP!r}")
    if not self.losses:
      raise RuntimeError("total_loss(): no loss was marked; call mark_as_loss() in train_step first")
    used = [loss for loss in self.losses.values() if loss.used_for_optimizer]
    if not used:
      raise RuntimeError(
        f"total_loss(): all marked losses {list(self.losses)} are as_error or have scale 0; nothing for the optimizer"
      )
    return total(used)

  # --- outputs ----------------------------------------------------------------------------------

  def mark_as_output(self, tensor: Union[Tensor, Any], name: str, *, dims: Optional[Sequence[Dim]] = None) -> None:
    """Marks ``tensor`` as output ``name`` (forwarding, export), transposed to the order ``dims``.

    With ``dims=None``: if an expected output ``name`` exists (``expected_outputs``), its dims give the
    order (as in RETURNN): each expected dim is matched to a dim of ``tensor`` by identity first, then
    by kind (batch, dynamic, static of the same size) where that is unambiguous; a raw tensor gets the
    expected dims as they are. Else the order is: batch, time, one other dynamic dim, one static dim;
    anything else is ambiguous and needs ``dims``.

    Raises:
      RuntimeError: not in stage ``"forward_step"``.
      TypeError / ValueError: a bad or duplicate name, a name not in ``expected_outputs``, dims that do
        not fit the tensor or the expected output.
    """
    if self.stage != STAGE_FORWARD_STEP:
      raise RuntimeError(
        f"mark_as_output({name!r}) called in stage {self.stage!r}; outputs can only be marked in stage "
        f"{STAGE_FORWARD_STEP!r} (use init_forward_step_run_ctx())"
      )
    check_name(name, "output", key="signature key")
    if name in self.outputs:
      raise ValueError(f"duplicate output name {name!r}: already marked outputs are {list(self.outputs)}")
    if self.expected_outputs is not None and name not in self.expected_outputs:
      raise ValueError(f"unknown output name {name!r}: expected outputs are {list(self.expected_outputs)}")
    expected = self.expected_outputs[name] if self.expected_outputs is not None else None
    if dims is None and expected is not None and not isinstance(tensor, Tensor):
      tensor = tf.convert_to_tensor(tensor)
      if tensor.shape.rank != 0:
        dims = expected.dims
    out = _to_tensor(tensor, dims, kind="output", name=name)
    if dims is None:
      dims = _output_dims_from_expected(out, expected, name) if expected is not None else None
      if dims is None:
        dims = _default_output_dims(out, name)
    out = out.copy_transpose(dims)
    out = Tensor(
      name, out.dims, out.dtype, raw_tensor=out.raw_tensor, sparse_dim=out.sparse_dim, feature_dim=out.feature_dim
    )
    if expected is not None:
      _check_expected_output(out, expected)
    self.outputs[name] = out

  def mark_as_default_output(self, tensor: Union[Tensor, Any], *, shape: Optional[Sequence[Dim]] = None) -> None:
    """``mark_as_output(tensor, "output", dims=shape)``."""
    self.mark_as_output(tensor, DEFAULT_OUTPUT_NAME, dims=shape)

  def check_outputs_complete(self) -> None:
    """Raises ``RuntimeError`` if an expected output was not marked."""
    if self.expected_outputs is None:
      return
    missing = [k for k in self.expected_outputs if k not in self.outputs]
    if missing:
      raise RuntimeError(f"outputs {missing} were expected but not marked; marked outputs are {list(self.outputs)}")


def _num_replicas_in_sync() -> int:
  """``num_replicas_in_sync`` of the current replica context of a strategy; 1 outside a strategy."""
  if not tf.distribute.has_strategy():
    return 1
  if tf.distribute.in_cross_replica_context():
    return int(tf.distribute.get_strategy().num_replicas_in_sync)
  return int(tf.distribute.get_replica_context().num_replicas_in_sync)


def _in_current_graph(t: Tensor) -> bool:
  raw = t.raw_tensor
  return raw is None or not hasattr(raw, "graph") or raw.graph is tf.compat.v1.get_default_graph()


def _scalar_int64(value: Union[int, tf.Tensor], name: str) -> Tensor:
  raw = tf.cast(value, tf.int64) if isinstance(value, tf.Tensor) else tf.constant(value, tf.int64, name=name)
  return Tensor(name, (), "int64", raw_tensor=raw)


def _to_tensor(value: Any, dims: Optional[Sequence[Dim]], *, kind: str, name: str) -> Tensor:
  what = f"{kind} {name!r}"
  if isinstance(value, Tensor):
    return value if dims is None else value.copy_transpose(dims)
  raw = tf.convert_to_tensor(value)
  if dims is None and raw.shape.rank != 0:
    raise ValueError(f"{what}: a raw tensor of shape {raw.shape} needs dims (one rc.Dim per axis)")
  try:
    return convert_to_tensor(raw, dims=dims, name=name)
  except ValueError as exc:
    raise ValueError(f"{what}: {exc}") from None


def _default_output_dims(tensor: Tensor, name: str) -> List[Dim]:
  """Batch, time, one other dynamic dim, one static dim; else ``ValueError`` asking for dims."""
  rest = list(tensor.dims)
  order: List[Dim] = []
  if batch_dim in rest:
    order.append(batch_dim)
    rest.remove(batch_dim)
  dynamic = [d for d in rest if not d.is_static()]
  static = [d for d in rest if d.is_static()]
  if len(dynamic) > 2 or len(static) > 1:
    raise ValueError(
      f"mark_as_output({name!r}): cannot infer the order of dims {list(tensor.dims)} "
      f"(default is batch, time, one more dynamic dim, one static dim); pass dims=[...]"
    )
  return order + dynamic + static


def _same_kind(dim: Dim, expected: Dim) -> bool:
  if expected.is_batch_dim or dim.is_batch_dim:
    return dim.is_batch_dim and expected.is_batch_dim
  if expected.is_static():
    return dim.is_static() and dim.dimension == expected.dimension
  return dim.is_dynamic()


def _output_dims_from_expected(tensor: Tensor, expected: Tensor, name: str) -> Optional[List[Dim]]:
  """The dims of ``tensor`` in the order of ``expected``'s dims: matched by identity, then by kind.

  Returns None where nothing matches (another rank, or an expected dim that no dim of ``tensor`` has
  the kind of): the default order is tried then, and the check against ``expected`` names the
  mismatch. ``ValueError`` where a match is ambiguous.
  """
  if len(tensor.dims) != len(expected.dims):
    return None
  order: List[Optional[Dim]] = [None] * len(expected.dims)
  remaining = list(tensor.dims)
  for i, e in enumerate(expected.dims):
    if any(d is e for d in remaining):
      order[i] = e
      remaining = [d for d in remaining if d is not e]
  for i, e in enumerate(expected.dims):
    if order[i] is not None:
      continue
    candidates = [d for d in remaining if _same_kind(d, e)]
    if not candidates:
      return None
    if len(candidates) > 1:
      raise ValueError(
        f"mark_as_output({name!r}): cannot match expected dim {e} (axis {i} of {expected}) to one dim of {tensor}: "
        f"{candidates} all fit; pass dims=[...]"
      )
    order[i] = candidates[0]
    remaining = [d for d in remaining if d is not candidates[0]]
  return order


def _check_expected_output(out: Tensor, expected: Tensor) -> None:
  name = out.name

  def fail(what: str):
    raise ValueError(f"mark_as_output({name!r}): {what}; expected {expected}, got {out}")

  if len(out.dims) != len(expected.dims):
    fail(f"{len(out.dims)} dims but {len(expected.dims)} expected")
  for axis, (d, e) in enumerate(zip(out.dims, expected.dims)):
    if d.is_batch_dim != e.is_batch_dim:
      fail(f"axis {axis}: {d} vs expected {e} (batch dim mismatch)")
    if d.is_dynamic() != e.is_dynamic():
      fail(f"axis {axis}: {d} vs expected {e} (dynamic vs static)")
    if e.is_static() and d.dimension != e.dimension:
      fail(f"axis {axis}: static size {d.dimension} but {e.dimension} expected")
  if out.dtype != expected.dtype:
    fail(f"dtype {out.dtype} but {expected.dtype} expected")
  if (out.sparse_dim is None) != (expected.sparse_dim is None):
    fail(f"sparse_dim {out.sparse_dim} but {expected.sparse_dim} expected")
  if (
    expected.sparse_dim is not None
    and expected.sparse_dim.is_static()
    and (out.sparse_dim.dimension != expected.sparse_dim.dimension)
  ):
    fail(f"sparse_dim size {out.sparse_dim.dimension} but {expected.sparse_dim.dimension} expected")


# --- train-flag overrides -----------------------------------------------------------------------


class _FlagOverride:
  """One :meth:`RunCtx.train_flag_ctx` entry: the context, the flag, the functions it is for (None: global),
  and whether it is still active (between its enter and its exit)."""

  __slots__ = ("ctx", "flag", "funcs", "active")

  def __init__(self, ctx: RunCtx, flag: TrainFlag, funcs: Optional[FrozenSet[Callable]]):
    self.ctx = ctx
    self.flag = flag
    self.funcs = funcs
    self.active = True


# The active overrides of this thread / asyncio task, oldest first (an immutable tuple: each set() is a
# new value, so a copied context never sees later changes).
_flag_overrides: contextvars.ContextVar[Tuple[_FlagOverride, ...]] = contextvars.ContextVar(
  "returnn_rc_train_flag_overrides", default=()
)


# --- the current context ------------------------------------------------------------------------

_current: contextvars.ContextVar[Optional[RunCtx]] = contextvars.ContextVar("returnn_rc_run_ctx", default=None)


def _set_current(ctx: RunCtx) -> contextvars.Token:
  """Makes ``ctx`` current; returns the token that restores the previous context.

  A previous context made current by a plain ``init_*_run_ctx()`` call and never entered can no longer
  be entered (it is not current any more), so its token is dropped: a long series of plain calls does
  not keep every earlier context (and its graph) alive.
  """
  previous = _current.get()
  if previous is not None and not previous._entered:  # pylint: disable=protected-access
    previous._scope_token = None  # pylint: disable=protected-access
  return _current.set(ctx)


def get_run_ctx() -> RunCtx:
  """The current run context; the implicit one is stage ``"init"`` with ``train_flag=False``."""
  ctx = _current.get()
  if ctx is None:
    ctx = RunCtx(stage=STAGE_INIT)
    _set_current(ctx)
  return ctx


def get_run_ctx_step() -> Tensor:
  """Shortcut for ``get_run_ctx().get_step_tensor()``."""
  return get_run_ctx().get_step_tensor()


def reset_run_ctx() -> None:
  """Back to the implicit ``"init"`` context (``train_flag=False``)."""
  _set_current(RunCtx(stage=STAGE_INIT))


def _activate(ctx: RunCtx) -> RunCtx:
  """Makes ``ctx`` current, remembering the previous context for ``with ctx:`` to restore."""
  ctx._scope_token = _set_current(ctx)  # pylint: disable=protected-access
  return ctx


def init_train_step_run_ctx(
  *,
  train_flag: TrainFlag = True,
  step: Union[int, tf.Tensor] = 0,
  epoch: Union[int, tf.Tensor] = 1,
  global_seq_offset: Optional[Union[int, tf.Tensor]] = None,
  cross_replica: bool = True,
) -> RunCtx:
  """Enters stage ``"train_step"`` (training, or evaluation with ``train_flag=False``).

  Under a ``tf.distribute`` strategy, call it inside the replica function: the losses are then reduced
  over all replicas (:meth:`RunCtx.reduce_losses`; ``cross_replica=False`` keeps them local), and
  ``global_seq_offset`` (default 0) is the global index of this replica's first sequence, which dropout
  masks depend on (see :class:`RunCtx`).

  As in RETURNN, a plain call sets the current context and returns it. The returned context is also
  a context manager: ``with rc.init_train_step_run_ctx(...) as ctx:`` restores the previous context
  on exit (also on an exception), so a nested build never wipes an outer one.
  """
  return _activate(
    RunCtx(
      stage=STAGE_TRAIN_STEP,
      train_flag=train_flag,
      step=step,
      epoch=epoch,
      global_seq_offset=0 if global_seq_offset is None else global_seq_offset,
      cross_replica=cross_replica,
    )
  )


def init_forward_step_run_ctx(
  *, expected_outputs: Optional[TensorDict] = None, step: Union[int, tf.Tensor] = 0, epoch: Union[int, tf.Tensor] = 1
) -> RunCtx:
  """Enters stage ``"forward_step"`` (train flag off); like :func:`init_train_step_run_ctx` also a
  context manager restoring the previous context on exit."""
  return _activate(
    RunCtx(stage=STAGE_FORWARD_STEP, train_flag=False, step=step, epoch=epoch, expected_outputs=expected_outputs)
  )
