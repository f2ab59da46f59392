"""The training graph of a graph module: ONE builder, used by the engine, the conformance suites and the
benchmarks alike.

:func:`build_train_graph` adds to the current ``tf.compat.v1`` graph, on top of extern data the caller
made (the engine: a ``tf.data`` iterator's ``get_next()``; a test: placeholders from
:func:`returnn_rc.graph_module.make_placeholders`):

- the graph seed and the stateless-dropout seed (:func:`returnn_rc.nn.set_stateless_dropout_seed`);
- the symbolic train flag / step / epoch (:mod:`returnn_rc.graph_state`) and ``get_model``;
- ``train_step`` in a train-step run context, every loss's reductions, ``total_loss``;
- the learning-rate variables (:mod:`returnn_rc.engine.lr_control`) times the warm-up / schedule
  factor of the global step (:mod:`returnn_rc.engine.lr_schedule`), the optimizer's dense gradients
  of ``total_loss`` (:func:`dense_gradients`) and the train op advancing the global step, with the
  chosen optimizer, decoupled weight decay, global-norm clipping and exact gradient accumulation
  (:mod:`returnn_rc.engine.updates`), optionally inside ``jit_scope`` (XLA);
- ``forward_step`` in a forward-step run context, in the *same* graph on the same model object
  (one set of variables, one checkpoint), checked against ``model_outputs_template``;
- the ``Saver`` over all global variables and the initialiser.

Evaluation runs the same loss nodes with the train flag off and without the train op.

With a ``tf.distribute`` strategy (``strategy=``; :mod:`returnn_rc.engine.distributed`), ``extern_data``
is a :class:`GlobalBatch` (the global padded batch, the same on every worker) and the train step runs
once per replica (``call_for_each_replica``) on the replica's contiguous part of it, with the run
context told the part's offset in the global batch (dropout masks are functions of the global
sequence index) and reducing every loss's (summed, inv_norm) over the replicas in one collective
(``RunCtx.reduce_losses``; the report holds global sums, the gradient of ``total_loss`` is the
replica's contribution). The replicas' dense gradients are summed in ONE batched all-reduce; global-norm
clipping, weight decay and the optimizer step then run on the summed gradient outside the replica
context, on plain variables (one copy per worker, the names of a single-replica graph), identically on
every worker. ``forward_step`` runs on the whole global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from returnn_rc import graph_module as _graph_module
from returnn_rc import graph_state as _graph_state
from returnn_rc import nn as _nn
from returnn_rc.engine import data as _data
from returnn_rc.engine import lr_schedule as _lr_schedule
from returnn_rc.engine import updates as _updates
from returnn_rc.engine.lr_control import NewbobLR, check_loss_name
from returnn_rc.losses import Loss
from returnn_rc.reporting import report_fetches
from returnn_rc.run_ctx import RunCtx, init_forward_step_run_ctx, init_train_step_run_ctx
from returnn_rc.tensor import TensorDict


@dataclasses.dataclass
class TrainGraphConfig:
  """What :func:`build_train_graph` builds.

  Attributes:
    seed: graph seed (variable initialisers) and seed of the stateless dropout masks.
    learning_rate: initial learning rate (Adam), >= 0.
    lr_control_loss: the loss whose epoch figure controls the rate (Newbob); None: the first loss
      used by the optimizer.
    lr_decay: Newbob factor when the figure did not improve by ``lr_decay_threshold`` (relative).
    lr_decay_threshold: minimal relative improvement.
    xla: build the train step (model, losses, gradients, update) inside ``jit_scope()``.
    train_flag: ``"placeholder"`` / ``"variable"`` (the graph state's symbolic flag of that kind), or a
      Python bool (a static flag: nothing symbolic in the model; for tests and benchmarks).
    max_to_keep: the ``Saver``'s rotation (``Saver(max_to_keep=...)``); None: no rotation.
    optimizer: ``"adam"``, ``"adamw"`` (Adam + decoupled weight decay) or ``"momentum"`` (SGD with
      momentum); see :mod:`returnn_rc.engine.updates`.
    weight_decay: decoupled weight decay of ``"adamw"``: ``var -= lr * weight_decay * var`` per update.
    momentum: momentum of ``"momentum"``, in ``[0, 1)``.
    grad_clip_global_norm: clip the update's gradient to this global norm (> 0); None: no clipping.
    accum_grad_multiple_step: ``k >= 1``: update once per ``k`` batches with the gradient of the
      ``k`` batches as one batch (exact normalisation; ``TrainGraph.flush_op`` applies a partial group).
    lr_warmup_steps: linear warm-up over this many steps (0: none).
    lr_schedule: ``"constant"``, ``"exponential"``, ``"step"`` or ``"inverse_sqrt"`` of the global step,
      multiplying the Newbob rate (:mod:`returnn_rc.engine.lr_schedule`).
    lr_schedule_steps: the schedule's step scale (decay steps; the pivot of ``"inverse_sqrt"``).
    lr_schedule_rate: the decay factor per ``lr_schedule_steps`` of ``"exponential"`` / ``"step"``.
  """

  seed: int = 42
  learning_rate: float = 1e-3
  lr_control_loss: Union[str, None] = None
  lr_decay: float = 0.5
  lr_decay_threshold: float = 0.01
  xla: bool = False
  train_flag: Union[str, bool] = _graph_state.TRAIN_FLAG_PLACEHOLDER
  max_to_keep: Union[int, None] = None
  optimizer: str = "adam"
  weight_decay: float = 0.0
  momentum: float = 0.9
  grad_clip_global_norm: Optional[float] = None
  accum_grad_multiple_step: int = 1
  lr_warmup_steps: int = 0
  lr_schedule: str = "constant"
  lr_schedule_steps: int = 0
  lr_schedule_rate: float = 1.0

  def __post_init__(self):
    self.check()

  def check(self) -> None:
    """``ValueError`` naming the option for an unknown optimizer or schedule, or a value out of range."""
    _updates.check_update_options(
      optimizer=self.optimizer,
      weight_decay=self.weight_decay,
      momentum=self.momentum,
      grad_clip_global_norm=self.grad_clip_global_norm,
      accum_grad_multiple_step=self.accum_grad_multiple_step,
    )
    _lr_schedule.check_schedule(
      schedule=self.lr_schedule,
      warmup_steps=self.lr_warmup_steps,
      decay_steps=self.lr_schedule_steps,
      decay_rate=self.lr_schedule_rate,
    )


@dataclasses.dataclass
class TrainGraph:
  """A built training graph (see the module docstring); the twin of the export's ``ForwardGraph``.

  Attributes:
    graph: the ``tf.Graph``.
    graph_state: its symbolic train flag / step / epoch.
    train_flag: what the run contexts got: the graph state's flag tensor, or a Python bool.
    model: what ``get_model`` returned.
    extern_data: the extern data the model saw.
    train_ctx / forward_ctx: the run contexts of ``train_step`` and ``forward_step``.
    losses: name → :class:`rc.Loss`, in marking order.
    loss_names / error_names: all loss names / those of ``as_error`` losses.
    total_loss: scalar, what the optimizer minimises.
    report: name → (summed, inv_norm) scalars (:func:`rc.report_fetches`).
    grads: variable name → dense gradient of ``total_loss`` (the trainable variables that have one).
    train_op: one train step (per batch); advances the global step (with accumulation, it updates
      the variables every ``k``-th batch).
    lr_control: the learning-rate variables and their Newbob control.
    outputs: the marked outputs of ``forward_step``.
    output_fetches: ``"<name>"`` and ``"<name>:size<axis>"`` → tensor, of the outputs.
    variables: all global variables (what the saver stores).
    saver / init_op: the ``Saver`` over ``variables`` (rotation: ``config.max_to_keep``) and their initialiser
      (with ``local_init_op``).
    learning_rate: scalar, the rate of the current step (Newbob rate times the schedule factor).
    flush_op: applies gradients accumulated since the last update (run at the end of an epoch);
      a no-op without accumulation.
    local_init_op: initialises the accumulators (run after a restore too; they are not checkpointed).
  """

  graph: tf.Graph
  graph_state: _graph_state.GraphState
  train_flag: Union[bool, tf.Tensor]
  model: Any
  extern_data: TensorDict
  train_ctx: RunCtx
  forward_ctx: RunCtx
  losses: Dict[str, Loss]
  loss_names: List[str]
  error_names: List[str]
  total_loss: tf.Tensor
  report: Dict[str, Tuple[tf.Tensor, tf.Tensor]]
  grads: Dict[str, tf.Tensor]
  train_op: tf.Operation
  lr_control: NewbobLR
  outputs: TensorDict
  output_fetches: Dict[str, tf.Tensor]
  variables: List[tf.Variable]
  saver: tf.compat.v1.train.Saver
  init_op: tf.Operation
  learning_rate: Optional[tf.Tensor] = None
  flush_op: Optional[tf.Operation] = None
  local_init_op: Optional[tf.Operation] = None

  def feed_dict(self, *, train: bool) -> Dict[tf.Tensor, bool]:
    """The feeds of the train flag for one ``Session.run`` (none for a variable or static flag)."""
    if isinstance(self.train_flag, tf.Tensor):
      return self.graph_state.feed_dict(train=train)
    return {}


@dataclasses.dataclass
class GlobalBatch:
  """The global padded batch of a distributed train graph (the same on every worker), to be split.

  Attributes:
    template: returns a fresh extern-data template (its dims get the sizes of one part).
    batch: ``{name: [B,...], "<name>:size<axis>": [B]}`` (e.g. ``iterator.get_next()``).
  """

  template: Callable[[], TensorDict]
  batch: Mapping[str, tf.Tensor]

  def full(self) -> TensorDict:
    """The extern data of the whole batch."""
    return _data.extern_data_from_batch(self.template(), self.batch)

  def part(self, index: int, num: int) -> Tuple[TensorDict, tf.Tensor]:
    """Replica ``index`` of ``num``'s contiguous part (:func:`returnn_rc.engine.data.split_global_batch`)
    and its offset (scalar int64: the global index of its first sequence)."""
    keys = sorted(self.batch)
    start, _ = _data.worker_slice(tf.shape(self.batch[keys[0]], out_type=tf.int64)[0], index, num)
    part = _data.split_global_batch(self.batch, index, num)
    return _data.extern_data_from_batch(self.template(), part), start


def _replica_index(strategy) -> int:
  """The global index of the current replica (static in graph mode)."""
  ctx = tf.distribute.get_replica_context()
  value = tf.get_static_value(ctx.replica_id_in_sync_group)
  if value is None:
    raise RuntimeError(f"the replica id of {type(strategy).__name__} is not static in this graph")
  return int(value)


def _all_reduce_sum(values: Sequence[tf.Tensor]) -> List[tf.Tensor]:
  """The sums over the replicas of ``values`` (in a replica context), in one batched all-reduce; not
  differentiated through (the inputs' gradients are not needed: they are gradients or reported sums)."""
  return list(
    tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, [tf.stop_gradient(v) for v in values])
  )


def dense_gradients(grads_and_vars: Sequence[Tuple[Any, tf.Variable]]) -> List[Tuple[Any, tf.Variable]]:
  """Sparse (``IndexedSlices``) gradients, e.g. of embedding lookups, as dense tensors.

  Under XLA a sparse update de-duplicates its indices with ``tf.unique``, whose size (the number of
  distinct ids in the batch) becomes a compile-time constant: XLA would recompile for nearly every
  batch. The dense gradient of an embedding ``[V,E]`` has a static shape. Done with and without
  XLA, so both run the same (dense) Adam update: TF's sparse Adam kernel updates the slots
  differently from the dense one.
  """
  return [(tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g, v) for g, v in grads_and_vars]


def build_train_graph(
  module: Any,
  extern_data: Union[TensorDict, GlobalBatch],
  config: TrainGraphConfig = TrainGraphConfig(),
  *,
  strategy: Any = None,
) -> TrainGraph:
  """Builds the training graph of ``module`` in the current graph, on ``extern_data``.

  Args:
    module: a graph module (see :mod:`returnn_rc.graph_module`).
    extern_data: the extern data, raw tensors (and dynamic dims' sizes) set, in the current graph; with a
      ``strategy``: a :class:`GlobalBatch`.
    config: :class:`TrainGraphConfig`.
    strategy: a ``tf.distribute`` strategy (graph mode) to train with, see the module docstring; None:
      one replica, no collectives.
  Raises:
    ValueError: ``train_step`` marked no loss, an unknown ``lr_control_loss``, a bad learning rate, an
      unknown optimizer or schedule, an option out of range, an option not supported with a strategy;
      outputs not matching ``model_outputs_template`` (``ValueError`` / ``RuntimeError``).
  """
  _graph_module.check_graph_module(module)
  config.check()
  what = f"graph {_graph_module.graph_name_of(module)!r}"
  if strategy is not None:
    if not isinstance(extern_data, GlobalBatch):
      raise TypeError(
        f"{what}: with a strategy, extern_data must be a GlobalBatch (the global batch to split over "
        f"the replicas), got {type(extern_data).__name__}"
      )
  elif isinstance(extern_data, GlobalBatch):
    extern_data = extern_data.full()
  graph = tf.compat.v1.get_default_graph()
  tf.compat.v1.set_random_seed(config.seed)
  _nn.set_stateless_dropout_seed(config.seed)
  static_flag = not isinstance(config.train_flag, str)
  kind = _graph_state.TRAIN_FLAG_PLACEHOLDER if static_flag else config.train_flag
  gs = _graph_state.get_graph_state(graph, train_flag_kind=kind)
  flag = bool(config.train_flag) if static_flag else gs.train_flag
  model = module.get_model(epoch=gs.epoch, step=gs.step)
  jit = tf.xla.experimental.jit_scope() if config.xla else contextlib.nullcontext()
  update_grads = None
  with jit:
    if strategy is None:
      with init_train_step_run_ctx(train_flag=flag, step=gs.step, epoch=gs.epoch) as train_ctx:
        module.train_step(model=model, extern_data=extern_data)
    else:
      train_ctx, update_grads = _replicated_train_step(
        module, model, extern_data, strategy, gs=gs, flag=flag, accumulate=config.accum_grad_multiple_step > 1
      )
    if not train_ctx.losses:
      raise ValueError(f"{what}: train_step marked no loss (call rc.get_run_ctx().mark_as_loss(...))")
    loss_names = list(train_ctx.losses)
    error_names = [n for n, loss in train_ctx.losses.items() if loss.as_error]
    optimized = [n for n, loss in train_ctx.losses.items() if loss.used_for_optimizer]
    lr_loss = config.lr_control_loss if config.lr_control_loss is not None else (optimized or loss_names)[0]
    check_loss_name(lr_loss, loss_names)
    lr_control = NewbobLR(
      learning_rate=config.learning_rate,
      loss_name=lr_loss,
      decay=config.lr_decay,
      rel_threshold=config.lr_decay_threshold,
    )
    if strategy is None:
      total = train_ctx.total_loss().get_raw()
      report = report_fetches(train_ctx.losses)
    else:
      total, report = update_grads.total, update_grads.report
    learning_rate = lr_control.learning_rate * _lr_schedule.schedule_factor(
      gs.step,
      schedule=config.lr_schedule,
      warmup_steps=config.lr_warmup_steps,
      decay_steps=config.lr_schedule_steps,
      decay_rate=config.lr_schedule_rate,
    )
    update = _updates.build_update(
      train_ctx.losses,
      total,
      learning_rate=learning_rate,
      step_var=gs.step_var,
      optimizer=config.optimizer,
      weight_decay=config.weight_decay,
      momentum=config.momentum,
      grad_clip_global_norm=config.grad_clip_global_norm,
      accum_grad_multiple_step=config.accum_grad_multiple_step,
      grads_and_vars=None if update_grads is None or update_grads.groups else update_grads.grads_and_vars,
      groups=None if update_grads is None else update_grads.groups,
    )
    train_op = update.train_op
  grads = {v.op.name: g for g, v in update.grads_and_vars if g is not None}
  if strategy is not None:
    extern_data = extern_data.full()
  expected = _graph_module.outputs_template(module, extern_data)
  with init_forward_step_run_ctx(expected_outputs=expected, step=gs.step, epoch=gs.epoch) as forward_ctx:
    module.forward_step(model=model, extern_data=extern_data)
  forward_ctx.check_outputs_complete()
  outputs = forward_ctx.outputs
  output_fetches = outputs.as_raw_tensor_dict() if len(outputs) else {}
  variables = tf.compat.v1.global_variables()
  saver = tf.compat.v1.train.Saver(var_list=variables, max_to_keep=config.max_to_keep, save_relative_paths=True)
  init_op = tf.group(tf.compat.v1.global_variables_initializer(), update.local_init_op, name="init")
  return TrainGraph(
    graph=graph,
    graph_state=gs,
    train_flag=flag,
    model=model,
    extern_data=extern_data,
    train_ctx=train_ctx,
    forward_ctx=forward_ctx,
    losses=dict(train_ctx.losses),
    loss_names=loss_names,
    error_names=error_names,
    total_loss=total,
    report=report,
    grads=grads,
    train_op=train_op,
    lr_control=lr_control,
    outputs=outputs,
    output_fetches=output_fetches,
    variables=variables,
    saver=saver,
    init_op=init_op,
    learning_rate=learning_rate,
    flush_op=update.flush_op,
    local_init_op=update.local_init_op,
  )


@dataclasses.dataclass
class _ReplicatedStep:
  """What the replicated train step hands to the update: this worker's first replica's values."""

  total: tf.Tensor
  report: Dict[str, Tuple[tf.Tensor, tf.Tensor]]
  grads_and_vars: List[Tuple[tf.Tensor, tf.Variable]]
  groups: Optional[List[_updates.Group]] = None


def _replicated_train_step(
  module: Any,
  model: Any,
  global_batch: GlobalBatch,
  strategy: Any,
  *,
  gs: _graph_state.GraphState,
  flag: Any,
  accumulate: bool = False,
) -> Tuple[RunCtx, _ReplicatedStep]:
  """``train_step`` once per replica on its part of the global batch; the losses reduced over the replicas
  (by the run context), the dense gradients summed in one batched all-reduce. With ``accumulate``: the
  gradients of the accumulation's groups (:func:`returnn_rc.engine.updates.accumulation_groups`) instead,
  summed in one batched all-reduce; their inverse norm factors are global already (the run context's)."""
  variables = list(tf.compat.v1.trainable_variables())
  ctxs: List[RunCtx] = []
  with_grad: List[List[tf.Variable]] = []
  slots: List[List[List[bool]]] = []  # per replica: per group, per variable: has a gradient
  spec: List[List[Tuple[str, float, bool]]] = []  # per replica: per group: (name, scale, normalised)

  def replica_fn():
    replica = tf.distribute.get_replica_context()
    index = _replica_index(strategy)
    part, offset = global_batch.part(index, int(replica.num_replicas_in_sync))
    with init_train_step_run_ctx(train_flag=flag, step=gs.step, epoch=gs.epoch, global_seq_offset=offset) as ctx:
      module.train_step(model=model, extern_data=part)
    if not ctx.losses:
      return None
    ctx.reduce_losses()  # every loss's (summed, inv_norm) summed over the replicas, in one collective
    ctxs.append(ctx)
    total = ctx.total_loss().get_raw()  # the global figure; its gradient: this replica's contribution
    report = report_fetches(ctx.losses)  # global sums
    pairs = [(g, v) for g, v in zip(tf.gradients(total, variables), variables) if g is not None]
    if not with_grad:
      with_grad.append([v for _, v in pairs])
    if accumulate:  # the groups' gradients, None where a variable has none in a group
      groups = _updates.accumulation_groups(ctx.losses, variables)
      slots.append([[g[v] is not None for v in variables] for _, g, _, _ in groups])
      spec.append([(name, scale, inv_norm is not None) for name, _, inv_norm, scale in groups])
      local = [_updates.dense(g[v]) for _, g, _, _ in groups for v in variables if g[v] is not None]
      inv_norms = [n if n is not None else tf.zeros([]) for _, _, n, _ in groups]
    else:
      local = [_updates.dense(g) for g, _ in pairs]
      inv_norms = []
    summed = _all_reduce_sum(local) if local else []
    return total, report, list(summed), inv_norms

  # Plain graph code: no AutoGraph conversion (call_for_each_replica would convert the whole call tree, slowly).
  results = strategy.extended.call_for_each_replica(tf.autograph.experimental.do_not_convert(replica_fn))
  if not ctxs:  # no loss marked: build_train_graph raises with the (empty) context
    with init_train_step_run_ctx(train_flag=flag, step=gs.step, epoch=gs.epoch) as empty:
      pass
    return empty, None
  total, report, summed, inv_norms = tf.nest.map_structure(lambda x: strategy.experimental_local_results(x)[0], results)
  groups = None
  if accumulate:
    groups, it = [], iter(summed)
    for (name, scale, normed), has, inv_norm in zip(spec[0], slots[0], inv_norms):
      grads = {v: next(it) if h else None for v, h in zip(variables, has)}
      groups.append((name, grads, inv_norm if normed else None, scale))
    summed = []
  return ctxs[0], _ReplicatedStep(
    total=total, report=dict(report), grads_and_vars=list(zip(summed, with_grad[0])) if summed else [], groups=groups
  )
