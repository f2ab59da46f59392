"""What the run-context benchmarks share: interleaved timing, the result table, char-LM batches.

The benchmarks (``tools/bench_flag.py``, ``bench_engine.py``, ``bench_reduction.py``, ``bench_xla.py``,
``bench_build.py``) run their variants side by side in interleaved rounds (A, B, C, then B, C, A,
...; one untimed warm-up round first). A time is the median of the per-round mean step times, a ratio
the median of the per-round ratios, so a burst of load from another process hits one round, not one
variant. Each prints a Markdown table of :class:`Row` s.

Importing this module (first, before ``returnn_rc``) puts the repository root on ``sys.path`` (the
tools run from a checkout) and sets quiet TF logs and XLA's eager compilation.

Letters: ``B`` batch, ``T`` time (padded length), ``K`` number of batches.
"""

import contextlib
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple
from unittest import mock

import graph_names

graph_names.ensure_repo_root_on_path()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Compile XLA clusters on their first run (TF's default defers it), so a warm-up pass compiles all.
os.environ.setdefault("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=false")

import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position
from absl import flags  # noqa: E402  pylint: disable=wrong-import-position

import returnn_rc as rc  # noqa: E402  pylint: disable=wrong-import-position
from graphs import char_lm  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc import graph_state as rc_graph_state  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc import nn as rc_nn  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.engine import data as rc_data  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.engine.train_graph import TrainGraphConfig, build_train_graph  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.tensor import size_key  # noqa: E402  pylint: disable=wrong-import-position

QUICK = flags.DEFINE_bool(
  "quick",
  False,
  "Smoke test in seconds: tiny sizes (a char LM with 16 channels), one round of one step. The numbers are meaningless.",
)
ROUNDS = flags.DEFINE_integer(
  "rounds",
  7,
  "Timed rounds per comparison (after one warm-up round). Times are medians "
  "of the per-round mean step times; ratios are medians of the per-round ratios.",
)
SEED = flags.DEFINE_integer("seed", 42, "Graph seed, data order and dropout masks (as EngineConfig.seed).")


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
    for name in names[r % len(names) :] + names[: r % len(names)]:
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


# --- the char LM and its batches ------------------------------------------------------------------


def small_char_lm() -> contextlib.AbstractContextManager:
  """While active, the char LM is tiny (embedding 8, one conv layer of 16 channels): for ``--quick``."""
  return mock.patch.multiple(char_lm, EMBED_DIM=8, CHANNELS=16, DILATIONS=(1,))


class Batches(NamedTuple):
  """``K`` real char-LM batches, zero-padded to a common length ``T`` (the longest of them).

  Attributes:
    data: ``[K,B,T]`` int32 ids.
    lens: ``[K,B]`` int32 true lengths.
    max_lens: ``[K]`` each batch's own padded length (the engine pads a batch to its longest sequence).
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
    data[k, :, : b["data"].shape[1]] = b["data"]
  return Batches(
    data=data,
    lens=np.stack([b[size_key("data", 1)] for b in got]),
    max_lens=np.asarray([b["data"].shape[1] for b in got], np.int32),
  )


def batch_iterator(batches: Batches, *, fixed_shape: bool) -> Tuple[tf.Operation, Dict[str, tf.Tensor]]:
  """An in-graph ``tf.data`` iterator cycling over ``batches`` (no Python per step).

  Yields ``{"data": [B,T_k] int32, "data:size1": [B] int32}``: ``T_k`` the batch's own length, or
  the common ``T`` with ``fixed_shape`` (one shape, one XLA compilation). Returns (initializer, next).
  """
  data, lens, max_lens = (tf.constant(a) for a in batches)

  def pick(k):
    k = tf.cast(k, tf.int32)
    t = tf.shape(data)[2] if fixed_shape else max_lens[k]
    return {"data": data[k, :, :t], size_key("data", 1): lens[k]}

  ds = tf.data.Dataset.range(len(batches.lens)).repeat().map(pick).prefetch(2)
  it = tf.compat.v1.data.make_initializable_iterator(ds)
  return it.initializer, it.get_next()


# --- the char-LM train step -----------------------------------------------------------------------


def cond_dropout(x, drop_prob, **kwargs):
  """The naive dropout on a tensor flag: ``tf.cond(flag, dropout(x), x)``; ``[...]`` → ``[...]``."""
  flag = rc.get_run_ctx().is_train_flag_enabled(func=rc_nn.dropout)
  if isinstance(flag, bool):
    return rc_nn.dropout(x, drop_prob, **kwargs)
  return tf.cond(flag, lambda: rc_nn.dropout(x, drop_prob, on_forward=True, **kwargs), lambda: tf.identity(x))


class TrainStep(NamedTuple):
  """A built train step: run ``fetches`` with ``feed`` in ``session``."""

  session: tf.compat.v1.Session
  fetches: object
  feed: Dict
  graph: tf.Graph


def build_char_lm_step(
  batches: Batches, *, flag: str, seed: int, xla: bool = False, fixed_shape: bool = False
) -> TrainStep:
  """The char-LM train step of the engine's builder, on an in-graph iterator over ``batches``.

  Args:
    batches: the batches to cycle through.
    flag: ``"fed"`` (the graph state's placeholder, fed True), ``"static"`` (Python ``True``),
      ``"variable"`` (the graph state's bool variable, assigned True; no feed) or ``"cond"`` (fed,
      dropout wrapped in ``tf.cond``).
    seed: :attr:`TrainGraphConfig.seed`.
    xla: :attr:`TrainGraphConfig.xla`.
    fixed_shape: all batches padded to one length (see :func:`batch_iterator`).
  Returns:
    a session with initialised variables and iterator; per step it runs the train op and
    ``rc.report_fetches`` (summed, inv norm per loss), like :class:`returnn_rc.engine.Engine`.
  """
  train_flag = {"static": True, "variable": rc_graph_state.TRAIN_FLAG_VARIABLE}.get(
    flag, rc_graph_state.TRAIN_FLAG_PLACEHOLDER
  )
  graph = tf.Graph()
  with graph.as_default():
    init_iter, batch = batch_iterator(batches, fixed_shape=fixed_shape)
    extern_data = rc_data.extern_data_from_batch(char_lm.extern_data_template(), batch)
    patch = mock.patch.object(rc, "dropout", cond_dropout) if flag == "cond" else contextlib.nullcontext()
    with patch:
      tg = build_train_graph(char_lm, extern_data, TrainGraphConfig(seed=seed, xla=xla, train_flag=train_flag))
  graph.finalize()
  session = tf.compat.v1.Session(graph=graph)
  session.run([tg.init_op, init_iter])
  tg.graph_state.set_train_flag(session, True)  # the variable kind (a no-op for the others)
  return TrainStep(session, [tg.train_op, tg.report], tg.feed_dict(train=True), graph)


# --- output --------------------------------------------------------------------------------------


def machine() -> str:
  """One line: CPU model, cores, load average, TF version."""
  model = platform.processor() or "?"
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), model)
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


def quick(**values) -> contextlib.AbstractContextManager:
  """With ``--quick``: sets ``--rounds=1`` and the given flag values (except flags given explicitly) and
  returns :func:`small_char_lm`; without: a context that does nothing."""
  if not QUICK.value:
    return contextlib.nullcontext()
  for name, value in dict(rounds=1, **values).items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value
  return small_char_lm()


def run(measure: Callable[[], List[Row]]) -> None:
  """Prints the machine line, the table of ``measure()``'s rows and the total time."""
  if ROUNDS.value < 1:
    raise ValueError(f"--rounds must be >= 1, got {ROUNDS.value}")
  print(f"machine: {machine()}", flush=True)
  start = time.time()
  rows = measure()
  print(f"\n{format_rows(rows)}\n")
  print(
    f"rounds={ROUNDS.value}; total {time.time() - start:.0f} s; load average at the end: "
    f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}"
  )
