"""The ``forward_step`` graph of a graph module, as it is exported and forwarded.

:func:`build_forward_graph` builds, in a fresh ``tf.Graph``:

- one placeholder per extern-data input ``[B,...]`` (batch and dynamic dims ``None``) named
  ``extern_data/<name>``, and one int32 placeholder ``[B]`` per dynamic dim named
  ``extern_data/<name>_size<axis>`` (set as ``dim.dyn_size``);
- the model (``get_model(epoch=..., step=...)`` with Python ints: the export is frozen at them);
- ``forward_step`` in a ``"forward_step"`` run context with the train flag a Python ``False``; the
  graph's symbolic train flag (:mod:`returnn_rc.graph_state`) is replaced by a constant ``False``,
  so nothing in the outputs depends on a flag a serving user could flip;
- ``output/<name>`` (identity of each marked output) and ``output/<name>_size<axis>`` (its sizes
  ``[B]``, int32, per dynamic axis).

The custom op ``FlattenWithSeqLenMask`` is replaced by its pure-TF fallback while building
(``returnn_rc.ops.fallback_scope()``), and every op type of the graph is checked to be core TensorFlow, so
plain TensorFlow can load the graph.

Signature keys: the input / output name, and ``"<name>:size<axis>"`` for the sizes of each dynamic
axis (the naming of :meth:`rc.TensorDict.as_raw_tensor_dict`). Only inputs the outputs depend on are
signature inputs. A dynamic dim shared by two inputs (e.g. ``data`` and ``classes`` on one time dim)
has one size key, named after the first input that has it.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set

import numpy as np
import tensorflow as tf

from returnn_rc import checkpoint_compat
from returnn_rc import graph_module as _graph_module
from returnn_rc import graph_state as _graph_state
from returnn_rc.checkpoint_compat import resolve_checkpoint
from returnn_rc.export import dims as export_dims
from returnn_rc.run_ctx import init_forward_step_run_ctx
from returnn_rc.tensor import TensorDict

#: Valid input / output names (signature keys; ``:`` is reserved for the size keys).
VALID_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
VALID_NAME_TEXT = "a letter or '_', then letters, digits, '_', '.' or '-' (no spaces, '/' or ':')"
#: The custom ops of returnn_rc.ops; the exported graph must not contain them.
CUSTOM_OP_TYPES = ("FlattenWithSeqLenMask", "UnflattenWithSeqLenMask")
_PLACEHOLDER_TYPES = ("Placeholder", "PlaceholderV2", "PlaceholderWithDefault")


def check_name(name: Any, what: str) -> None:
  """``ValueError`` unless ``name`` is a valid signature key (see :data:`VALID_NAME_TEXT`)."""
  if not isinstance(name, str) or not VALID_NAME.match(name):
    raise ValueError(f"{what} name {name!r} is not a valid signature key: expected {VALID_NAME_TEXT}")


@dataclasses.dataclass
class ForwardGraph:
  """A built forward graph. Feed :attr:`inputs` (signature key → placeholder), fetch :attr:`fetches`.

  Attributes:
    graph: the ``tf.Graph``.
    extern_data: the extern data with placeholders as raw tensors (all inputs, also unused ones).
    outputs: the marked outputs (``rc.Tensor``).
    inputs: signature key → placeholder: ``"<name>"`` ``[B,...]`` and ``"<name>:size<axis>"`` ``[B]`` int32.
    fetches: signature key → tensor: ``"<name>"`` and ``"<name>:size<axis>"`` ``[B]`` int32.
    description: the dims description (see :mod:`returnn_rc.export_dims`), without file metadata.
    epoch, step: what ``get_model`` and the run context got.
  """

  graph: tf.Graph
  extern_data: TensorDict
  outputs: TensorDict
  inputs: Dict[str, tf.Tensor]
  fetches: Dict[str, tf.Tensor]
  description: Dict[str, Any]
  epoch: int
  step: int

  def variables(self) -> List[tf.Variable]:
    return self.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)

  def run(self, session: tf.compat.v1.Session, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """One ``Session.run``: signature key → array in, signature key → array out."""
    unknown = sorted(set(feed) - set(self.inputs))
    missing = sorted(set(self.inputs) - set(feed))
    if unknown or missing:
      raise ValueError(f"feed keys mismatch: missing {missing}, unknown {unknown}; expected {sorted(self.inputs)}")
    return session.run(self.fetches, feed_dict={self.inputs[k]: v for k, v in feed.items()})


def ops_fallback():
  """Builds the pure-TF fallback of ``returnn_rc.ops`` meanwhile (in this thread only)."""
  from returnn_rc import ops  # pylint: disable=import-outside-toplevel

  return ops.fallback_scope()


def _module_name(graph_module: Any) -> str:
  return getattr(graph_module, "__name__", type(graph_module).__name__)


def upstream_ops(tensors: Iterable[tf.Tensor]) -> Set[tf.Operation]:
  """All ops the given tensors depend on (data and control inputs), the tensors' own ops included."""
  todo = [t.op for t in tensors]
  seen: Set[tf.Operation] = set()
  while todo:
    op = todo.pop()
    if op in seen:
      continue
    seen.add(op)
    todo.extend(t.op for t in op.inputs)
    todo.extend(op.control_inputs)
  return seen


