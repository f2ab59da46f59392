"""Benchmark of packed frames all the way up (``returnn_rc.packing``): train steps packed vs not.

    python tools/bench_packing.py              # full run (~4 min on 2 CPU cores)
    python tools/bench_packing.py --quick      # tiny sizes, one round (smoke test; numbers meaningless)

Graph mode, one process; variants of one comparison run side by side in interleaved rounds (one
untimed warm-up round, then A, B, C / B, C, A / ...), ``--steps`` train steps per variant and round.
A time is the median of the per-round mean step times, a ratio the median of the per-round ratios.

1. ``model``: ``[B=32, T=150]`` ids -> embedding (V=3000, 128) -> dense 256 (ReLU) -> output projection
   to V=3000 -> sparse softmax cross-entropy, lengths uniform in ``[0.2T, T]`` (about 40 % padding);
   train step = forward + backward + SGD. Variants, each its own graph with the same weights:
   ``packed`` (default: the rewrite), ``values`` (only the loss values packed: the rewrite switched
   off) and ``unpacked`` (``use_flatten_frames=False``). Target: unpacked / packed >= 1.5.
2. ``goldens``: every graph of ``graphs/`` with the engine's length-bucketed batches (little padding):
   the golden harness's train step (SGD, report fetches) with the rewrite vs without. Target: no
   slower (ratio >= 0.95, the noise of one run).
3. ``xla``: the model of part 1 and the goldens inside ``jit_scope`` (as ``EngineConfig(xla=True)``),
   rewrite forced on vs off; all batches padded to one shape (one compilation each); the packed
   size is a dynamic dim under XLA. Decides :data:`returnn_rc.packing.switch.XLA_DEFAULT`.

Letters: ``B`` batch, ``T`` time, ``V`` vocabulary, ``N`` packed frames.
"""

import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout: makes returnn_rc, graphs and tests importable
  sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_XLA_FLAGS", "--tf_xla_enable_lazy_compilation=false")

from absl import app, flags  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import tensorflow as tf  # pylint: disable=wrong-import-position

import returnn_rc as rc  # pylint: disable=wrong-import-position
from returnn_rc import data as rc_data  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Tiny sizes, one round of one step: a smoke test, the numbers are meaningless.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per comparison (after one warm-up round).")
flags.DEFINE_integer("steps", 3, "Train steps per variant and round.")
flags.DEFINE_list("parts", ["model", "goldens", "xla"], "Parts to run: model (1), goldens (2), xla (3).")
flags.DEFINE_integer("seed", 42, "Seed of weights, lengths and data order.")

TARGET_MODEL = 1.5
TARGET_GOLDENS = 0.95


# --- timing -------------------------------------------------------------------------------------

def interleaved(variants: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, List[float]]:
  """name -> per-round mean step seconds; one untimed warm-up round, then rotating order."""
  names = list(variants)
  for name in names:
    variants[name]()
  times: Dict[str, List[float]] = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      times[name].append(variants[name]())
  return times


def ratio(times: Dict[str, List[float]], num: str, den: str) -> float:
  """Median over rounds of num's time / den's time in the same round."""
  return float(statistics.median([a / b for a, b in zip(times[num], times[den])]))


def ms(times: List[float]) -> str:
  return f"{statistics.median(times) * 1e3:.1f} ms"


def stepper(sess: tf.compat.v1.Session, fetches, feeds: Sequence[Dict], steps: int) -> Callable[[], float]:
  """A round: ``steps`` runs of ``fetches`` cycling over ``feeds``; returns mean seconds per step."""
  state = {"k": 0}

  def run() -> float:
    start = time.perf_counter()
    for _ in range(steps):
      sess.run(fetches, feeds[state["k"] % len(feeds)])
      state["k"] += 1
    return (time.perf_counter() - start) / steps

  return run


# --- part 1: the [B,T] model ----------------------------------------------------------------------

def model_sizes() -> Tuple[int, int, int, int, int]:
  """(B, T, V, E, H)."""
  return (4, 12, 50, 8, 16) if FLAGS.quick else (32, 150, 3000, 128, 256)


