"""Run-context overhead benchmark: what the symbolic train flag, the engine and the loss op cost.

    python tools/benchmark.py              # full run (< 4 min on 2 CPU cores)
    python tools/benchmark.py --quick      # tiny sizes and few steps (smoke test, seconds)

Graph mode (``tf.compat.v1`` Graph + Session), one process. Every comparison runs its variants side
by side in interleaved rounds (A, B, C, then B, C, A, ...; one warm-up round first), each round
``--steps`` steps (or one epoch). A time is the median of the per-round mean step times, a ratio
the median of the per-round ratios, so a burst of load from another process hits one round, not
one variant. Printed table (Markdown):

1. char LM train step, train flag fed (``placeholder_with_default`` fed True) vs a static Python
   ``True``; for context also the flag as a bool variable (no feed), a ``tf.cond``-wrapped dropout
   on the fed flag (the naive way), and the op counts.
2. :class:`returnn_rc.engine.Engine` train step vs a hand-written minimal TF1 loop (same model,
   CE summed over valid frames via ``tf.boolean_mask``, Adam, same ``tf.data`` batches).
3. loss reduction (``Loss.get_summed_loss``) with ``use_flatten_frames=True`` (the custom op) vs
   masked (``tf.where``), for ``[B,T]`` and ``[B,T,V]`` losses, forward and forward+backward.
4. XLA (``jit_scope`` around the train step, as ``EngineConfig(xla=True)``) vs not, same graph and
   the same batches, all padded to one shape (the longest of the K); the untimed first pass
   compiles (XLA compiles once per distinct batch here, not only once per shape).
5. build time and op count of the train graph of each module in ``graphs/``.

Letters: ``B`` batch, ``T`` time (padded length), ``V`` vocab / feature, ``K`` number of batches.
"""

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from unittest import mock

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout: makes returnn_rc and graphs importable
  sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compile XLA clusters on their first run (TF's default defers it), so the warm-up pass compiles all.
os.environ.setdefault("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=false")

from absl import app, flags, logging  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

import returnn_rc as rc  # pylint: disable=wrong-import-position
from returnn_rc.engine import data as rc_data  # pylint: disable=wrong-import-position
from returnn_rc import engine as rc_engine  # pylint: disable=wrong-import-position
from returnn_rc import graph_state as rc_graph_state  # pylint: disable=wrong-import-position
from returnn_rc import nn as rc_nn  # pylint: disable=wrong-import-position
from graphs import char_lm  # pylint: disable=wrong-import-position
import graph_names  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Smoke test of the whole table in seconds: a tiny char LM (one conv layer of 16 "
                  "channels), batch size 8, one round of one step, one tiny reduction shape. The numbers are "
                  "meaningless.")
flags.DEFINE_integer("rounds", 7, "Timed rounds per comparison (after one warm-up round); parts 2 and 4 use at "
                     "most 6 and 5. Times are medians of the per-round mean step times; ratios are medians of "
                     "the per-round ratios.")
flags.DEFINE_integer("steps", 8, "Train steps per variant and round (parts 1 and 4); also the number K of "
                     "distinct real char-LM batches cycled through (every round sees the same K batches).")
flags.DEFINE_integer("epoch_seqs", 480, "Part 2: char-LM train sequences per epoch (one epoch per variant and "
                     "round).")
flags.DEFINE_integer("batch_size", 32, "Char-LM batch size (EngineConfig's default).")
flags.DEFINE_list("reduction_shapes", ["32x200x256", "64x500x512"],
                  "Part 3: BxTxV shapes; the [B,T] loss uses BxT, the [B,T,V] loss BxTxV; lengths uniform in [T/2,T].")
flags.DEFINE_float("reduction_round_secs", 0.1, "Part 3: runs per variant and round are calibrated to take about "
                   "this long (1 to 100 runs).")
flags.DEFINE_list("parts", ["flag", "engine", "reduction", "xla", "build"],
                  "Parts to run: flag (1), engine (2), reduction (3), xla (4), build (5).")
flags.DEFINE_integer("seed", 42, "Graph seed, data order and dropout masks (as EngineConfig.seed).")

TARGET_FLAG = 1.01
TARGET_ENGINE = 1.05
ALL_PARTS = ("flag", "engine", "reduction", "xla", "build")


class Row(NamedTuple):
  """One line of the result table; ``target`` is None for figures given for context."""

  key: str
  figure: str
  value: str
  ratio: Optional[float] = None
  target: Optional[float] = None

  @property
  def result(self) -> str:
    if self.target is None or self.ratio is None:
      return "info"
    return "PASS" if self.ratio <= self.target else "MISS"


# --- timing -------------------------------------------------------------------------------------

def interleaved(variants: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, List[float]]:
  """Runs every variant once per round (one untimed warm-up round first), rotating the order.

  Args:
    variants: name → function that runs one round and returns its mean seconds per step.
    rounds: timed rounds.
  Returns:
    name → per-round mean step seconds (``rounds`` values).
  """
  names = list(variants)
  for name in names:
    variants[name]()
  times: Dict[str, List[float]] = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      times[name].append(variants[name]())
  return times


def median(values: Sequence[float]) -> float:
  return float(statistics.median(values))


def paired_ratio(times: Dict[str, List[float]], num: str, den: str) -> float:
  """Median over rounds of ``num``'s / ``den``'s time in the same round (slow drifts cancel)."""
  return median([a / b for a, b in zip(times[num], times[den])])


def calibrated_repeats(fn: Callable[[], object], round_secs: float) -> int:
  """How many calls of ``fn`` take about ``round_secs`` (one call timed after a warm-up call), 1..100."""
  fn()
  start = time.perf_counter()
  fn()
  return int(min(100, max(1, round(round_secs / max(time.perf_counter() - start, 1e-6)))))


def ms(seconds: float) -> str:
  return f"{seconds * 1e3:.2f} ms"


def run_steps(session: tf.compat.v1.Session, fetches, feed: Dict, steps: int) -> float:
  """Runs ``fetches`` ``steps`` times; returns the mean seconds per run."""
  start = time.perf_counter()
  for _ in range(steps):
    session.run(fetches, feed_dict=feed)
  return (time.perf_counter() - start) / steps


# --- char-LM batches ------------------------------------------------------------------------------

class Batches(NamedTuple):
  """``K`` real char-LM batches, zero-padded to a common length ``T`` (the longest of them).

  data: ``[K,B,T]`` int32 ids; lens: ``[K,B]`` int32 true lengths; max_lens: ``[K]`` each batch's
  own padded length (the engine pads a batch to its longest sequence).
  """

  data: np.ndarray
  lens: np.ndarray
  max_lens: np.ndarray


def char_lm_batches(num: int, batch_size: int, seed: int) -> Batches:
  """The first ``num`` full batches of epoch 1 of the engine's pipeline over the char-LM train data."""
  seqs = char_lm.default_data("train", max_seqs=max(2000, 8 * num * batch_size))
  template = char_lm.extern_data_template()
  with tf.Graph().as_default():
    order = tf.compat.v1.placeholder(tf.int64, ())
    ds = rc_data.make_dataset(template, seqs, batch_size=batch_size, order_seed=order, shuffle=True, seed=seed)

    def full(batch):  # one B for all batches
      return tf.equal(tf.shape(batch["data"])[0], batch_size)

    ds = ds.filter(full)
    it = tf.compat.v1.data.make_initializable_iterator(ds.take(num))
    nxt = it.get_next()
    got = []
    with tf.compat.v1.Session() as sess:
      sess.run(it.initializer, feed_dict={order: 1})
      for _ in range(num):
        got.append(sess.run(nxt))
  max_t = max(b["data"].shape[1] for b in got)
  data = np.zeros([num, batch_size, max_t], np.int32)
  for k, b in enumerate(got):
    data[k, :, :b["data"].shape[1]] = b["data"]
  return Batches(data=data, lens=np.stack([b["data:size1"] for b in got]),
                 max_lens=np.asarray([b["data"].shape[1] for b in got], np.int32))


def batch_iterator(batches: Batches, *, fixed_shape: bool) -> Tuple[tf.Operation, Dict[str, tf.Tensor]]:
  """An in-graph ``tf.data`` iterator cycling over ``batches`` (no Python per step).

  Yields ``{"data": [B,T_k] int32, "data:size1": [B] int32}``: ``T_k`` the batch's own length, or
  the common ``T`` with ``fixed_shape`` (one shape, one XLA compilation). Returns (initializer, next).
  """
  data, lens, max_lens = (tf.constant(a) for a in batches)

  def pick(k):
    k = tf.cast(k, tf.int32)
    t = tf.shape(data)[2] if fixed_shape else max_lens[k]
    return {"data": data[k, :, :t], rc.tensor.size_key("data", 1): lens[k]}

  ds = tf.data.Dataset.range(len(batches.lens)).repeat().map(pick).prefetch(2)
  it = tf.compat.v1.data.make_initializable_iterator(ds)
  return it.initializer, it.get_next()


# --- part 1: fed vs static train flag ---------------------------------------------------------------

def cond_dropout(x, drop_prob, **kwargs):
  """The naive dropout on a tensor flag: ``tf.cond(flag, dropout(x), x)``; ``[...]`` → ``[...]``."""
  flag = rc.get_run_ctx().is_train_flag_enabled(func=rc_nn.dropout)
  if isinstance(flag, bool):
    return rc_nn.dropout(x, drop_prob, **kwargs)
  return tf.cond(flag, lambda: rc_nn.dropout(x, drop_prob, on_forward=True, **kwargs), lambda: tf.identity(x))


class TrainStep(NamedTuple):
  session: tf.compat.v1.Session
  fetches: object
  feed: Dict
  graph: tf.Graph


def build_char_lm_step(batches: Batches, *, flag: str, seed: int, xla: bool = False,
                       fixed_shape: bool = False) -> TrainStep:
  """The char-LM train step as the engine builds it, on an in-graph iterator over ``batches``.

  ``flag``: ``"fed"`` (the graph state's placeholder, fed True), ``"static"`` (Python ``True``),
  ``"variable"`` (the graph state's bool variable, assigned True; no feed) or ``"cond"`` (fed,
  dropout wrapped in ``tf.cond``). Per step it runs the train op and
  ``rc.report_fetches`` (summed, inv norm per loss), like :class:`Engine`.
  """
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(seed)
    rc_nn.set_stateless_dropout_seed(seed)
    kind = rc_graph_state.TRAIN_FLAG_VARIABLE if flag == "variable" else rc_graph_state.TRAIN_FLAG_PLACEHOLDER
    gs = rc_graph_state.get_graph_state(train_flag_kind=kind)
    init_iter, batch = batch_iterator(batches, fixed_shape=fixed_shape)
    extern_data = rc_data.extern_data_from_batch(char_lm.extern_data_template(), batch)
    model = char_lm.get_model(epoch=gs.epoch, step=gs.step)
    patch = mock.patch.object(rc, "dropout", cond_dropout) if flag == "cond" else contextlib.nullcontext()
    jit = tf.xla.experimental.jit_scope() if xla else contextlib.nullcontext()
    try:
      with jit, patch:
        ctx = rc.init_train_step_run_ctx(train_flag=True if flag == "static" else gs.train_flag, step=gs.step,
                                         epoch=gs.epoch)
        char_lm.train_step(model=model, extern_data=extern_data)
        fetches = rc.report_fetches(ctx.losses)
        train_op = _adam_step(ctx.total_loss().get_raw(), gs.step_var)
    finally:
      rc.reset_run_ctx()
    init = tf.compat.v1.global_variables_initializer()
  graph.finalize()
  session = tf.compat.v1.Session(graph=graph)
  session.run([init, init_iter])
  gs.set_train_flag(session, True)
  feed = {} if flag == "static" else gs.feed_dict(train=True)
  return TrainStep(session, [train_op, fetches], feed, graph)


def _adam_step(loss: tf.Tensor, global_step: tf.Variable) -> tf.Operation:
  """The engine's update: Adam(1e-3) on dense gradients (see ``engine.dense_gradients``)."""
  optimizer = tf.compat.v1.train.AdamOptimizer(learning_rate=1e-3)
  grads_and_vars = rc_engine.dense_gradients(optimizer.compute_gradients(loss))
  return optimizer.apply_gradients(grads_and_vars, global_step=global_step)


def part_flag(batches: Batches) -> List[Row]:
  """Part 1: fed vs static train flag (and variable flag, tf.cond dropout) on the char-LM train step."""
  steps = {name: build_char_lm_step(batches, flag=name, seed=FLAGS.seed)
           for name in ("fed", "static", "variable", "cond")}
  num_ops = {name: len(s.graph.get_operations()) for name, s in steps.items()}
  times = interleaved({name: (lambda s=s: run_steps(s.session, s.fetches, s.feed, FLAGS.steps))
                       for name, s in steps.items()}, FLAGS.rounds)
  for s in steps.values():
    s.session.close()
  t = {name: median(times[name]) for name in steps}
  shape = f"B={batches.data.shape[1]}, T<={batches.data.shape[2]}"
  return [
      Row("1a", f"char_lm train step, fed flag / static True ({shape})", f"{ms(t['fed'])} / {ms(t['static'])}",
          paired_ratio(times, "fed", "static"), TARGET_FLAG),
      Row("1b", "char_lm train step, bool-variable flag (no feed) / static True",
          f"{ms(t['variable'])} / {ms(t['static'])}", paired_ratio(times, "variable", "static")),
      Row("1c", "char_lm train step, tf.cond dropout on fed flag / static True (the naive way)",
          f"{ms(t['cond'])} / {ms(t['static'])}", paired_ratio(times, "cond", "static")),
      Row("1d", "char_lm train graph ops: fed / static / variable / tf.cond",
          " / ".join(str(num_ops[n]) for n in ("fed", "static", "variable", "cond"))),
  ]


# --- part 2: engine vs hand-written loop ------------------------------------------------------------

class HandLoop:
  """A minimal TF1 loop: char-LM model, CE ``[B,T-1]`` summed over valid frames via ``tf.boolean_mask``,
  Adam, static train flag; input from the engine's ``tf.data`` pipeline (same batches, same order)."""

  def __init__(self, seqs: Sequence[Dict[str, np.ndarray]], *, batch_size: int, seed: int):
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.compat.v1.set_random_seed(seed)
      rc_nn.set_stateless_dropout_seed(seed)
      self._order = tf.compat.v1.placeholder(tf.int64, (), name="order_seed")
      ds = rc_data.make_dataset(char_lm.extern_data_template(), seqs, batch_size=batch_size,
                                order_seed=self._order, shuffle=True, seed=seed)
      it = tf.compat.v1.data.make_initializable_iterator(ds)
      self._init_iter = it.initializer
      batch = it.get_next()
      ids, lens = batch["data"], batch[rc.tensor.size_key("data", 1)]  # [B,T], [B]
      global_step = tf.compat.v1.train.get_or_create_global_step()
      model = char_lm.Model()
      rc.init_train_step_run_ctx(train_flag=True, step=global_step)  # rc.dropout reads the flag and step
      try:
        logits = model.logits(ids[:, :-1])  # [B,T-1,V]
      finally:
        rc.reset_run_ctx()
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[:, 1:], logits=logits)  # [B,T-1]
      mask = tf.sequence_mask(lens - 1, tf.shape(ce)[1])
      self.loss = tf.reduce_sum(tf.boolean_mask(ce, mask))
      self.train_op = _adam_step(self.loss, global_step)
      init = tf.compat.v1.global_variables_initializer()
    self.graph.finalize()
    self.session = tf.compat.v1.Session(graph=self.graph)
    self.session.run(init)

  def epoch(self, epoch: int) -> float:
    """Trains one epoch; mean seconds per step (timed as the engine: after the iterator init)."""
    self.session.run(self._init_iter, feed_dict={self._order: epoch})
    steps = 0
    start = time.perf_counter()
    while True:
      try:
        self.session.run([self.train_op, self.loss])
      except tf.errors.OutOfRangeError:
        break
      steps += 1
    return (time.perf_counter() - start) / steps


