"""Rebuild a loss's row-wise producer chain on packed frames.

Given a ``[B,T,...]`` tensor ``root`` (the raw loss) and its ``seq_lens`` ``[B]``, :func:`pack_upstream`
returns the same values packed to ``[N,...]`` (``N = sum(seq_lens)``, batch-major), computed so that
the row-wise ops that produced ``root`` never see a padded frame:

1. *Plan*: walk the graph backwards from ``root`` through ops that :mod:`returnn_rc.packing.rules`
   knows to be row-wise. The walk ends at the *frontier*: tensors made by an op that mixes frames or
   is unknown (conv, RNN, slicing or padding on time, placeholders, ops inside while/cond bodies, ...).
2. *Cut*: a tensor of the chain that is needed unpacked anyway (another consumer that is not part of
   a loss's chain, an input of the frontier, a reused weight, ...) becomes frontier too, so nothing is
   computed twice; so does an elementwise or data-movement op whose inputs would all be packed
   separately (packing its one output is cheaper). Repeated until stable.
3. *Build*: frontier tensors are packed with ``FlattenWithSeqLenMask`` (targets and labels alike),
   broadcast operands with a frame axis of size 1 are gathered frame by frame, the chain's ops are
   rebuilt on the packed tensors (new ops; nothing existing is changed: every other consumer keeps
   the unpacked tensor), and random ops (dropout masks) are re-created with the same seeds on a
   ``[B,T,...]`` shape built from the frame dims, then packed: the very same mask as unpacked.

Packed versions are cached per graph (keyed by tensor, layout and ``seq_lens``), so a producer
shared by several losses (``ce`` and ``fer`` from the same logits) is packed once. A
:class:`PackingReport` per root says what was rebuilt and where the rewrite ended (:func:`report`).

Frame layout is inferred, not proven: a tensor reached from the loss through row-wise ops is taken
to be on the loss's frames, and a ``reshape`` between ``[B,T,F]`` and ``[B*T,F]`` is taken to merge /
split the (batch, time) axes batch-major (as ``dense`` / ``tensordot`` / ``reshape([-1, F])`` do). At run
time the flatten op checks each frontier's batch size and lengths, and (outside XLA) one assert checks
that all frontiers and broadcast operands have the same ``[B,T]``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Set, Tuple

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from returnn_rc.packing import rules, shape_expr
from returnn_rc.packing.rules import BCAST, CLONE, FRAME, IDENTITY, PACK, RECREATE, REUSE, ROWS

_STORE_ATTR = "_returnn_rc_packing_store"

# dtypes FlattenWithSeqLenMask takes, and what others are packed as (exact round trip).
_DIRECT = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)
_VIA = {
  tf.bool: tf.int32,
  tf.int8: tf.int32,
  tf.int16: tf.int32,
  tf.uint8: tf.int32,
  tf.uint16: tf.int32,
  tf.uint32: tf.int64,
  tf.uint64: tf.int64,
}

_FRONTIER, _CACHED, _FAIL = "frontier", "cached", "fail"


@dataclasses.dataclass
class PackingReport:
  """What the rewrite did for one root tensor (a loss).

  Attributes:
    root: name of the root tensor (the raw ``[B,T,...]`` loss).
    rewritten: whether any op was rebuilt on packed frames (else the values are packed at the end).
    packed_ops: names of the original ops rebuilt on packed frames by this rewrite (reshapes between
      ``[B,T,F]`` and ``[B*T,F]`` included: on packed frames they are identities).
    reused: tensors whose packed version an earlier rewrite had made (shared producers).
    frontier: tensor name -> why the rewrite ended there (these are packed with the flatten op).
    broadcast: broadcast operands gathered frame by frame.
    reason: why nothing was rewritten (empty if rewritten).
  """

  root: str
  rewritten: bool = False
  packed_ops: List[str] = dataclasses.field(default_factory=list)
  reused: List[str] = dataclasses.field(default_factory=list)
  frontier: Dict[str, str] = dataclasses.field(default_factory=dict)
  broadcast: List[str] = dataclasses.field(default_factory=list)
  reason: str = ""


class _Store:
  """Per-graph state: packed tensors, frame indices, reports."""

  def __init__(self):
    self.packed: Dict[Tuple[str, str, str], tf.Tensor] = {}
    self.frame_index: Dict[str, Tuple[tf.Tensor, tf.Tensor]] = {}
    self.reports: Dict[str, PackingReport] = {}

  def lookup(self, t: tf.Tensor, layout: str, seq_lens: tf.Tensor) -> Optional[tf.Tensor]:
    return self.packed.get((t.name, layout, seq_lens.name))

  def put(self, t: tf.Tensor, layout: str, seq_lens: tf.Tensor, packed: tf.Tensor) -> None:
    self.packed[(t.name, layout, seq_lens.name)] = packed


def store(graph: tf.Graph) -> _Store:
  s = getattr(graph, _STORE_ATTR, None)
  if s is None:
    s = _Store()
    setattr(graph, _STORE_ATTR, s)
  return s


def report(root_name: str, graph: Optional[tf.Graph] = None) -> Optional[PackingReport]:
  """The report of the rewrite of the root tensor called ``root_name``, or None if there was none."""
  return store(graph or tf.compat.v1.get_default_graph()).reports.get(root_name)


# --- plan ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Node:
  tensor: tf.Tensor
  layout: str
  kind: str  # _FRONTIER, _CACHED, _FAIL, rules.CLONE / IDENTITY / RECREATE
  spec: Optional[rules.Spec] = None
  reason: str = ""


class _Abort(Exception):
  """The chain cannot be planned consistently (e.g. one tensor on two layouts)."""


def _pack_dtype(dtype: tf.DType) -> Optional[tf.DType]:
  if dtype in _DIRECT:
    return dtype
  return _VIA.get(dtype)


class _Planner:
  def __init__(self, st: _Store, seq_lens: tf.Tensor, forced: Dict[str, str], ev: shape_expr.Evaluator):
    self.store, self.seq_lens, self.forced, self.ev = st, seq_lens, forced, ev
    self.nodes: Dict[str, _Node] = {}

  def visit(self, t: tf.Tensor, layout: str) -> _Node:
    node = self.nodes.get(t.name)
    if node is not None:
      if node.layout != layout:
        raise _Abort(f"{t.name} is reached as {node.layout} and as {layout}")
      return node
    node = self._plan(t, layout)
    self.nodes[t.name] = node
    return node

  def _frontier(self, t: tf.Tensor, layout: str, reason: str) -> _Node:
    if _pack_dtype(t.dtype) is None:
      return _Node(t, layout, _FAIL, reason=f"dtype {t.dtype.name} cannot be packed")
    return _Node(t, layout, _FRONTIER, reason=reason)

  def _plan(self, t: tf.Tensor, layout: str) -> _Node:
    if self.store.lookup(t, layout, self.seq_lens) is not None:
      return _Node(t, layout, _CACHED)
    try:
      rules.check_layout(t, layout)
    except rules.NotRowWise as exc:
      return _Node(t, layout, _FAIL, reason=str(exc))
    if t.name in self.forced:
      return self._frontier(t, layout, self.forced[t.name])
    try:
      spec = rules.spec_for(t.op, t.value_index, layout, self.ev)
    except rules.NotRowWise as exc:
      return self._frontier(t, layout, str(exc))
    for i in _packed_inputs(spec):
      if self.visit(t.op.inputs[i], spec.operands[i].layout).kind == _FAIL:
        return self._frontier(t, layout, f"input {t.op.inputs[i].name} cannot be packed")
    return _Node(t, layout, spec.kind, spec)

  def reachable(self, root: tf.Tensor) -> List[_Node]:
    """Nodes used to build ``root``'s packed version, in dependency order (inputs first)."""
    out: List[_Node] = []
    seen: Set[str] = set()

    def walk(name: str):
      if name in seen:
        return
      seen.add(name)
      node = self.nodes[name]
      if node.spec is not None:
        for i in _packed_inputs(node.spec):
          walk(node.tensor.op.inputs[i].name)
      out.append(node)

    walk(root.name)
    return out


