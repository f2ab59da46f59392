"""Registry of the goldens (every public module of ``graphs/``) and the harness the suites share.

A golden is a graph module following the contract of ``graphs/__init__.py``. They are found with
``pkgutil`` over the ``graphs`` package, so a new ``graphs/<name>.py`` is picked up by every suite
without touching the tests.

:func:`build` makes the graph the engine ships: :func:`returnn_rc.engine.train_graph.build_train_graph`
(graph state, model, losses, Adam on dense gradients, the learning-rate variables, forward outputs,
``Saver``), with the engine's default :class:`TrainGraphConfig` except for the train-flag kind and
XLA, on extern data from :func:`returnn_rc.graph_module.make_placeholders` instead of the engine's
``tf.data`` iterator, so a test can feed exactly the padded batch it wants (NaN padding, one
sequence alone, ...; batches from :func:`returnn_rc.graph_module.pad_batch`). Dropout masks are
stateless functions of (seed, op, step), so two runs at the same step draw the same masks and an XLA
build draws the same masks as a plain one.

Letters: ``B`` batch, ``T`` time.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

import graphs
import returnn_rc as rc
from returnn_rc import graph_module as rc_graph_module
from returnn_rc import graph_state as rc_graph_state
from returnn_rc import nn as rc_nn
from returnn_rc.engine.train_graph import TrainGraph, TrainGraphConfig, build_train_graph
from returnn_rc.tensor import size_key

#: Sequences per split the suites use (the first ones of ``default_data``): tiny, for CI.
NUM_SEQS = 4

#: Op types of conditionals (v1 and v2 control flow).
COND_OP_TYPES = frozenset({"If", "StatelessIf", "Switch", "Merge", "RefSwitch", "RefMerge", "_SwitchN"})

#: Events of the hook of :func:`build`, in the order they happen.
HOOK_EVENTS = ("train_ctx", "train_step_done", "forward_ctx", "forward_step_done")


def is_random_op_type(op_type: str) -> bool:
  """Random-number ops (stateful or stateless), e.g. ``RandomUniform``, ``StatelessRandomUniformV2``."""
  return (
    op_type.startswith("Random")
    or op_type.startswith("StatelessRandom")
    or "RandomUniform" in op_type
    or op_type
    in (
      "TruncatedNormal",
      "StatelessTruncatedNormal",
      "StatelessTruncatedNormalV2",
      "Multinomial",
      "StatelessMultinomial",
      "RandomShuffle",
    )
  )


def is_random_op(op: tf.Operation) -> bool:
  """A random-number op (:func:`is_random_op_type`) or the index-hash source of a dropout mask
  (:func:`returnn_rc.nn.is_hash_uniform_op`: masks that do not depend on how a batch is split)."""
  return is_random_op_type(op.type) or rc_nn.is_hash_uniform_op(op)


# --- registry -----------------------------------------------------------------------------------


def names() -> List[str]:
  """Names of the goldens: the public modules of the ``graphs`` package, sorted."""
  found = sorted(m.name for m in pkgutil.iter_modules(graphs.__path__) if not m.name.startswith("_"))
  if not found:
    raise RuntimeError(f"no graph modules found in {list(graphs.__path__)}")
  return found


def named_parameters() -> List[Tuple[str, str]]:
  """``(test name suffix, golden name)`` for ``parameterized.named_parameters``."""
  return [(name, name) for name in names()]


def module(name: str) -> Any:
  return importlib.import_module(f"graphs.{name}")


@functools.lru_cache(maxsize=None)
def data(name: str, split: str = "dev", num_seqs: int = NUM_SEQS) -> Tuple[Dict[str, np.ndarray], ...]:
  """The first ``num_seqs`` sequences of ``default_data(split)``."""
  seqs = rc_graph_module.default_data(module(name), split, max_seqs=num_seqs)
  if len(seqs) < min(num_seqs, 2):
    raise RuntimeError(f"golden {name!r}: default_data({split!r}) gave only {len(seqs)} sequences")
  return tuple(seqs)


# --- one built graph ----------------------------------------------------------------------------


@dataclasses.dataclass
class LossInfo:
  """One marked loss: its raw tensor, the sizes of its dynamic dims and its reductions (the nodes the
  engine reports)."""

  raw: tf.Tensor
  dyn_axes: Dict[int, tf.Tensor]  # axis -> sizes [B]
  batch_axis: int
  summed: tf.Tensor
  inv_norm: tf.Tensor
  used_for_optimizer: bool


@dataclasses.dataclass
class Built:
  """A golden's training graph (see the module docstring). Feed :meth:`feed`, fetch the tensors.

  Attributes:
    name: the golden.
    train_graph: what :func:`build_train_graph` returned.
    placeholders: feed key (``"<name>"``, ``"<name>:size<axis>"``) → placeholder.
    losses: loss name → :class:`LossInfo`.
    output_dims: output name → (batch axis, {dynamic axis: size key in :attr:`outputs`}).
    num_ops_built: number of ops in the graph after building.
  """

  name: str
  train_graph: TrainGraph
  placeholders: Dict[str, tf.Tensor]
  losses: Dict[str, LossInfo]
  output_dims: Dict[str, Tuple[int, Dict[int, str]]]
  num_ops_built: int

  @property
  def graph(self) -> tf.Graph:
    return self.train_graph.graph

  @property
  def template(self) -> rc.TensorDict:
    """The extern data (its dims are what :func:`rc_graph_module.pad_batch` needs)."""
    return self.train_graph.extern_data

  @property
  def gs(self) -> rc_graph_state.GraphState:
    return self.train_graph.graph_state

  @property
  def report(self) -> Dict[str, Tuple[tf.Tensor, tf.Tensor]]:
    return self.train_graph.report

  @property
  def total_loss(self) -> tf.Tensor:
    return self.train_graph.total_loss

  @property
  def grads(self) -> Dict[str, tf.Tensor]:
    return self.train_graph.grads

  @property
  def train_op(self) -> tf.Operation:
    return self.train_graph.train_op

  @property
  def outputs(self) -> Dict[str, tf.Tensor]:
    """``forward_step``'s outputs incl. ``"<name>:size<axis>"``."""
    return self.train_graph.output_fetches

  @property
  def variables(self) -> List[tf.Variable]:
    return self.train_graph.variables

  @property
  def init_op(self) -> tf.Operation:
    return self.train_graph.init_op

  @property
  def saver(self) -> tf.compat.v1.train.Saver:
    return self.train_graph.saver

  def session(self, test=None) -> tf.compat.v1.Session:
    """A new session with freshly initialised variables (the same values every time: seeded)."""
    sess = tf.compat.v1.Session(graph=self.graph)
    if test is not None:
      test.addCleanup(sess.close)
    sess.run(self.init_op)
    return sess

  def pad(self, seqs: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """One padded batch of ``seqs`` (:func:`returnn_rc.graph_module.pad_batch`)."""
    return rc_graph_module.pad_batch(self.template, seqs)

  def feed(self, padded: Mapping[str, np.ndarray], *, train: Optional[bool] = None) -> Dict[tf.Tensor, Any]:
    """Feed dict of a :meth:`pad` batch; ``train`` feeds the placeholder train flag (if it is one)."""
    out = rc_graph_module.feed_dict(self.placeholders, padded)
    if train is not None:
      out.update(self.train_graph.feed_dict(train=train))
    return out

  def set_weights(self, sess: tf.compat.v1.Session, values: Mapping[str, np.ndarray]) -> None:
    """Sets variables by name by feeding the initial value of their initializer (no new ops)."""
    feed = {v.initializer.inputs[1]: values[v.op.name] for v in self.variables if v.op.name in values}
    sess.run([v.initializer for v in self.variables if v.op.name in values], feed)

  def get_weights(self, sess: tf.compat.v1.Session) -> Dict[str, np.ndarray]:
    """All variables (model, optimizer slots, learning rate, graph state) by name."""
    return dict(zip([v.op.name for v in self.variables], sess.run(self.variables)))

  def trainable_weights(self, sess: tf.compat.v1.Session) -> Dict[str, np.ndarray]:
    with self.graph.as_default():
      tvars = tf.compat.v1.trainable_variables()
    return dict(zip([v.op.name for v in tvars], sess.run(tvars)))


def with_hook(golden: Any, hook: Callable[[str, rc.RunCtx], None]) -> types.ModuleType:
  """A copy of graph module ``golden`` whose ``train_step`` / ``forward_step`` call ``hook(event, ctx)``
  with the current run context before and after the golden's own function (events
  :data:`HOOK_EVENTS`); the builder is not changed."""
  wrapped = types.ModuleType(golden.__name__)
  wrapped.__dict__.update({k: v for k, v in vars(golden).items() if not k.startswith("__")})

  def hooked(stage: str, func: Callable[..., None]) -> Callable[..., None]:
    def step(**kwargs):
      ctx = rc.get_run_ctx()
      hook(f"{stage}_ctx", ctx)
      func(**kwargs)
      hook(f"{stage}_step_done", ctx)

    return step

  wrapped.train_step = hooked("train", golden.train_step)
  wrapped.forward_step = hooked("forward", golden.forward_step)
  return wrapped


def build(
  name: str,
  *,
  train_flag: Union[str, bool] = rc_graph_state.TRAIN_FLAG_PLACEHOLDER,
  xla: bool = False,
  finalize: bool = True,
  hook: Optional[Callable[[str, rc.RunCtx], None]] = None,
  golden_module: Any = None,
) -> Built:
  """Builds golden ``name`` with the engine's builder in a new graph (see the module docstring).

  Args:
    name: the golden.
    train_flag: ``"placeholder"`` / ``"variable"`` (the graph state's symbolic flag of that kind), or a
      Python bool (a static flag: nothing symbolic in the model).
    xla: build the train step (model, losses, gradients, update) inside ``jit_scope()``.
    finalize: ``graph.finalize()`` at the end.
    hook: called as ``hook(event, ctx)`` around ``train_step`` / ``forward_step`` (:func:`with_hook`):
      used by the threading suite.
    golden_module: the module (default: ``graphs.<name>``).
  Returns:
    the :class:`Built` graph.
  """
  mod = golden_module if golden_module is not None else module(name)
  if hook is not None:
    mod = with_hook(mod, hook)
  graph = tf.Graph()
  with graph.as_default():
    extern_data = rc_graph_module.extern_data_template(mod)
    placeholders = rc_graph_module.make_placeholders(extern_data)
    tg = build_train_graph(mod, extern_data, TrainGraphConfig(train_flag=train_flag, xla=xla))
  if finalize:
    graph.finalize()
  losses = {}
  for loss_name, loss in tg.losses.items():
    tensor = loss.loss
    losses[loss_name] = LossInfo(
      raw=tensor.get_raw(),
      dyn_axes={axis: d.get_dyn_size() for axis, d in enumerate(tensor.dims) if d.is_dynamic()},
      batch_axis=tensor.get_axis_from_dim(rc.batch_dim) if tensor.have_batch_axis() else -1,
      summed=tg.report[loss_name][0],
      inv_norm=tg.report[loss_name][1],
      used_for_optimizer=loss.used_for_optimizer,
    )
  output_dims = {}
  for out_name, out in tg.outputs.items():
    batch_axis = out.get_axis_from_dim(rc.batch_dim) if out.have_batch_axis() else -1
    output_dims[out_name] = (batch_axis, {a: size_key(out_name, a) for a, d in enumerate(out.dims) if d.is_dynamic()})
  return Built(
    name=name,
    train_graph=tg,
    placeholders=placeholders,
    losses=losses,
    output_dims=output_dims,
    num_ops_built=len(graph.get_operations()),
  )


@functools.lru_cache(maxsize=None)
def cached_build(
  name: str, train_flag: Union[str, bool] = rc_graph_state.TRAIN_FLAG_PLACEHOLDER, xla: bool = False
) -> Built:
  """:func:`build`, once per process and arguments (the graph is finalized; tests open own sessions)."""
  return build(name, train_flag=train_flag, xla=xla)


# --- data ---------------------------------------------------------------------------------------
def padding_mask(template: rc.TensorDict, padded: Mapping[str, np.ndarray], name: str) -> np.ndarray:
  """Bool ``[B,...]`` of input ``name``: True at padded elements (outside the valid length of any dynamic axis)."""
  arr = padded[name]
  valid = np.ones(arr.shape, bool)
  for axis, d in enumerate(template[name].dims):
    if d.is_dynamic():
      lens = padded[size_key(name, axis)]
      idx = np.arange(arr.shape[axis])
      shape = [1] * arr.ndim
      shape[0], shape[axis] = len(lens), arr.shape[axis]
      valid &= (idx[None, :] < lens[:, None]).reshape(shape)
  return ~valid


def corrupt_padding(
  template: rc.TensorDict, padded: Mapping[str, np.ndarray], variant: int = 0
) -> Tuple[Dict[str, np.ndarray], int]:
  """A copy of ``padded`` with garbage in every padded element of every input.

  Float inputs get NaN / +Inf / -Inf (cycling, starting at ``variant``); int inputs get huge and
  negative ids (``2**31-1``, ``-2**31``, ``-1``, ``10**6``). Returns (the batch, number of corrupted
  elements).
  """
  out = {k: np.array(v, copy=True) for k, v in padded.items()}
  count = 0
  for name, tmpl in template.items():
    mask = padding_mask(template, padded, name)
    n = int(mask.sum())
    if not n:
      continue
    dtype = tf.as_dtype(tmpl.dtype)
    if dtype.is_floating:
      garbage = np.array([np.nan, np.inf, -np.inf], dtype.as_numpy_dtype)
    elif dtype.is_integer:
      info = np.iinfo(dtype.as_numpy_dtype)
      garbage = np.array([info.max, info.min, -1, 10**6], dtype.as_numpy_dtype)
    elif dtype.is_bool:
      garbage = np.array([True, False])
    else:
      raise TypeError(f"input {name!r}: don't know how to corrupt dtype {tmpl.dtype}")
    out[name][mask] = np.resize(np.roll(garbage, -variant), n)
    count += n
  return out, count


def per_seq(values: np.ndarray, batch_axis: int, dyn_axes: Mapping[int, np.ndarray], b: int) -> np.ndarray:
  """Sequence ``b`` of a ``[B,...]`` array, each dynamic axis cut to its length (batch axis removed)."""
  index = [slice(None)] * values.ndim
  index[batch_axis] = b
  for axis, lens in dyn_axes.items():
    index[axis] = slice(0, int(lens[b]))
  return values[tuple(index)]


# --- graph inspection ---------------------------------------------------------------------------


def upstream_ops(fetches: Sequence[Union[tf.Tensor, tf.Operation]]) -> List[tf.Operation]:
  """Every op that ``fetches`` depend on (data and control inputs), including their own ops."""
  todo = [f if isinstance(f, tf.Operation) else f.op for f in fetches]
  seen = {}
  while todo:
    op = todo.pop()
    if op.name in seen:
      continue
    seen[op.name] = op
    todo.extend(t.op for t in op.inputs)
    todo.extend(op.control_inputs)
  return list(seen.values())


def all_node_op_types(graph: tf.Graph) -> List[Tuple[str, str]]:
  """``(node name, op type)`` of every node of ``graph``, including the bodies of its functions."""
  graph_def = graph.as_graph_def()
  nodes = [(n.name, n.op) for n in graph_def.node]
  for fn in graph_def.library.function:
    nodes.extend((f"{fn.signature.name}/{n.name}", n.op) for n in fn.node_def)
  return nodes


def fetches_of(built: Built) -> List[Union[tf.Tensor, tf.Operation]]:
  """Everything a train / eval / forward run fetches: losses, reductions, total, gradients, train op, outputs."""
  out: List[Union[tf.Tensor, tf.Operation]] = [built.total_loss, built.train_op]
  for info in built.losses.values():
    out.extend([info.raw, info.summed, info.inv_norm])
  out.extend(built.grads.values())
  out.extend(built.outputs.values())
  return out