def non_core_op_types(graph_def: tf.compat.v1.GraphDef) -> Dict[str, str]:
  """Op type → a node name, for each node (also in library functions) whose op is not core TF."""
  functions = {f.signature.name for f in graph_def.library.function}
  found: Dict[str, str] = {}
  nodes = [(n.name, n.op) for n in graph_def.node]
  for f in graph_def.library.function:
    nodes += [(f"{f.signature.name}/{n.name}", n.op) for n in f.node_def]
  for node_name, op_type in nodes:
    if op_type in CUSTOM_OP_TYPES or not (
      op_type.startswith("_") or op_type in functions or hasattr(tf.raw_ops, op_type)
    ):
      found.setdefault(op_type, node_name)
  return found


def _check_graph(
  graph: tf.Graph, fetches: Mapping[str, tf.Tensor], inputs: Mapping[str, tf.Tensor], module_name: str
) -> None:
  """The outputs may only depend on signature-input placeholders; all op types must be core TF."""
  allowed = {t.op for t in inputs.values()}
  for key, tensor in fetches.items():
    for op in upstream_ops([tensor]):
      if op.type in _PLACEHOLDER_TYPES and op not in allowed:
        raise RuntimeError(
          f"{module_name}: output {key!r} depends on placeholder {op.name!r} ({op.type}), which is not an "
          f"extern-data input; a served model cannot feed it (or a serving user could flip it). Use "
          f"the run context (rc.get_run_ctx().train_flag, .step, .epoch) instead"
        )
  bad = non_core_op_types(graph.as_graph_def())
  if bad:
    listed = ", ".join(f"{t} (node {n!r})" for t, n in sorted(bad.items()))
    raise RuntimeError(
      f"{module_name}: the forward graph holds op types outside core TensorFlow: {listed}; plain "
      f"TensorFlow could not load it. For returnn_rc.ops, the pure-TF fallback "
      f"(returnn_rc.ops.fallback_scope()) must be honoured"
    )


def check_epoch_step(epoch: Any, step: Any) -> None:
  """``TypeError`` / ``ValueError`` unless ``epoch`` is None or an int >= 1 and ``step`` None or an int >= 0
  (both below 2**63: they are int64 in the graph)."""
  for what, value, minimum in (("epoch", epoch, 1), ("step", step, 0)):
    if value is None:
      continue
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
      raise TypeError(f"{what} must be None or an int, got {value!r}")
    if not minimum <= value < 2**63:
      raise ValueError(f"{what} must be an int in [{minimum}, 2**63), got {value}")


def build_forward_graph(graph_module: Any, *, epoch: int = 1, step: int = 0) -> ForwardGraph:
  """Builds ``forward_step`` of ``graph_module`` (see ``graphs/__init__.py``) in a fresh graph.

  Raises ``TypeError`` / ``ValueError`` for a bad ``epoch`` (int >= 1) or ``step`` (int >= 0);
  ``ValueError`` if no output is marked, a name is not a valid signature key, or an output does not
  match ``model_outputs_template``; ``RuntimeError`` if an expected output is missing or the outputs
  depend on a non-input placeholder or a non-core op.
  """
  check_epoch_step(epoch, step)
  _graph_module.check_graph_module(graph_module)
  name = _module_name(graph_module)
  graph = tf.Graph()
  with graph.as_default(), ops_fallback():
    extern_data = _graph_module.extern_data_template(graph_module)
    for key in extern_data:
      check_name(key, f"{name}: extern-data input")
    placeholders = _graph_module.make_placeholders(extern_data, check_shape=True)
    _add_size_checks(extern_data, placeholders)
    state = _graph_state.get_graph_state(graph)
    # Forwarding is never training: freeze the graph's symbolic train flag to a constant, so code that
    # reads it directly builds no dependency on the placeholder.
    with tf.name_scope("returnn_rc_state/"):
      state.train_flag = tf.constant(False, name="train_flag_frozen")
    model = graph_module.get_model(epoch=epoch, step=step)
    expected = _graph_module.outputs_template(graph_module, extern_data)
    with init_forward_step_run_ctx(expected_outputs=expected, step=step, epoch=epoch) as ctx:
      graph_module.forward_step(model=model, extern_data=extern_data)
    ctx.check_outputs_complete()
    outputs = ctx.outputs
    if not len(outputs):
      raise ValueError(
        f"{name}.forward_step marked no output; call rc.get_run_ctx().mark_as_output(...) "
        f"(or mark_as_default_output) there"
      )
    fetches = _output_fetches(outputs, name)
  inputs, size_keys = _signature_inputs(extern_data, placeholders, fetches)
  _check_graph(graph, fetches, inputs, name)
  dim_ids = export_dims.DimIds()
  description = {
    "inputs": {
      k: export_dims.describe_tensor(extern_data[k], dim_ids=dim_ids, size_keys=size_keys)
      for k in extern_data
      if k in inputs
    },
    "outputs": {k: export_dims.describe_tensor(t, dim_ids=dim_ids, size_keys={}) for k, t in outputs.items()},
  }
  return ForwardGraph(
    graph=graph,
    extern_data=extern_data,
    outputs=outputs,
    inputs=inputs,
    fetches=fetches,
    description=description,
    epoch=epoch,
    step=step,
  )