def _packed_inputs(spec: rules.Spec) -> List[int]:
  if spec.kind == IDENTITY:
    return [spec.identity_input]
  return [i for i, o in enumerate(spec.operands) if o.kind == PACK]


def _reused_inputs(node: _Node) -> List[tf.Tensor]:
  """Original tensors the rebuilt op reads as they are (weights, broadcast operands, seeds)."""
  spec = node.spec
  if spec is None or spec.kind == IDENTITY:
    return []
  op = node.tensor.op
  skip = set(spec.const_inputs) | ({0} if spec.kind == RECREATE else set())
  return [op.inputs[i] for i, o in enumerate(spec.operands) if o.kind in (REUSE, BCAST) and i not in skip]


def _live_ops(graph: tf.Graph, excluded_sinks: Set[str], needed: Iterable[tf.Operation]) -> Set[str]:
  """Names of the ops that run anyway: ancestors of every sink (an op nobody consumes) other than
  ``excluded_sinks`` (the losses being packed), and of ``needed``."""
  todo = [
    op
    for op in graph.get_operations()
    if op.name not in excluded_sinks
    and not op._control_outputs  # pylint: disable=protected-access
    and not any(out.consumers() for out in op.outputs)
  ]
  todo.extend(needed)
  live: Set[str] = set()
  while todo:
    op = todo.pop()
    if op.name in live:
      continue
    live.add(op.name)
    todo.extend(x.op for x in op.inputs)
    todo.extend(op.control_inputs)
  return live


