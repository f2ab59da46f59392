"""Benchmark 13: packed frames all the way up (``returnn_rc.packing``): train steps packed vs not.

    python tools/bench_packing.py                                   # all parts (a few minutes on 2 CPU cores)
    python tools/bench_packing.py --parts goldens --rounds 11 --steps 4
    python tools/bench_packing.py --parts xla --rounds 7
    python tools/bench_packing.py --quick                           # smoke test (tiny sizes; meaningless numbers)

Graph mode, one process; the variants of one comparison run side by side in interleaved rounds
(``tools/bench_common.py``: one untimed warm-up round, then A, B, C / B, C, A / ...), ``--steps``
train steps per variant and round. A time is the median of the per-round mean step times, a ratio
the median of the per-round ratios. Every ratio is the packed variant's time over the other's
(< 1: packed faster), so a target is an upper bound.

1. ``model``: ``[B=32, T=150]`` ids -> embedding (V=3000, 128) -> dense 256 (ReLU) -> output projection
   to V=3000 -> sparse softmax cross-entropy, lengths uniform in ``[0.2T, T]`` (about 40 % padding);
   train step = forward + backward + SGD. Variants, each its own graph with the same weights:
   ``packed`` (default: the rewrite), ``values`` (only the loss values packed: the rewrite switched
   off) and ``unpacked`` (``use_flatten_frames=False``). Target (issue 13): unpacked >= 1.5x packed,
   i.e. packed / unpacked <= 1 / 1.5.
2. ``goldens``: every graph of ``graphs/``, built by the engine's builder
   (:func:`returnn_rc.engine.train_graph.build_train_graph`, through the conformance harness
   ``tests/conformance/goldens.py``: Adam, ``rc.report_fetches``), fed the first batches of the
   engine's length-bucketed pipeline (:func:`returnn_rc.engine.data.make_dataset`; little padding),
   with the rewrite (``rewrite``) vs without (``values``: ``rc.packing.enabled(False)``). Target: no
   slower (rewrite / values <= 1.05, the noise of one run).
3. ``xla``: the model of part 1 (``packed`` vs ``values``) and the goldens inside ``jit_scope`` (as
   ``EngineConfig(xla=True)``), rewrite forced on vs off; the batches padded to their bucket's bound
   and only those of the first batch's shape kept (one compilation each); the packed size is a
   dynamic dim under XLA. Decides :data:`returnn_rc.packing.switch.XLA_DEFAULT`.

Row keys: ``13 model``, ``13 model values``, ``13 model losses``, ``13 goldens <graph>``,
``13 xla model``, ``13 xla model losses``, ``13 xla <graph>``.

Letters: ``B`` batch, ``T`` time, ``V`` vocabulary, ``E`` embedding, ``H`` hidden units.
"""

import contextlib
import sys
import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags

import returnn_rc as rc
from returnn_rc import graph_module as rc_graph_module
from returnn_rc.engine import data as rc_data
from tests.conformance import goldens

import bench_common
from bench_common import Row

flags.adopt_module_key_flags(bench_common)
STEPS = flags.DEFINE_integer("steps", 3, "Train steps per variant and round (cycling over the variant's batches).")
PARTS = flags.DEFINE_list("parts", ["model", "goldens", "xla"], "Parts to run: model (1), goldens (2), xla (3).")

PART_NAMES = ("model", "goldens", "xla")
#: packed / unpacked (issue 13: the packed train step at least 1.5x faster).
TARGET_MODEL = 1 / 1.5
#: rewrite / values (no slower, within the noise of one run: 5 %).
TARGET_GOLDENS = 1.05
#: Batches per variant (model: random; goldens: the first of the engine's pipeline), cycled through.
NUM_BATCHES = 8
#: Train sequences per golden fed to the pipeline.
NUM_SEQS = 1500
FLATTEN_OP = "FlattenWithSeqLenMask"