def _output_fetches(outputs: TensorDict, module_name: str) -> Dict[str, tf.Tensor]:
  fetches: Dict[str, tf.Tensor] = {}
  for key, tensor in outputs.items():
    check_name(key, f"{module_name}: output")
    with tf.name_scope("output/"):
      fetches[key] = tf.identity(tensor.get_raw(), name=key)
      for axis, d in enumerate(tensor.dims):
        if not d.is_dynamic():
          continue
        if d.dyn_size is None:
          raise ValueError(
            f"{module_name}: output {key!r} has dynamic dim {d!r} at axis {axis} without sizes; "
            f"set dim.dyn_size ([B] ints) where the dim is made"
          )
        if not tensor.have_batch_axis():
          raise ValueError(
            f"{module_name}: output {key!r} has dynamic dim {d!r} but no batch dim; its sizes "
            f"[B] would not index anything. Dims: {list(tensor.dims)}"
          )
        fetches[export_dims.size_key(key, axis)] = tf.cast(d.dyn_size, tf.int32, name=f"{key}_size{axis}")
  return fetches


def _size_keys(extern_data: TensorDict) -> Dict[int, str]:
  """``id(dim)`` → the key of its sizes: ``"<name>:size<axis>"`` of the first input that has the dim (as
  :func:`returnn_rc.graph_module.make_placeholders` names its placeholder)."""
  keys: Dict[int, str] = {}
  for name, t in extern_data.items():
    for axis, d in enumerate(t.dims):
      if d.is_dynamic():
        keys.setdefault(id(d), export_dims.size_key(name, axis))
  return keys


def _add_size_checks(extern_data: TensorDict, placeholders: Mapping[str, tf.Tensor]) -> None:
  """Run-time checks of the size inputs, built into the inputs the model reads (so they run first).

  Each size input ``"<name>:size<axis>"`` must have rank 1 and sizes >= 0 (checked on the sizes the
  model reads); and for each input ``x`` with that dim, one size per sequence of ``x`` (its batch
  size) and sizes <= the padded length of ``x`` at that axis (checked on ``x`` as the model reads
  it). A violation is a ``tf.errors.InvalidArgumentError`` naming the size input and ``x``, also through
  a SavedModel signature; the checks are core TF ops (``Assert``), so plain TF serves the export.
  """
  keys = _size_keys(extern_data)
  done = set()
  for t in extern_data.values():
    for d in t.dynamic_dims:
      if id(d) in done:
        continue
      done.add(id(d))
      key = keys[id(d)]
      scope = key.replace(":", "_")
      # A TF2 signature call does not enforce the placeholder's shape [None]: ensure_shape does.
      sizes = tf.ensure_shape(placeholders[key], [None], name=f"extern_data/{scope}_rank1")
      non_negative = tf.debugging.assert_non_negative(
        sizes, message=f"size input {key} (dim {d.name}) must be >= 0", name=f"extern_data/{scope}_check"
      )
      with tf.control_dependencies([non_negative]):
        d.dyn_size = tf.identity(sizes, name=f"extern_data/{scope}_checked")
  for name, t in extern_data.items():
    raw = t.raw_tensor
    shape = tf.shape(raw, name=f"extern_data/{name}_shape")
    checks = []
    for axis, d in enumerate(t.dims):
      if not d.is_dynamic():
        continue
      key = keys[id(d)]
      checks.append(
        tf.debugging.assert_equal(
          tf.size(d.dyn_size),
          shape[0],
          message=f"size input {key} must have one size per sequence of input {name} (its batch size)",
        )
      )
      checks.append(
        tf.debugging.assert_less_equal(
          d.dyn_size,
          shape[axis],
          message=f"size input {key} must be <= the padded length of input {name} at axis {axis}",
        )
      )
    if checks:
      with tf.control_dependencies(checks):
        t.raw_tensor = tf.identity(raw, name=f"extern_data/{name}_sizes_checked")