@dataclasses.dataclass
class _Plan:
  planner: _Planner
  order: List[_Node]
  anchor: Optional[Tuple[tf.Tensor, int, str]]  # (tensor, axis of T, layout of the tensor) or None


def _make_plan(root: tf.Tensor, seq_lens: tf.Tensor, excluded_sinks: Set[str], st: _Store) -> Optional[_Plan]:
  """Plans the rewrite (plan + cut until stable); None if it cannot be planned."""
  ev = shape_expr.Evaluator()
  forced: Dict[str, str] = {}
  for _ in range(1000):
    planner = _Planner(st, seq_lens, forced, ev)
    try:
      planner.visit(root, FRAME)
    except (_Abort, RecursionError):
      return None
    order = planner.reachable(root)
    region = [n for n in order if n.kind in (CLONE, IDENTITY, RECREATE)]
    needed = [n.tensor.op for n in order if n.kind == _FRONTIER]
    for n in region:
      needed.extend(x.op for x in _reused_inputs(n))
      if n.kind != IDENTITY:
        needed.extend(n.tensor.op.control_inputs)
    live = _live_ops(root.graph, excluded_sinks, needed)
    bad = {n.tensor.name: "needed unpacked elsewhere" for n in region if n.tensor.op.name in live}
    bad.update(
      dict.fromkeys(
        _not_worth_it(planner, region), "elementwise op of inputs packed separately: packing its output is cheaper"
      )
    )
    anchor = _anchor(order)
    if anchor is None:  # nothing to read T from: re-created random ops cannot be built
      bad.update({n.tensor.name: "no tensor to read T from" for n in region if n.kind == RECREATE})
    if not bad:
      return _Plan(planner, order, anchor)
    forced.update(bad)
  return None


def _not_worth_it(planner: _Planner, region: List[_Node]) -> Set[str]:
  """Elementwise / data-movement ops whose inputs would all be packed separately (two or more frontier
  tensors or broadcast operands, e.g. ``where(sequence_mask, ids, 0)`` or the concat of conv taps):
  packing their one output is cheaper (fewer copies forward and backward)."""
  out = set()
  for n in region:
    if n.kind != CLONE or n.tensor.op.type not in rules.CHEAP:
      continue
    kids = [planner.nodes[n.tensor.op.inputs[i].name].kind for i in _packed_inputs(n.spec)]
    leaves = kids.count(_FRONTIER) + sum(o.kind == BCAST for o in n.spec.operands)
    if leaves >= 2 and all(k == _FRONTIER for k in kids):
      out.add(n.tensor.name)
  return out


def _anchor(order: List[_Node]) -> Optional[Tuple[tf.Tensor, int, str]]:
  """A tensor computed anyway whose shape gives T: a frontier, or a time-varying broadcast operand."""
  for n in order:
    if n.kind == _FRONTIER and n.layout == FRAME:
      return n.tensor, 1, FRAME
  for n in order:
    if n.kind == CLONE:
      for i, o in enumerate(n.spec.operands):
        if o.kind == BCAST and o.time_varies:
          return n.tensor.op.inputs[i], o.time_axis, FRAME
  for n in order:
    if n.kind == _FRONTIER and n.layout == ROWS:
      return n.tensor, 0, ROWS
  return None


# --- build --------------------------------------------------------------------------------------