def build_model(variant: str, *, xla: bool = False):
  """Graph of the part-1 model; variant ``packed`` / ``values`` / ``unpacked``. Returns (graph, fetches,
  placeholders, init op, flatten-op count)."""
  batch, _, vocab, emb_dim, hidden = model_sizes()
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(FLAGS.seed)
    ids = tf.compat.v1.placeholder(tf.int32, [None, None], name="ids")
    targets = tf.compat.v1.placeholder(tf.int32, [None, None], name="targets")
    lens = tf.compat.v1.placeholder(tf.int32, [None], name="lens")
    init = tf.compat.v1.glorot_uniform_initializer(seed=FLAGS.seed)
    emb = tf.compat.v1.get_variable("emb", [vocab, emb_dim], initializer=init)
    w1 = tf.compat.v1.get_variable("w1", [emb_dim, hidden], initializer=init)
    b1 = tf.compat.v1.get_variable("b1", [hidden], initializer=tf.compat.v1.zeros_initializer())
    w2 = tf.compat.v1.get_variable("w2", [hidden, vocab], initializer=init)
    b2 = tf.compat.v1.get_variable("b2", [vocab], initializer=tf.compat.v1.zeros_initializer())
    time_dim = rc.Dim(lens, name="time")
    switch = rc.packing.enabled(variant == "packed")
    jit = tf.xla.experimental.jit_scope() if xla else _null()
    with switch, jit:
      ctx = rc.init_train_step_run_ctx(train_flag=True)
      x = tf.nn.embedding_lookup(emb, ids)  # [B,T,E]
      h = tf.nn.relu(tf.tensordot(x, w1, [[2], [0]]) + b1)  # [B,T,H] (what tf.layers.dense writes)
      logits = tf.reshape(tf.matmul(tf.reshape(h, [-1, hidden]), w2), tf.concat([tf.shape(h)[:2], [vocab]], 0)) + b2
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)  # [B,T]
      ctx.mark_as_loss(rc.Tensor("ce", [rc.batch_dim, time_dim], "float32", raw_tensor=ce), "ce",
                       use_flatten_frames=variant != "unpacked")
      loss = ctx.total_loss().get_raw()
      summed = ctx.losses["ce"].get_summed_loss().get_raw()
      train = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss)
      rc.reset_run_ctx()
    fetches = {"train": train, "summed": summed}
    init_op = tf.compat.v1.global_variables_initializer()
    count = sum(op.type == "FlattenWithSeqLenMask" for op in graph.get_operations())
  graph.finalize()
  return graph, fetches, (ids, targets, lens), init_op, count


class _null:  # pylint: disable=invalid-name
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def model_batches(num: int, rng: np.random.Generator) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
  batch, time_len, vocab, _, _ = model_sizes()
  out = []
  for _ in range(num):
    lens = rng.integers(max(1, int(0.2 * time_len)), time_len + 1, size=batch).astype(np.int32)
    ids = rng.integers(0, vocab, size=[batch, time_len]).astype(np.int32)
    out.append((ids, np.roll(ids, -1, axis=1), lens))
  return out


def part_model(xla: bool = False) -> List[str]:
  rng = np.random.default_rng(FLAGS.seed)
  data = model_batches(4, rng)
  padding = 1 - float(np.mean([b[2].mean() for b in data])) / model_sizes()[1]
  variants, losses, counts = {}, {}, {}
  names = ("packed", "values", "unpacked") if not xla else ("packed", "values")
  for name in names:
    graph, fetches, (ids, targets, lens), init_op, count = build_model(name, xla=xla)
    sess = tf.compat.v1.Session(graph=graph)
    sess.run(init_op)
    feeds = [{ids: a, targets: b, lens: c} for a, b, c in data]
    losses[name] = sess.run(fetches["summed"], feeds[0])
    counts[name] = count
    variants[name] = stepper(sess, fetches, feeds, FLAGS.steps)
  times = interleaved(variants, FLAGS.rounds)
  b, t, v, _, _ = model_sizes()
  tag = "xla " if xla else ""
  rows = [f"| {tag}model [{b},{t}] V={v}, {padding:.0%} padding | " + ", ".join(
      f"{n} {ms(times[n])}" for n in names) + " | info |"]
  if xla:
    r = ratio(times, "values", "packed")
    rows.append(f"| xla model: values-only / packed | {r:.2f}x | info |")
  else:
    r = ratio(times, "unpacked", "packed")
    rows.append(f"| model: unpacked / packed (target >= {TARGET_MODEL}) | {r:.2f}x | "
                f"{'PASS' if r >= TARGET_MODEL else 'MISS'} |")
    rows.append(f"| model: values-only / packed | {ratio(times, 'values', 'packed'):.2f}x | info |")
  rows.append(f"| {tag}model: summed loss packed vs others (first batch) | " + ", ".join(
      f"{n} {losses[n]:.4f}" for n in names) + " | info |")
  return rows


