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
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from returnn_rc.losses import Loss, check_loss_dims, total
from returnn_rc.tensor import Dim, Tensor, TensorDict, batch_dim, convert_to_tensor

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
  """

  def __init__(self, *, stage: str, train_flag: TrainFlag = False, step: Union[int, tf.Tensor] = 0,
               epoch: Union[int, tf.Tensor] = 1, expected_outputs: Optional[TensorDict] = None):
    if stage not in _STAGES:
      raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
    self.stage = stage
    self._train_flag: TrainFlag = _check_train_flag(train_flag)
    self._func_train_flags: Dict[Callable, List[TrainFlag]] = {}
    self._step = _check_step_or_epoch("step", step, 0)
    self._epoch = _check_step_or_epoch("epoch", epoch, 1)
    if expected_outputs is not None and not isinstance(expected_outputs, TensorDict):
      raise TypeError(f"expected_outputs must be an rc.TensorDict, got {type(expected_outputs).__name__}")
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
          f"right where it is created: 'with rc.init_train_step_run_ctx(...) as ctx:'")
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
          f"exiting it; enter and exit a run context in the same thread or task") from None
    if current is not self and exc_type is None:
      raise RuntimeError(
          f"run contexts exited out of order: exiting {self!r} while {current!r} is current (nested 'with' "
          f"blocks must exit innermost first); restored the context that was current before {self!r}")

  # --- train flag -------------------------------------------------------------------------------

  @property
  def train_flag(self) -> TrainFlag:
    """Whether we train (dropout etc. on): a Python bool, or a scalar bool tensor set at run time."""
    return self._train_flag

  @contextlib.contextmanager
  def train_flag_ctx(self, train_flag: TrainFlag, *, func: Optional[Union[Callable, Sequence[Callable]]] = None
                     ) -> Iterator[None]:
    """Temporarily overrides the train flag, globally or (with ``func``) for those functions only.

    A per-function override wins over any global override, also a nested one::

      with ctx.train_flag_ctx(False, func=rc.dropout):  # no dropout ...
        with ctx.train_flag_ctx(True):                   # ... even here
          ...
    """
    flag = _check_train_flag(train_flag)
    if func is None:
      old = self._train_flag
      self._train_flag = flag
      try:
        yield
      finally:
        self._train_flag = old
      return
    funcs = list(func) if isinstance(func, (list, tuple)) else [func]
    if not funcs:
      raise TypeError("func must be a Python function or a non-empty list of them, got an empty list")
    keys = [_func_key(f) for f in funcs]
    for key in keys:
      self._func_train_flags.setdefault(key, []).append(flag)
    try:
      yield
    finally:
      for key in keys:
        stack = self._func_train_flags[key]
        stack.pop()
        if not stack:
          del self._func_train_flags[key]

  def is_train_flag_enabled(self, *, func: Optional[Callable]) -> TrainFlag:
    """The train flag as seen by ``func``: its own override if any, else the global flag."""
    if func is not None:
      stack = self._func_train_flags.get(_func_key(func))
      if stack:
        return stack[-1]
    return self._train_flag

  # --- step / epoch -----------------------------------------------------------------------------

  @property
  def step(self) -> Union[int, tf.Tensor]:
    """Global train step, from 0, not reset per epoch; may be a tensor (graph's global step)."""
    return self._step

  @property
  def epoch(self) -> Union[int, tf.Tensor]:
    """Epoch, from 1; may be a tensor."""
    return self._epoch

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

  def mark_as_loss(self, loss: Union[Tensor, Any], name: str, *, dims: Optional[Sequence[Dim]] = None,
                   scale: float = 1.0, as_error: bool = False, use_normalized_loss: bool = False,
                   use_flatten_frames: bool = True, custom_inv_norm_factor: Optional[Union[Tensor, Any]] = None
                   ) -> None:
    """Marks ``loss`` (e.g. ``[B,T]`` frame-wise or ``[B]`` sequence-level) as a loss called ``name``.

    Do not reduce axes over which epoch statistics should be collected. ``scale`` only affects the
    optimizer; ``as_error`` reports it as an error and keeps it out of the optimizer.
    """
    if self.stage != STAGE_TRAIN_STEP:
      raise RuntimeError(
          f"mark_as_loss({name!r}) called in stage {self.stage!r}; losses can only be marked in stage "
          f"{STAGE_TRAIN_STEP!r} (use init_train_step_run_ctx())")
    if not isinstance(name, str) or not name:
      raise TypeError(f"loss name must be a non-empty str, got {name!r}")
    if name in self.losses:
      raise ValueError(f"duplicate loss name {name!r}: already marked losses are {list(self.losses)}")
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
      raise TypeError(f"loss {name!r}: scale must be a Python float, got {type(scale).__name__} {scale!r}")
    loss_t = _to_tensor(loss, dims, kind="loss", name=name)
    if not tf.as_dtype(loss_t.dtype).is_floating:
      raw = tf.cast(loss_t.get_raw(), tf.float32)
      loss_t = Tensor(loss_t.name, loss_t.dims, "float32", raw_tensor=raw, feature_dim=loss_t.feature_dim)
    check_loss_dims(loss_t, name)
    inv_norm = None
    if custom_inv_norm_factor is not None:
      inv_norm = _as_any_shape_tensor(custom_inv_norm_factor, f"{name}:custom_inv_norm_factor")
    self.losses[name] = Loss(loss=loss_t, name=name, scale=float(scale), as_error=bool(as_error),
                             use_normalized_loss=bool(use_normalized_loss),
                             use_flatten_frames=bool(use_flatten_frames), custom_inv_norm_factor=inv_norm)

  def total_loss(self) -> Tensor:
    """Sum of the scaled reduced losses, excluding ``as_error`` and ``scale == 0`` ones, scalar."""
    if self.stage != STAGE_TRAIN_STEP:
      raise RuntimeError(f"total_loss() called in stage {self.stage!r}; only valid in {STAGE_TRAIN_STEP!r}")
    if not self.losses:
      raise RuntimeError("total_loss(): no loss was marked; call mark_as_loss() in train_step first")
    used = [loss for loss in self.losses.values() if loss.used_for_optimizer]
    if not used:
      raise RuntimeError(
          f"total_loss(): all marked losses {list(self.losses)} are as_error or have scale 0; "
          f"nothing for the optimizer")
    return total(used)

  # --- outputs ----------------------------------------------------------------------------------

  def mark_as_output(self, tensor: Union[Tensor, Any], name: str, *, dims: Optional[Sequence[Dim]] = None) -> None:
    """Marks ``tensor`` as output ``name`` (forwarding, export), transposed to the order ``dims``.

    With ``dims=None`` the order is: batch, time, one other dynamic dim, one static dim; anything
    else is ambiguous and needs ``dims``.
    """
    if self.stage != STAGE_FORWARD_STEP:
      raise RuntimeError(
          f"mark_as_output({name!r}) called in stage {self.stage!r}; outputs can only be marked in stage "
          f"{STAGE_FORWARD_STEP!r} (use init_forward_step_run_ctx())")
    if not isinstance(name, str) or not name:
      raise TypeError(f"output name must be a non-empty str, got {name!r}")
    if name in self.outputs:
      raise ValueError(f"duplicate output name {name!r}: already marked outputs are {list(self.outputs)}")
    if self.expected_outputs is not None and name not in self.expected_outputs:
      raise ValueError(f"unknown output name {name!r}: expected outputs are {list(self.expected_outputs)}")
    out = _to_tensor(tensor, dims, kind="output", name=name)
    if dims is None:
      dims = _default_output_dims(out, name)
    out = out.copy_transpose(dims)
    out = Tensor(name, out.dims, out.dtype, raw_tensor=out.raw_tensor, sparse_dim=out.sparse_dim,
                 feature_dim=out.feature_dim)
    if self.expected_outputs is not None:
      _check_expected_output(out, self.expected_outputs[name])
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
      raise RuntimeError(
          f"outputs {missing} were expected but not marked; marked outputs are {list(self.outputs)}")


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


def _as_any_shape_tensor(value: Any, name: str) -> Tensor:
  """Wraps a value of any shape (only ever summed) as a :class:`Tensor` with anonymous dims."""
  if isinstance(value, Tensor):
    return value
  raw = tf.convert_to_tensor(value)
  if raw.shape.rank is None:
    raise ValueError(f"{name} must have a known rank, got {raw}")
  dims = [Dim(size, name=f"{name}:{axis}") for axis, size in enumerate(raw.shape.as_list())]
  return Tensor(name, dims, raw.dtype, raw_tensor=raw)


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
        f"(default is batch, time, one more dynamic dim, one static dim); pass dims=[...]")
  return order + dynamic + static


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
  if expected.sparse_dim is not None and expected.sparse_dim.is_static() and (
      out.sparse_dim.dimension != expected.sparse_dim.dimension):
    fail(f"sparse_dim size {out.sparse_dim.dimension} but {expected.sparse_dim.dimension} expected")


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


def init_train_step_run_ctx(*, train_flag: TrainFlag = True, step: Union[int, tf.Tensor] = 0,
                            epoch: Union[int, tf.Tensor] = 1) -> RunCtx:
  """Enters stage ``"train_step"`` (training, or evaluation with ``train_flag=False``).

  As in RETURNN, a plain call sets the current context and returns it. The returned context is also
  a context manager: ``with rc.init_train_step_run_ctx(...) as ctx:`` restores the previous context
  on exit (also on an exception), so a nested build never wipes an outer one.
  """
  return _activate(RunCtx(stage=STAGE_TRAIN_STEP, train_flag=train_flag, step=step, epoch=epoch))


def init_forward_step_run_ctx(*, expected_outputs: Optional[TensorDict] = None, step: Union[int, tf.Tensor] = 0,
                              epoch: Union[int, tf.Tensor] = 1) -> RunCtx:
  """Enters stage ``"forward_step"`` (train flag off); like :func:`init_train_step_run_ctx` also a
  context manager restoring the previous context on exit."""
  return _activate(RunCtx(stage=STAGE_FORWARD_STEP, train_flag=False, step=step, epoch=epoch,
                          expected_outputs=expected_outputs))