def stepper(session: tf.compat.v1.Session, fetches, feeds: Sequence[Dict], steps: int) -> Callable[[], float]:
  """A round: ``steps`` runs of ``fetches``, cycling over ``feeds``; returns the mean seconds per step."""
  state = {"k": 0}

  def one_round() -> float:
    start = time.perf_counter()
    for _ in range(steps):
      session.run(fetches, feeds[state["k"] % len(feeds)])
      state["k"] += 1
    return (time.perf_counter() - start) / steps

  return one_round


def flatten_ops(graph: tf.Graph) -> int:
  return sum(op.type == FLATTEN_OP for op in graph.get_operations())


# --- part 1: the [B,T] model ----------------------------------------------------------------------


def model_sizes() -> Tuple[int, int, int, int, int]:
  """(B, T, V, E, H)."""
  return (4, 12, 50, 8, 16) if bench_common.QUICK.value else (32, 150, 3000, 128, 256)


def build_model(variant: str, *, xla: bool = False):
  """The part-1 model's train step; ``variant`` ``packed`` / ``values`` / ``unpacked``.

  Returns:
    (graph, fetches {"train", "summed"}, placeholders (ids [B,T], targets [B,T], lens [B]), init op).
  """
  _, _, vocab, emb_dim, hidden = model_sizes()
  seed = bench_common.SEED.value
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(seed)
    ids = tf.compat.v1.placeholder(tf.int32, [None, None], name="ids")
    targets = tf.compat.v1.placeholder(tf.int32, [None, None], name="targets")
    lens = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
    init = tf.compat.v1.glorot_uniform_initializer(seed=seed)
    emb = tf.compat.v1.get_variable("emb", [vocab, emb_dim], initializer=init)
    w1 = tf.compat.v1.get_variable("w1", [emb_dim, hidden], initializer=init)
    b1 = tf.compat.v1.get_variable("b1", [hidden], initializer=tf.compat.v1.zeros_initializer())
    w2 = tf.compat.v1.get_variable("w2", [hidden, vocab], initializer=init)
    b2 = tf.compat.v1.get_variable("b2", [vocab], initializer=tf.compat.v1.zeros_initializer())
    time_dim = rc.Dim(lens, name="time")
    jit = tf.xla.experimental.jit_scope() if xla else contextlib.nullcontext()
    with rc.packing.enabled(variant == "packed"), jit:
      ctx = rc.init_train_step_run_ctx(train_flag=True)
      x = tf.nn.embedding_lookup(emb, ids)  # [B,T,E]
      h = tf.nn.relu(tf.tensordot(x, w1, [[2], [0]]) + b1)  # [B,T,H] (what tf.layers.dense writes)
      logits = tf.reshape(tf.matmul(tf.reshape(h, [-1, hidden]), w2), tf.concat([tf.shape(h)[:2], [vocab]], 0)) + b2
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)  # [B,T]
      ctx.mark_as_loss(
        rc.Tensor("ce", [rc.batch_dim, time_dim], "float32", raw_tensor=ce),
        "ce",
        use_flatten_frames=variant != "unpacked",
      )
      loss = ctx.total_loss().get_raw()
      summed = ctx.losses["ce"].get_summed_loss().get_raw()
      train = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss)
      rc.reset_run_ctx()
    init_op = tf.compat.v1.global_variables_initializer()
  graph.finalize()
  return graph, {"train": train, "summed": summed}, (ids, targets, lens), init_op


def model_batches(num: int, rng: np.random.Generator) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """``num`` batches (ids [B,T], targets [B,T] (ids shifted by one), lens [B] uniform in [0.2T, T])."""
  batch, time_len, vocab, _, _ = model_sizes()
  out = []
  for _ in range(num):
    lens = rng.integers(max(1, int(0.2 * time_len)), time_len + 1, size=batch).astype(np.int32)
    ids = rng.integers(0, vocab, size=[batch, time_len]).astype(np.int32)
    out.append((ids, np.roll(ids, -1, axis=1), lens))
  return out


