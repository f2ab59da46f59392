"""Registry of the goldens (every public module of ``graphs/``) and the harness the suites share.

A golden is a graph module following the contract of ``graphs/__init__.py``. They are found with
``pkgutil`` over the ``graphs`` package, so a new ``graphs/<name>.py`` is picked up by every suite
without touching the tests.

:func:`build` makes one ``tf.compat.v1`` graph of a golden, as the engine does, but with
placeholders as input (so a test can feed exactly the padded batch it wants: NaN padding, one
sequence alone, ...):

- one placeholder per extern-data input ``[B,...]`` (unknown batch and dynamic axes) and one int32
  placeholder ``[B]`` per distinct dynamic :class:`rc.Dim` (a dim shared by two inputs has one);
- the graph state (symbolic train flag / step / epoch) and ``get_model``;
- ``train_step`` in a train-step run context (train flag: the graph state's tensor, or a Python
  bool), every loss's reductions, ``total_loss``, its gradients w.r.t. every trainable variable and
  an SGD train op advancing the global step (optionally inside ``jit_scope``: XLA);
- ``forward_step`` in a forward-step run context, in the same graph, on the same model object;
- dropout masks are stateless functions of (seed, op, step)
  (:func:`returnn_rc.nn.set_stateless_dropout_seed`), so two runs at the same step draw the same
  masks and an XLA build draws the same masks as a plain one.

Letters: ``B`` batch, ``T`` time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import pkgutil
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

import returnn_rc as rc
from returnn_rc import graph_state as rc_graph_state
from returnn_rc import graph_module as rc_graph_module
from returnn_rc import nn as rc_nn
from returnn_rc.tensor import size_key

import graphs

SEED = 1234
LEARNING_RATE = 0.05
#: Sequences per split the suites use (the first ones of ``default_data``): tiny, for CI.
NUM_SEQS = 4

#: Op types of conditionals (v1 and v2 control flow).
COND_OP_TYPES = frozenset({"If", "StatelessIf", "Switch", "Merge", "RefSwitch", "RefMerge", "_SwitchN"})


def is_random_op_type(op_type: str) -> bool:
  """Random-number ops (stateful or stateless), e.g. ``RandomUniform``, ``StatelessRandomUniformV2``."""
  return (op_type.startswith("Random") or op_type.startswith("StatelessRandom") or "RandomUniform" in op_type
          or op_type in ("TruncatedNormal", "StatelessTruncatedNormal", "StatelessTruncatedNormalV2",
                         "Multinomial", "StatelessMultinomial", "RandomShuffle"))


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
  """The first ``num_seqs`` sequences of ``default_data(split)`` (``max_seqs`` passed if supported)."""
  fn = module(name).default_data
  if "max_seqs" in inspect.signature(fn).parameters:
    seqs = fn(split, max_seqs=num_seqs)
  else:
    seqs = fn(split)
  seqs = list(seqs)[:num_seqs]
  if len(seqs) < min(num_seqs, 2):
    raise RuntimeError(f"golden {name!r}: default_data({split!r}) gave only {len(seqs)} sequences")
  return tuple(seqs)


# --- one built graph ----------------------------------------------------------------------------


@dataclasses.dataclass
class LossInfo:
  """One marked loss: its raw frame-wise tensor, the sizes of its dynamic dims and its reductions."""

  raw: tf.Tensor
  dyn_axes: Dict[int, tf.Tensor]  # axis -> sizes [B]
  batch_axis: int
  summed: tf.Tensor
  inv_norm: tf.Tensor
  scaled: tf.Tensor
  used_for_optimizer: bool


@dataclasses.dataclass
class Built:
  """A golden's graph (see the module docstring). Feed :meth:`feed`, fetch the tensors."""

  name: str
  graph: tf.Graph
  template: rc.TensorDict
  inputs: Dict[str, tf.Tensor]  # input name -> placeholder [B,...]
  sizes: Dict[Tuple[str, int], tf.Tensor]  # (input name, axis) -> placeholder [B] (first input per dim)
  size_of: Dict[Tuple[str, int], Tuple[str, int]]  # every dynamic (input, axis) -> key in sizes
  gs: rc_graph_state.GraphState
  train_flag: Union[bool, tf.Tensor]
  losses: Dict[str, LossInfo]
  report: Dict[str, Tuple[tf.Tensor, tf.Tensor]]
  total_loss: tf.Tensor
  grads: Dict[str, tf.Tensor]  # variable name -> dense gradient of total_loss
  train_op: tf.Operation
  outputs: Dict[str, tf.Tensor]  # forward_step's outputs incl. "<name>:size<axis>"
  output_dims: Dict[str, Tuple[int, Dict[int, str]]]  # name -> (batch axis, {dynamic axis: size key})
  variables: List[tf.Variable]
  init_op: tf.Operation
  saver: tf.compat.v1.train.Saver
  run_ctxs: Dict[str, rc.RunCtx]
  num_ops_built: int

  def session(self, test=None) -> tf.compat.v1.Session:
    """A new session with freshly initialised variables (the same values every time: seeded)."""
    sess = tf.compat.v1.Session(graph=self.graph)
    if test is not None:
      test.addCleanup(sess.close)
    sess.run(self.init_op)
    return sess

  def feed(self, padded: Mapping[str, np.ndarray], *, train: Optional[bool] = None) -> Dict[tf.Tensor, Any]:
    """Feed dict of a :func:`pad` batch; ``train`` feeds the placeholder train flag (if it is one)."""
    out: Dict[tf.Tensor, Any] = {ph: padded[name] for name, ph in self.inputs.items()}
    for (name, axis), ph in self.sizes.items():
      out[ph] = padded[size_key(name, axis)]
    if train is not None and self.gs.train_flag_kind == rc_graph_state.TRAIN_FLAG_PLACEHOLDER and isinstance(
        self.train_flag, tf.Tensor):
      out.update(self.gs.feed_dict(train=train))
    return out

  def set_weights(self, sess: tf.compat.v1.Session, values: Mapping[str, np.ndarray]) -> None:
    """Sets variables by name by feeding the initial value of their initializer (no new ops)."""
    feed = {v.initializer.inputs[1]: values[v.op.name] for v in self.variables if v.op.name in values}
    sess.run([v.initializer for v in self.variables if v.op.name in values], feed)

  def get_weights(self, sess: tf.compat.v1.Session) -> Dict[str, np.ndarray]:
    return dict(zip([v.op.name for v in self.variables], sess.run(self.variables)))

  def trainable_weights(self, sess: tf.compat.v1.Session) -> Dict[str, np.ndarray]:
    with self.graph.as_default():
      tvars = tf.compat.v1.trainable_variables()
    return dict(zip([v.op.name for v in tvars], sess.run(tvars)))