class _Builder:
  def __init__(self, plan: _Plan, seq_lens: tf.Tensor, st: _Store, checks: bool):
    self.plan, self.seq_lens, self.store = plan, seq_lens, st
    self.checks = checks
    self.built: Dict[str, tf.Tensor] = {}
    self.batch = tf.size(seq_lens, out_type=tf.int32)
    self._time: Optional[tf.Tensor] = None
    self.expect: List[Tuple[tf.Tensor, str]] = []  # (actual run-time dim, "B" or "T")
    self.flattened_frames = False  # a [B,T,...] tensor went through the flatten op (it checks the lens)

  @property
  def time(self) -> tf.Tensor:
    """T of the frames (int32 scalar), read from the plan's anchor."""
    if self._time is None:
      t, axis, layout = self.plan.anchor
      dim = tf.shape(t, out_type=tf.int32)[axis]
      self._time = dim if layout == FRAME else dim // tf.maximum(self.batch, 1)
    return self._time

  def frame_index(self) -> Tuple[tf.Tensor, tf.Tensor]:
    """(b, t) of each packed frame, ``[N]`` int32 each (cached per graph and ``seq_lens``)."""
    key = self.seq_lens.name
    if key not in self.store.frame_index:
      with tf.name_scope("frame_index"):
        lens = tf.cast(self.seq_lens, tf.int32)
        b_idx = tf.repeat(tf.range(tf.size(lens)), lens)
        starts = tf.cumsum(lens, exclusive=True)
        t_idx = tf.range(tf.reduce_sum(lens)) - tf.gather(starts, b_idx)
      self.store.frame_index[key] = (b_idx, t_idx)
    return self.store.frame_index[key]

  def flatten(self, t: tf.Tensor, layout: str) -> tf.Tensor:
    from returnn_rc import ops  # pylint: disable=import-outside-toplevel

    via = _pack_dtype(t.dtype)
    x = t if via == t.dtype else tf.cast(t, via)
    if layout == ROWS:
      rows = tf.shape(x, out_type=tf.int32)[0]
      x = tf.reshape(
        x, tf.concat([tf.stack([self.batch, rows // tf.maximum(self.batch, 1)]), tf.shape(x, out_type=tf.int32)[1:]], 0)
      )
    else:
      self.expect.append((tf.shape(x, out_type=tf.int32)[1], "T"))
      self.flattened_frames = True
    packed = ops.flatten_with_seq_len_mask(x, self.seq_lens, batch_dim_axis=0, time_dim_axis=1)
    return packed if via == t.dtype else tf.cast(packed, t.dtype)

  def gather_broadcast(self, x: tf.Tensor, o: rules.Operand) -> tf.Tensor:
    """A broadcast operand (a frame axis of size 1) frame by frame: ``[N, rest]`` or ``[1, rest]``."""
    b_idx, t_idx = self.frame_index()
    shape = tf.shape(x, out_type=tf.int32)
    if o.batch_axis is not None:  # rank r: [B|1, T|1, rest]
      if o.batch_varies:
        self.expect.append((shape[o.batch_axis], "B"))
        return tf.gather(tf.squeeze(x, [o.time_axis]), b_idx)
      if o.time_varies:
        self.expect.append((shape[o.time_axis], "T"))
        return tf.gather(tf.squeeze(x, [o.batch_axis]), t_idx)
      return tf.squeeze(x, [o.batch_axis])
    self.expect.append((shape[o.time_axis], "T"))
    return tf.gather(x, t_idx)  # rank r-1: [T, rest]

  def build(self, node: _Node) -> tf.Tensor:
    t, layout = node.tensor, node.layout
    if t.name in self.built:
      return self.built[t.name]
    out = self.store.lookup(t, layout, self.seq_lens)
    if out is None:
      out = self._build(node)
      self.store.put(t, layout, self.seq_lens, out)
    self.built[t.name] = out
    return out

  def _build(self, node: _Node) -> tf.Tensor:
    t, layout, spec = node.tensor, node.layout, node.spec
    nodes = self.plan.planner.nodes
    if node.kind == _FRONTIER:
      return self.flatten(t, layout)
    op = t.op
    if spec.kind == IDENTITY:
      return self.build(nodes[op.inputs[spec.identity_input].name])
    inputs = []
    for i, (x, o) in enumerate(zip(op.inputs, spec.operands)):
      if i in spec.const_inputs:
        inputs.append(tf.constant(spec.const_inputs[i], dtype=x.dtype))
      elif o.kind == PACK:
        inputs.append(self.build(nodes[x.name]))
      elif o.kind == BCAST:
        inputs.append(self.gather_broadcast(x, o))
      else:
        inputs.append(x)
    if spec.kind == RECREATE:
      dims = [self.batch, self.time] + [tf.constant(d, tf.int32) for d in spec.shape_rest]
      inputs[0] = tf.cast(tf.stack(dims), op.inputs[0].dtype)
    with _like(op):
      new_op = rules.clone_op(op, inputs, spec.attrs)
    out = new_op.outputs[t.value_index]
    return self.flatten(out, FRAME) if spec.kind == RECREATE else out

  def consistency_check(self) -> Optional[tf.Operation]:
    """One assert: every frontier / broadcast operand has the frames' [B,T] (and lens <= T)."""
    if not self.checks:
      return None
    checks = []
    if self.expect:
      actual = tf.stack([d for d, _ in self.expect])
      expected = tf.stack([self.batch if k == "B" else self.time for _, k in self.expect])
      checks.append(
        tf.debugging.assert_equal(
          actual, expected, message="packing: tensors of one loss's chain have different [B,T] frame dims"
        )
      )
    if not self.flattened_frames and self.plan.anchor is not None:
      lens = tf.cast(self.seq_lens, tf.int32)
      checks.append(tf.debugging.assert_less_equal(lens, self.time, message="seq_lens larger than T"))
      checks.append(tf.debugging.assert_non_negative(lens, message="seq_lens negative"))
    return tf.group(checks) if checks else None


class _like:  # pylint: disable=invalid-name
  """Context of the rebuilt op: the original's device, colocation group and control inputs."""

  def __init__(self, op: tf.Operation):
    self.op = op
    self.stack: List = []

  def __enter__(self):
    op = self.op
    if op.device:
      self.stack.append(tf.device(op.device))
    if any(g != f"loc:@{op.name}".encode() for g in op.colocation_groups()):
      self.stack.append(tf_ops.colocate_with(op))
    if op.control_inputs:
      self.stack.append(tf.control_dependencies(op.control_inputs))
    for ctx in self.stack:
      ctx.__enter__()
    return self

  def __exit__(self, *exc):
    for ctx in reversed(self.stack):
      ctx.__exit__(*exc)
    return False


# --- entry point --------------------------------------------------------------------------------


def pack_upstream(
  root: tf.Tensor, seq_lens: tf.Tensor, *, excluded_sinks: Iterable[str] = (), checks: bool = True
) -> Tuple[Optional[tf.Tensor], PackingReport]:
  """``root`` ``[B,T,...]`` packed to ``[N,...]`` with its row-wise producers rebuilt on packed frames.

  Args:
    root: ``[B,T,...]`` (batch axis 0, time axis 1), e.g. a frame-wise loss.
    seq_lens: ``[B]`` int32/int64, each in ``[0, T]``.
    excluded_sinks: names of ops whose (unconsumed) outputs will not be computed unpacked, e.g. the
      raw tensors of the other losses being packed; ``root``'s op is always one.
    checks: add the run-time frame-consistency assert (not inside XLA).
  Returns:
    (packed ``[N,...]`` or None when no op upstream of ``root`` can be rebuilt (the caller packs
    ``root`` itself then), the report).
  """
  rep = PackingReport(root=root.name)
  st = store(root.graph)
  st.reports[root.name] = rep
  excluded = set(excluded_sinks) | {root.op.name}
  cached = st.lookup(root, FRAME, seq_lens)
  if cached is not None:
    rep.rewritten, rep.reused = True, [root.name]
    return cached, rep
  plan = _make_plan(root, seq_lens, excluded, st)
  if plan is None:
    rep.reason = "the chain could not be planned (inconsistent frame layout)"
    return None, rep
  root_node = plan.planner.nodes[root.name]
  if root_node.kind not in (CLONE, IDENTITY, RECREATE):
    rep.reason = f"no op upstream is row-wise: {root_node.reason}"
    return None, rep
  builder = _Builder(plan, seq_lens, st, checks)
  with tf.name_scope("packed_frames"):
    out = builder.build(root_node)
    check = builder.consistency_check()
    if check is not None:
      with tf.control_dependencies([check]):
        out = tf.identity(out)
  for n in plan.order:
    if n.kind == _CACHED:
      rep.reused.append(n.tensor.name)
    elif n.kind == _FRONTIER:
      rep.frontier[n.tensor.name] = n.reason
    elif n.kind in (CLONE, IDENTITY, RECREATE):
      rep.packed_ops.append(n.tensor.op.name)
      rep.broadcast += [n.tensor.op.inputs[i].name for i, o in enumerate(n.spec.operands) if o.kind == BCAST]
  rep.rewritten = True
  return out, rep