def _signature_inputs(extern_data: TensorDict, placeholders: Mapping[str, tf.Tensor], fetches: Mapping[str, tf.Tensor]):
  """Signature key → placeholder for the inputs the fetches depend on, and ``id(dim)`` → size key.

  An input is a signature input if its data is used, or if the sizes of one of its dims are used
  and no other used input has that dim. A dim's size key is that of the first input that has it.
  """
  used = upstream_ops(fetches.values())
  keys = _size_keys(extern_data)
  chosen = [k for k in extern_data if placeholders[k].op in used]
  dims_of_chosen = {id(d) for k in chosen for d in extern_data[k].dynamic_dims}
  for key, t in extern_data.items():
    for d in t.dynamic_dims:
      if key not in chosen and id(d) not in dims_of_chosen and placeholders[keys[id(d)]].op in used:
        chosen.append(key)
        dims_of_chosen.update(id(x) for x in t.dynamic_dims)
  inputs: Dict[str, tf.Tensor] = {}
  size_keys: Dict[int, str] = {}
  for key in [k for k in extern_data if k in chosen]:
    inputs[key] = placeholders[key]
    for d in extern_data[key].dynamic_dims:
      if id(d) not in size_keys:
        size_keys[id(d)] = keys[id(d)]
        inputs[keys[id(d)]] = placeholders[keys[id(d)]]
  return inputs, size_keys


# --- variables --------------------------------------------------------------------------------------


def read_step_epoch(checkpoint_path: str) -> Dict[str, int]:
  """``{"step": ..., "epoch": ...}`` as saved in the checkpoint's graph-state variables (0 / 1 if absent).

  ``checkpoint_path``: a prefix or directory (:func:`resolve_checkpoint`; ``ValueError`` if there is none).
  """
  reader = checkpoint_compat.open_reader(resolve_checkpoint(checkpoint_path))
  with tf.Graph().as_default() as g:
    state = _graph_state.get_graph_state(g)
    names = {"step": state.step_var.op.name, "epoch": state.epoch_var.op.name}
  out = {"step": 0, "epoch": 1}
  for what, var_name in names.items():
    if reader.has_tensor(var_name):
      out[what] = int(reader.get_tensor(var_name))
  return out


def restore_variables(session: tf.compat.v1.Session, fg: ForwardGraph, checkpoint_path: str) -> str:
  """Restores the variables of ``fg`` from ``checkpoint_path`` (a prefix or directory); returns the prefix.

  The checkpoint is checked first with :func:`returnn_rc.checkpoint_compat.check_checkpoint` (the engine's
  check too): ``ValueError`` naming each variable the checkpoint lacks or holds with another shape or
  dtype. It may hold more variables (optimizer slots, learning-rate control); the graph-state step /
  epoch variables may be absent (they are then initialised).
  """
  path = resolve_checkpoint(checkpoint_path)
  state = _graph_state.get_graph_state(fg.graph)
  optional = {state.step_var.op.name, state.epoch_var.op.name}
  variables = fg.variables()
  restore = checkpoint_compat.restorable_variables(path, variables, what="the forward graph", optional=optional)
  initialise = [v for v in variables if v.op.name not in restore]
  with fg.graph.as_default():
    if initialise:
      session.run(tf.compat.v1.variables_initializer(initialise))
    if restore:
      tf.compat.v1.train.Saver(var_list=restore).restore(session, path)
  return path


def initialize_variables(session: tf.compat.v1.Session, fg: ForwardGraph) -> None:
  """Fresh initialisation of all variables (random weights: for tests and smoke runs)."""
  with fg.graph.as_default():
    session.run(tf.compat.v1.global_variables_initializer())


def make_session(fg: ForwardGraph, checkpoint_path: Optional[str]) -> tf.compat.v1.Session:
  """A session on ``fg.graph`` with the variables restored (or freshly initialised for ``None``)."""
  session = tf.compat.v1.Session(graph=fg.graph)
  try:
    if checkpoint_path is None:
      initialize_variables(session, fg)
    else:
      restore_variables(session, fg, checkpoint_path)
  except BaseException:
    session.close()
    raise
  return session