def build(name: str, *, train_flag: Union[str, bool] = rc_graph_state.TRAIN_FLAG_PLACEHOLDER, xla: bool = False,
          finalize: bool = True, hook: Optional[Callable[[str, Any], None]] = None,
          golden_module: Any = None) -> Built:
  """Builds golden ``name`` (see the module docstring).

  Args:
    train_flag: ``"placeholder"`` / ``"variable"`` (the graph state's symbolic flag of that kind), or a
      Python bool (a static flag: nothing symbolic in the model).
    xla: build the train step (model, losses, gradients, update) inside ``jit_scope()``.
    finalize: ``graph.finalize()`` at the end.
    hook: called as ``hook(event, ctx)`` after each run context is entered / filled (``"train_ctx"``,
      ``"train_step_done"``, ``"forward_ctx"``, ``"forward_step_done"``): used by the threading suite.
    golden_module: the module (default: ``graphs.<name>``).
  """
  mod = golden_module if golden_module is not None else module(name)
  hook = hook or (lambda event, ctx: None)
  graph = tf.Graph()
  run_ctxs = {}
  with graph.as_default():
    tf.compat.v1.set_random_seed(SEED)
    rc_nn.set_stateless_dropout_seed(SEED)
    kind = train_flag if isinstance(train_flag, str) else rc_graph_state.TRAIN_FLAG_PLACEHOLDER
    gs = rc_graph_state.get_graph_state(train_flag_kind=kind)
    template = mod.extern_data_template()
    inputs, sizes, size_of, seen_dims = {}, {}, {}, {}
    extern_data = rc.TensorDict()
    with tf.name_scope("extern_data"):
      for in_name, tmpl in template.items():
        shape = [d.dimension for d in tmpl.dims]
        ph = tf.compat.v1.placeholder(tf.as_dtype(tmpl.dtype), shape, name=in_name)
        inputs[in_name] = ph
        for axis, d in enumerate(tmpl.dims):
          if not d.is_dynamic():
            continue
          if id(d) not in seen_dims:
            sizes[(in_name, axis)] = tf.compat.v1.placeholder(tf.int32, [None], name=f"{in_name}_size{axis}")
            seen_dims[id(d)] = (in_name, axis)
            d.dyn_size = sizes[(in_name, axis)]
          size_of[(in_name, axis)] = seen_dims[id(d)]
        extern_data[in_name] = rc.Tensor(in_name, tmpl.dims, tmpl.dtype, raw_tensor=ph, sparse_dim=tmpl.sparse_dim,
                                         feature_dim=tmpl.feature_dim)
    model = mod.get_model(epoch=gs.epoch, step=gs.step)
    flag = gs.train_flag if isinstance(train_flag, str) else bool(train_flag)
    jit = tf.xla.experimental.jit_scope() if xla else contextlib.nullcontext()
    try:
      with jit:
        ctx = rc.init_train_step_run_ctx(train_flag=flag, step=gs.step, epoch=gs.epoch)
        run_ctxs["train"] = ctx
        hook("train_ctx", ctx)
        mod.train_step(model=model, extern_data=extern_data)
        hook("train_step_done", ctx)
        losses = {}
        for loss_name, loss in ctx.losses.items():
          raw = loss.loss.get_raw()
          dyn_axes = {axis: d.get_dyn_size() for axis, d in enumerate(loss.loss.dims) if d.is_dynamic()}
          batch_axis = loss.loss.get_axis_from_dim(rc.batch_dim) if loss.loss.have_batch_axis() else -1
          losses[loss_name] = LossInfo(
              raw=raw, dyn_axes=dyn_axes, batch_axis=batch_axis, summed=loss.get_summed_loss().get_raw(),
              inv_norm=loss.get_inv_norm_factor().get_raw(), scaled=loss.get_scaled_reduced_loss().get_raw(),
              used_for_optimizer=loss.used_for_optimizer)
        report = rc.report_fetches(ctx.losses)
        total = ctx.total_loss().get_raw()
        tvars = tf.compat.v1.trainable_variables()
        grads = tf.gradients(total, tvars)
        dense = {v.op.name: tf.convert_to_tensor(g) for v, g in zip(tvars, grads) if g is not None}
        opt = tf.compat.v1.train.GradientDescentOptimizer(LEARNING_RATE)
        train_op = opt.apply_gradients([(g, v) for v, g in zip(tvars, grads) if g is not None],
                                       global_step=gs.step_var)
      fctx = rc.init_forward_step_run_ctx(step=gs.step, epoch=gs.epoch)
      run_ctxs["forward"] = fctx
      hook("forward_ctx", fctx)
      mod.forward_step(model=model, extern_data=extern_data)
      hook("forward_step_done", fctx)
      outputs = fctx.outputs.as_raw_tensor_dict() if len(fctx.outputs) else {}
      output_dims = {}
      for out_name, out in fctx.outputs.items():
        batch_axis = out.get_axis_from_dim(rc.batch_dim) if out.have_batch_axis() else -1
        output_dims[out_name] = (batch_axis, {a: size_key(out_name, a) for a, d in enumerate(out.dims)
                                              if d.is_dynamic()})
    finally:
      rc.reset_run_ctx()
    variables = tf.compat.v1.global_variables()
    saver = tf.compat.v1.train.Saver(var_list=variables, max_to_keep=None)
    init_op = tf.compat.v1.global_variables_initializer()
  if finalize:
    graph.finalize()
  return Built(name=name, graph=graph, template=template, inputs=inputs, sizes=sizes, size_of=size_of, gs=gs,
               train_flag=flag, losses=losses, report=report, total_loss=total, grads=dense, train_op=train_op,
               outputs=outputs, output_dims=output_dims, variables=variables, init_op=init_op, saver=saver,
               run_ctxs=run_ctxs, num_ops_built=len(graph.get_operations()))