def part_model(*, xla: bool) -> List[Row]:
  """Part 1 (or the model half of part 3 with ``xla``)."""
  data = model_batches(NUM_BATCHES, np.random.default_rng(bench_common.SEED.value))
  b, t, v, _, _ = model_sizes()
  padding = 1 - float(np.mean([lens.mean() for _, _, lens in data])) / t
  names = ("packed", "values") if xla else ("packed", "values", "unpacked")
  variants, losses, counts, sessions = {}, {}, {}, []
  for name in names:
    graph, fetches, (ids, targets, lens), init_op = build_model(name, xla=xla)
    session = tf.compat.v1.Session(graph=graph)
    sessions.append(session)
    session.run(init_op)
    feeds = [{ids: a, targets: y, lens: n} for a, y, n in data]
    losses[name] = session.run(fetches["summed"], feeds[0])  # before any update: the same weights
    counts[name] = flatten_ops(graph)
    variants[name] = stepper(session, fetches, feeds, STEPS.value)
  times = bench_common.interleaved(variants, bench_common.ROUNDS.value)
  for session in sessions:
    session.close()
  ms = {name: bench_common.ms(bench_common.median(times[name])) for name in names}
  shape = f"[{b},{t}] V={v}, {padding:.0%} padding"
  tag = "xla " if xla else ""
  rows = []
  if not xla:
    r = bench_common.paired_ratio(times, "packed", "unpacked")
    rows.append(
      Row(
        "13 model",
        f"model {shape}: packed / unpacked train step (issue: unpacked >= 1.5x packed)",
        f"{ms['packed']} / {ms['unpacked']} (speed-up {1 / r:.2f}x)",
        r,
        TARGET_MODEL,
      )
    )
  r = bench_common.paired_ratio(times, "packed", "values")
  key, figure = ("13 xla model", f"xla model {shape}") if xla else ("13 model values", "model")
  rows.append(
    Row(
      key, f"{figure}: packed / values-only train step", f"{ms['packed']} / {ms['values']} (speed-up {1 / r:.2f}x)", r
    )
  )
  rows.append(
    Row(
      f"13 {tag}model losses",
      f"{tag}model: summed loss, first batch (flatten ops)",
      ", ".join(f"{n} {losses[n]:.4f} ({counts[n]})" for n in names),
    )
  )
  return rows


# --- parts 2 and 3: the goldens ---------------------------------------------------------------------


def golden_batches(name: str, num: int, *, pad_to_bucket_boundary: bool) -> List[Dict[str, np.ndarray]]:
  """The first ``num`` batches of epoch 1 of the engine's bucketed pipeline over the golden's train data
  (``"<input>"`` ``[B,...]`` and ``"<input>:size<axis>"`` ``[B]``, as :func:`rc_data.make_dataset` yields)."""
  mod = goldens.module(name)
  seqs = goldens.data(name, "train", num_seqs=64 if bench_common.QUICK.value else NUM_SEQS)
  template = rc_graph_module.extern_data_template(mod)
  rc_data.check_data(template, seqs, what=f"golden {name!r} train data")
  with tf.Graph().as_default():
    order = tf.compat.v1.placeholder(tf.int64, ())
    ds = rc_data.make_dataset(
      template,
      seqs,
      batch_size=32,
      order_seed=order,
      shuffle=True,
      seed=bench_common.SEED.value,
      pad_to_bucket_boundary=pad_to_bucket_boundary,
    )
    it = tf.compat.v1.data.make_initializable_iterator(ds.take(num))
    nxt = it.get_next()
    out = []
    with tf.compat.v1.Session() as session:
      session.run(it.initializer, feed_dict={order: 1})
      for _ in range(num):
        try:
          out.append(session.run(nxt))
        except tf.errors.OutOfRangeError:
          break
  if not out:
    raise RuntimeError(f"golden {name!r}: the pipeline gave no batch")
  return out