# --- parts 2 and 3: the goldens ---------------------------------------------------------------------

def golden_batches(name: str, num: int, *, pad_to_bucket_boundary: bool) -> List[Dict[str, np.ndarray]]:
  """The first ``num`` batches of the engine's bucketed pipeline over the golden's train data."""
  from tests.conformance import goldens  # pylint: disable=import-outside-toplevel
  mod = goldens.module(name)
  seqs = goldens.data(name, "train", num_seqs=64 if FLAGS.quick else 1500)
  template = mod.extern_data_template()
  with tf.Graph().as_default():
    order = tf.compat.v1.placeholder(tf.int64, ())
    ds = rc_data.make_dataset(template, seqs, batch_size=32, order_seed=order, shuffle=True, seed=FLAGS.seed,
                              pad_to_bucket_boundary=pad_to_bucket_boundary)
    it = tf.compat.v1.data.make_initializable_iterator(ds.take(num))
    nxt = it.get_next()
    out = []
    with tf.compat.v1.Session() as sess:
      sess.run(it.initializer, feed_dict={order: 1})
      for _ in range(num):
        try:
          out.append(sess.run(nxt))
        except tf.errors.OutOfRangeError:
          break
  return out


def part_goldens(xla: bool = False) -> List[str]:
  from tests.conformance import goldens  # pylint: disable=import-outside-toplevel
  rows = []
  for name in goldens.names():
    batches = golden_batches(name, 2 if FLAGS.quick else 8, pad_to_bucket_boundary=xla)
    if xla:  # one shape: every batch padded to the longest
      batches = [b for b in batches if all(b[k].shape == batches[0][k].shape for k in b)] or batches[:1]
    variants, counts = {}, {}
    for on in (True, False):
      with rc.packing.enabled(on):
        built = goldens.build(name, xla=xla)
      sess = tf.compat.v1.Session(graph=built.graph)
      sess.run(built.init_op)
      feeds = []
      for b in batches:
        feed = {ph: b[k] for k, ph in built.inputs.items()}
        for (k, axis), ph in built.sizes.items():
          feed[ph] = b[rc_data.size_key(k, axis)]
        feed.update(built.gs.feed_dict(train=True))
        feeds.append(feed)
      fetches = {"train": built.train_op, "report": built.report}
      key = "rewrite" if on else "values"
      counts[key] = sum(op.type == "FlattenWithSeqLenMask" for op in built.graph.get_operations())
      variants[key] = stepper(sess, fetches, feeds, FLAGS.steps)
    times = interleaved(variants, FLAGS.rounds)
    r = ratio(times, "values", "rewrite")
    pad = np.mean([1 - b[rc_data.size_key(next(iter(built.inputs)), 1)].sum() / b[next(iter(built.inputs))].size
                   for b in batches])
    verdict = "info" if xla else ("PASS" if r >= TARGET_GOLDENS else "MISS")
    rows.append(f"| {'xla ' if xla else ''}{name} ({pad:.0%} padding, flatten ops {counts['rewrite']} vs "
                f"{counts['values']}): rewrite {ms(times['rewrite'])}, values-only {ms(times['values'])} | "
                f"{r:.2f}x | {verdict} |")
  return rows


def main(argv):
  del argv
  tf.compat.v1.disable_eager_execution()
  if FLAGS.quick:
    FLAGS.rounds, FLAGS.steps = 1, 1
  rows = ["| figure | value (ratio > 1: packed faster) | result |", "| --- | --- | --- |"]
  if "model" in FLAGS.parts:
    rows += part_model()
  if "goldens" in FLAGS.parts:
    rows += part_goldens()
  if "xla" in FLAGS.parts:
    rows += part_model(xla=True)
    rows += part_goldens(xla=True)
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