@functools.lru_cache(maxsize=None)
def cached_build(name: str, train_flag: Union[str, bool] = rc_graph_state.TRAIN_FLAG_PLACEHOLDER,
                 xla: bool = False) -> Built:
  """:func:`build`, once per process and arguments (the graph is finalized; tests open own sessions)."""
  return build(name, train_flag=train_flag, xla=xla)


# --- data ---------------------------------------------------------------------------------------


def pad(template: rc.TensorDict, seqs: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
  """Zero-padded ``[B,...]`` arrays per input plus ``"<name>:size<axis>"`` ``[B]`` int32 per dynamic axis."""
  out = {}
  for name, tmpl in template.items():
    arrays = [np.asarray(seq[name]) for seq in seqs]
    out[name] = rc_graph_module.pad_arrays(arrays, rank=tmpl.batch_ndim - 1,
                                      dtype=tf.as_dtype(tmpl.dtype).as_numpy_dtype)
    for axis, d in enumerate(tmpl.dims):
      if d.is_dynamic():
        out[size_key(name, axis)] = np.array([a.shape[axis - 1] for a in arrays], np.int32)
  return out


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


def corrupt_padding(template: rc.TensorDict, padded: Mapping[str, np.ndarray], variant: int = 0
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
    out.extend([info.raw, info.summed, info.inv_norm, info.scaled])
  out.extend(built.grads.values())
  out.extend(built.outputs.values())
  return out