def padding_fraction(template: rc.TensorDict, batches: Sequence[Mapping[str, np.ndarray]]) -> float:
  """Padded elements / all elements, over every input of every batch."""
  padded = total = 0
  for batch in batches:
    for name in template:
      padded += int(goldens.padding_mask(template, batch, name).sum())
      total += batch[name].size
  return padded / max(total, 1)


def error_summary(message: str) -> str:
  """One table cell from a TF error message: the node and the line after ``Node: '...'`` (what went wrong)."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for i, line in enumerate(lines[:-1]):
    if line.startswith("Node: "):
      return f"{line[6:]}: {lines[i + 1]}"[:300].replace("|", "/")
  return (lines[0] if lines else "")[:300].replace("|", "/")


def part_goldens(*, xla: bool) -> List[Row]:
  """Part 2 (or the goldens half of part 3 with ``xla``): one row per golden."""
  rows = []
  for name in goldens.names():
    batches = golden_batches(name, 2 if bench_common.QUICK.value else NUM_BATCHES, pad_to_bucket_boundary=xla)
    if xla:  # one shape: the batches of the first batch's shape
      batches = [b for b in batches if all(b[k].shape == batches[0][k].shape for k in b)]
    variants, counts, sessions = {}, {}, []
    template = None
    for key, on in (("rewrite", True), ("values", False)):
      with rc.packing.enabled(on):
        built = goldens.build(name, xla=xla)
      template = built.template
      session = built.session()
      sessions.append(session)
      feeds = [built.feed(b, train=True) for b in batches]
      counts[key] = flatten_ops(built.graph)
      variants[key] = stepper(session, {"train": built.train_op, "report": built.report}, feeds, STEPS.value)
    figure = (
      f"{'xla ' if xla else ''}{name} ({padding_fraction(template, batches):.0%} padding, {len(batches)} "
      f"batches, flatten ops {counts['rewrite']} vs {counts['values']}): rewrite / values-only train step"
    )
    key = f"13 {'xla' if xla else 'goldens'} {name}"
    try:
      times = bench_common.interleaved(variants, bench_common.ROUNDS.value)
    except tf.errors.OpError as exc:
      if not xla:
        raise
      # Part 3 forces the rewrite on where the automatic setting leaves it off (XLA_DEFAULT): a failure there
      # is a finding of the benchmark, printed as the golden's row (and on stderr), not the end of the run.
      print(f"13 xla {name}: {type(exc).__name__}: {exc.message}", file=sys.stderr)
      rows.append(Row(key, figure, f"FAILED: {type(exc).__name__}: {error_summary(exc.message)}"))
      continue
    finally:
      for session in sessions:
        session.close()
    r = bench_common.paired_ratio(times, "rewrite", "values")
    ms = {k: bench_common.ms(bench_common.median(times[k])) for k in variants}
    rows.append(Row(key, figure, f"{ms['rewrite']} / {ms['values']}", r, None if xla else TARGET_GOLDENS))
  return rows


def measure() -> List[Row]:
  rows = []
  if "model" in PARTS.value:
    rows += part_model(xla=False)
  if "goldens" in PARTS.value:
    rows += part_goldens(xla=False)
  if "xla" in PARTS.value:
    rows += part_model(xla=True)
    rows += part_goldens(xla=True)
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with bench_common.quick(steps=1):
    if STEPS.value < 1:
      raise app.UsageError(f"--steps must be >= 1, got {STEPS.value}")
    unknown = [p for p in PARTS.value if p not in PART_NAMES]
    if unknown or not PARTS.value:
      raise app.UsageError(f"--parts must be a non-empty list of {', '.join(PART_NAMES)}, got {PARTS.value}")
    bench_common.run(measure)


if __name__ == "__main__":
  app.run(main)