def part_engine() -> List[Row]:
  """Part 2: Engine.train steps/s vs :class:`HandLoop`, one epoch per round, epochs aligned."""
  seqs = char_lm.default_data("train", max_seqs=FLAGS.epoch_seqs)
  train_dir = tempfile.mkdtemp(prefix="rc_bench_")
  try:
    cfg = rc_engine.EngineConfig(train_dir=train_dir, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                 save_checkpoints=False, log_every_secs=1e9)
    with rc_engine.Engine(char_lm, cfg, train_data=seqs, dev_data=[]) as engine:
      hand = HandLoop(seqs, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
      epochs = {"engine": 0, "hand": 0}

      def engine_round():
        epochs["engine"] += 1
        result = engine.train(num_epochs=epochs["engine"])[-1]
        return result.seconds / result.num_batches

      def hand_round():
        epochs["hand"] += 1
        return hand.epoch(epochs["hand"])

      times = interleaved({"engine": engine_round, "hand": hand_round}, min(FLAGS.rounds, 6))
      num_batches = engine.history[-1].num_batches
      hand.session.close()
  finally:
    shutil.rmtree(train_dir, ignore_errors=True)
  eng, hnd = median(times["engine"]), median(times["hand"])
  return [Row("2", f"Engine.train step / hand-written TF1 loop (char_lm, {num_batches} steps/epoch)",
              f"{ms(eng)} / {ms(hnd)}", paired_ratio(times, "engine", "hand"), TARGET_ENGINE)]


# --- part 3: loss reductions ---------------------------------------------------------------------------

def reduction_fetches(x: tf.Variable, lens: tf.Tensor, *, flatten: bool) -> Tuple[tf.Tensor, List]:
  """The summed loss of ``x`` ``[B,T]`` or ``[B,T,V]`` (valid frames ``lens`` ``[B]``) as the run
  context builds it; returns (forward fetch, forward+backward fetches)."""
  time_dim = rc.Dim(lens, name="time")
  dims = [rc.batch_dim, time_dim] + ([rc.Dim(int(x.shape[2]), name="feat")] if x.shape.rank == 3 else [])
  ctx = rc.init_train_step_run_ctx(train_flag=True)
  try:
    ctx.mark_as_loss(rc.Tensor("x", dims, "float32", raw_tensor=x.read_value()), "loss", use_flatten_frames=flatten)
    summed = ctx.losses["loss"].get_summed_loss().get_raw()
  finally:
    rc.reset_run_ctx()
  grad = tf.gradients(summed, x)[0]
  return summed, [summed, grad.op]


def part_reduction(shape: Tuple[int, int, int], rng: np.random.Generator) -> List[Row]:
  """Part 3 for one BxTxV: flatten op vs masked, [B,T] and [B,T,V], fwd and fwd+bwd."""
  b, t, v = shape
  graph = tf.Graph()
  fetches = {}
  with graph.as_default():
    lens = tf.constant(rng.integers(t // 2, t + 1, size=b).astype(np.int32))
    for rank, var_shape in (("[B,T]", [b, t]), ("[B,T,V]", [b, t, v])):
      x = tf.compat.v1.Variable(rng.standard_normal(var_shape).astype(np.float32), name="x")
      for flatten in (True, False):
        fwd, both = reduction_fetches(x, lens, flatten=flatten)
        fetches[(rank, flatten, "fwd")] = fwd
        fetches[(rank, flatten, "fwd+bwd")] = both
    init = tf.compat.v1.global_variables_initializer()
  graph.finalize()
  rows = []
  with tf.compat.v1.Session(graph=graph) as session:
    session.run(init)
    for rank, size in (("[B,T]", f"{b}x{t}"), ("[B,T,V]", f"{b}x{t}x{v}")):
      for kind in ("fwd", "fwd+bwd"):
        pair = {name: fetches[(rank, name == "op", kind)] for name in ("op", "masked")}
        repeats = calibrated_repeats(lambda: session.run(pair["masked"]), FLAGS.reduction_round_secs)
        times = interleaved({name: (lambda f=f: run_steps(session, f, {}, repeats)) for name, f in pair.items()},
                            FLAGS.rounds)
        rows.append(Row(f"3 {rank} {size} {kind}", f"loss reduction {rank} {size} {kind}: flatten op / masked",
                        f"{ms(median(times['op']))} / {ms(median(times['masked']))}",
                        paired_ratio(times, "op", "masked")))
  return rows


# --- part 4: XLA ------------------------------------------------------------------------------------

def part_xla(batches: Batches) -> List[Row]:
  """Part 4: the fed-flag char-LM train step under ``jit_scope`` vs without, fixed-shape batches."""
  steps, first = {}, {}
  for name, xla in (("xla", True), ("no_xla", False)):
    steps[name] = build_char_lm_step(batches, flag="fed", seed=FLAGS.seed, xla=xla, fixed_shape=True)
    s = steps[name]
    # One pass over the K batches: XLA compiles here, once per distinct batch (not only per shape).
    first[name] = run_steps(s.session, s.fetches, s.feed, len(batches.lens)) * len(batches.lens)
  times = interleaved({name: (lambda s=s: run_steps(s.session, s.fetches, s.feed, FLAGS.steps))
                       for name, s in steps.items()}, min(FLAGS.rounds, 5))
  for s in steps.values():
    s.session.close()
  xla, plain = median(times["xla"]), median(times["no_xla"])
  shape = f"B={batches.data.shape[1]}, T={batches.data.shape[2]} fixed"
  return [
      Row("4", f"char_lm train step, XLA jit_scope / no XLA ({shape})", f"{ms(xla)} / {ms(plain)}",
          paired_ratio(times, "xla", "no_xla")),
      Row("4 first pass", f"first pass over the {len(batches.lens)} batches (XLA: compiles), XLA / no XLA",
          f"{first['xla']:.2f} s / {first['no_xla']:.2f} s"),
  ]


# --- part 5: graph build --------------------------------------------------------------------------------

def build_train_graph(module) -> tf.Graph:
  """The train graph of a graph module: placeholders for the extern data, graph state, model,
  ``train_step``'s losses, total loss and Adam (no data pipeline, eval, forward or saver)."""
  graph = tf.Graph()
  with graph.as_default():
    gs = rc_graph_state.get_graph_state()
    template = module.extern_data_template()
    batch = {}
    for name, tmpl in template.items():
      shape = [None if (d.is_batch_dim or d.is_dynamic()) else d.dimension for d in tmpl.dims]
      batch[name] = tf.compat.v1.placeholder(tf.as_dtype(tmpl.dtype), shape, name=name)
      for axis, d in enumerate(tmpl.dims):
        if d.is_dynamic():
          key = rc.tensor.size_key(name, axis)
          batch[key] = tf.compat.v1.placeholder(tf.int32, [None], name=key.replace(":", "_"))
    extern_data = rc_data.extern_data_from_batch(template, batch)
    model = module.get_model(epoch=gs.epoch, step=gs.step)
    try:
      ctx = rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
      module.train_step(model=model, extern_data=extern_data)
      rc.report_fetches(ctx.losses)
      _adam_step(ctx.total_loss().get_raw(), gs.step_var)
    finally:
      rc.reset_run_ctx()
  return graph


def part_build() -> List[Row]:
  """Part 5: median build time (of 3) and op count of each graph module's train graph."""
  rows = []
  for name in graph_names.available():
    module = graph_names.load(name)
    secs, graph = [], None
    for _ in range(1 if FLAGS.quick else 3):
      start = time.perf_counter()
      graph = build_train_graph(module)
      secs.append(time.perf_counter() - start)
    rows.append(Row(f"5 {name}", f"train graph build of graphs/{name}.py: time, ops",
                    f"{ms(median(secs))}, {len(graph.get_operations())} ops"))
  return rows


# --- main ------------------------------------------------------------------------------------------------

def machine() -> str:
  """One line: CPU model, cores, load average, TF version."""
  model = platform.processor() or "?"
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), model)
  except (OSError, subprocess.SubprocessError):
    pass
  load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
  return f"{model}, {os.cpu_count()} cores, load average {load}; TensorFlow {tf.__version__}"


def format_rows(rows: Sequence[Row]) -> str:
  """The Markdown table: key, figure, value, ratio, target, result."""
  lines = ["| # | figure | value | ratio | target | result |", "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    ratio = "" if r.ratio is None else f"{r.ratio:.3f}x"
    target = "" if r.target is None else f"<= {r.target:.2f}x"
    lines.append(f"| {r.key} | {r.figure} | {r.value} | {ratio} | {target} | {r.result} |")
  return "\n".join(lines)


def apply_quick() -> contextlib.AbstractContextManager:
  """``--quick``: sets tiny sizes (except flags given explicitly); returns a context that shrinks
  the char LM (one conv layer of 16 channels) while it is built."""
  for name, value in (("rounds", 1), ("steps", 1), ("epoch_seqs", 32), ("batch_size", 8),
                      ("reduction_shapes", ["4x16x8"]), ("reduction_round_secs", 0.0)):
    if not FLAGS[name].present:
      FLAGS[name].value = value
  return mock.patch.multiple(char_lm, EMBED_DIM=8, CHANNELS=16, DILATIONS=(1,))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(FLAGS.parts) - set(ALL_PARTS))
  if unknown:
    raise app.UsageError(f"--parts: unknown {unknown}; choose from {list(ALL_PARTS)}")
  model_ctx = apply_quick() if FLAGS.quick else contextlib.nullcontext()
  if FLAGS.rounds < 1 or FLAGS.steps < 1:
    raise app.UsageError("--rounds and --steps must be >= 1")
  print(f"machine: {machine()}", flush=True)
  start = time.time()
  rows: List[Row] = []
  batches = None
  if {"flag", "xla"} & set(FLAGS.parts):
    batches = char_lm_batches(FLAGS.steps, FLAGS.batch_size, FLAGS.seed)
  parts = [
      ("flag", lambda: part_flag(batches)),
      ("engine", part_engine),
      ("reduction", lambda: [row for spec in FLAGS.reduction_shapes
                             for row in part_reduction(parse_shape(spec), np.random.default_rng(FLAGS.seed))]),
      ("xla", lambda: part_xla(batches)),
      ("build", part_build),
  ]
  with model_ctx:
    for name, fn in parts:
      if name in FLAGS.parts:
        part_start = time.time()
        rows.extend(fn())
        logging.info("part %s done in %.1f s", name, time.time() - part_start)
  print(f"\n{format_rows(rows)}\n")
  print(f"rounds={FLAGS.rounds} steps={FLAGS.steps}; total {time.time() - start:.0f} s; "
        f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def parse_shape(spec: str) -> Tuple[int, int, int]:
  """``"32x200x256"`` → (B, T, V); ``ValueError`` otherwise."""
  try:
    b, t, v = (int(p) for p in spec.lower().split("x"))
  except ValueError:
    raise ValueError(f"--reduction_shapes: expected BxTxV (e.g. 32x200x256), got {spec!r}") from None
  if min(b, t, v) < 1:
    raise ValueError(f"--reduction_shapes: sizes must be >= 1, got {spec!r}")
  return b, t, v


if __name__ == "__main__":
  app.run(main)
