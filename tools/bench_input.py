r"""Input pipeline figures: throughput of record files vs ``from_generator``, and peak memory vs corpus size.

  python tools/bench_input.py --mode=throughput           # ~2 min on 2 cores
  python tools/bench_input.py --mode=memory --scale=20    # trains char_lm 4 times: ~20 min on 2 cores

Corpus: ``graphs/char_lm``'s default train data (6000 lines of the Python stdlib; dev: 500 lines).
A corpus ``--scale`` times that size repeats it with each copy's characters shifted (same lengths,
other text): copy ``r`` maps char id ``c`` to ``1 + (c - 1 + r) % 95`` (BOS/EOS stay 0).

``--mode=throughput``: sequences/s of one epoch of each pipeline, iterated without a model
(``Session.run(get_next())`` per batch, as the engine does, batch size 32, shuffled, length
buckets): the in-memory ``from_generator`` path (:func:`returnn_rc.engine.data.make_dataset`) vs
record files (:func:`returnn_rc.engine.data.make_file_dataset`, 8 shards), same corpus, same
process; ``--repeats`` interleaved epochs each, medians. Also the time of the scan that checks the
files before training (:func:`returnn_rc.engine.data.scan_files`).

``--mode=memory``: peak RSS (``ru_maxrss`` of the child from ``os.wait4``) of training char_lm for
one epoch (``--max_steps`` caps it; 0: the whole epoch) in a fresh process, from files of the 1x and
the ``--scale``x corpus, and in memory (the lists of the 1x and the ``--scale``x corpus), rounds
interleaved, medians.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

import graph_names

graph_names.ensure_repo_root_on_path()

_MODE = flags.DEFINE_enum("mode", "throughput", ["throughput", "memory", "child"], "What to measure.")
_SCALE = flags.DEFINE_integer("scale", 20, "Size of the large corpus, in multiples of the default one.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved epochs per pipeline (throughput).", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Interleaved rounds of the four training runs (memory).", lower_bound=1)
_MAX_STEPS = flags.DEFINE_integer(
  "max_steps", 0, "Stop each training run after this many steps (0: one epoch).", lower_bound=0
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sequences per batch.", lower_bound=1)
_SHARDS = flags.DEFINE_integer("num_shards", 8, "Record files per corpus.", lower_bound=1)
_CORPUS_SEQS = flags.DEFINE_integer(
  "corpus_seqs",
  None,
  "Use only the first N sequences of the default corpus (a quick smoke run); default: all 6000.",
  lower_bound=1,
)
_WORK_DIR = flags.DEFINE_string(
  "work_dir", None, "Directory for the corpora and train dirs (default: a temp dir, removed afterwards)."
)
# child mode
_SOURCE = flags.DEFINE_enum("source", "files", ["files", "memory"], "child: where the train data comes from.")
_TRAIN_GLOB = flags.DEFINE_string("train_glob", None, "child: record files of the train data.")
_DEV_GLOB = flags.DEFINE_string("dev_glob", None, "child: record files of the dev data.")
_TRAIN_DIR = flags.DEFINE_string("train_dir", None, "child: train dir.")


def corpus(scale: int):
  """The char_lm default train data repeated ``scale`` times, copy ``r`` with its characters shifted by ``r``."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from graphs import char_lm  # pylint: disable=import-outside-toplevel

  base = char_lm.default_data("train", max_seqs=_CORPUS_SEQS.value)
  out = []
  for r in range(scale):
    for seq in base:
      ids = seq["data"]
      shifted = np.where(ids == char_lm.BOS_EOS, ids, 1 + (ids - 1 + r) % (char_lm.VOCAB_SIZE - 1))
      out.append({"data": shifted.astype(np.int32)})
  return out


def _write(path, seqs, num_shards, prefix):
  from graphs import char_lm  # pylint: disable=import-outside-toplevel
  from returnn_rc.engine import records  # pylint: disable=import-outside-toplevel

  records.write_shards(
    path,
    char_lm.extern_data_template(),
    seqs,
    num_shards=num_shards,
    prefix=prefix,
    graph_name="char_lm",
    overwrite=True,
  )
  return os.path.join(path, f"{prefix}-*")


def _epoch_seconds(session, iterator, nxt, order_seed, epoch):
  start = time.perf_counter()
  session.run(iterator.initializer, {order_seed: epoch})
  seqs = 0
  while True:
    try:
      batch = session.run(nxt)
    except Exception as exc:  # pylint: disable=broad-except
      if type(exc).__name__ == "OutOfRangeError":
        break
      raise
    seqs += len(batch["data"])
  return time.perf_counter() - start, seqs


def throughput(work_dir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from graphs import char_lm  # pylint: disable=import-outside-toplevel
  from returnn_rc.engine import data  # pylint: disable=import-outside-toplevel

  seqs = corpus(1)
  pattern = _write(os.path.join(work_dir, "x1"), seqs, _SHARDS.value, "train")
  template = char_lm.extern_data_template()
  scan_secs = []
  for _ in range(3):  # the first includes TensorFlow's one-time start-up (tracing, thread pools)
    start = time.perf_counter()
    files = data.scan_files(pattern, template, what="bench")
    scan_secs.append(time.perf_counter() - start)
  scan_sec = statistics.median(scan_secs[1:])
  size_mb = sum(os.path.getsize(f) for f in files.files) / 1e6
  graph = tf.Graph()
  with graph.as_default():
    order = tf.compat.v1.placeholder(tf.int64, ())
    pipelines = {
      "from_generator (memory)": data.make_dataset(
        template, seqs, batch_size=_BATCH_SIZE.value, order_seed=order, shuffle=True, seed=1
      ),
      "record files": data.make_file_dataset(
        template, files, batch_size=_BATCH_SIZE.value, order_seed=order, shuffle=True, seed=1
      ),
    }
    iterators = {k: tf.compat.v1.data.make_initializable_iterator(ds) for k, ds in pipelines.items()}
    nexts = {k: it.get_next() for k, it in iterators.items()}
  rates = {k: [] for k in pipelines}
  with tf.compat.v1.Session(graph=graph) as session:
    for k in pipelines:  # warm-up epoch each
      _epoch_seconds(session, iterators[k], nexts[k], order, 0)
    for epoch in range(1, _REPEATS.value + 1):
      for k in pipelines:
        sec, n = _epoch_seconds(session, iterators[k], nexts[k], order, epoch)
        assert n == len(seqs), (k, n)
        rates[k].append(n / sec)
  med = {k: statistics.median(v) for k, v in rates.items()}
  print(
    f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; char_lm train data: {len(seqs)} sequences, "
    f"{_SHARDS.value} record files, {size_mb:.1f} MB; batch size {_BATCH_SIZE.value}, shuffled, length buckets; "
    f"{_REPEATS.value} interleaved epochs each"
  )
  for k, v in rates.items():
    print(f"  {k:24s} median {med[k]:9.0f} seqs/s   (runs: {', '.join(f'{x:.0f}' for x in v)})")
  print(f"  ratio files / from_generator: {med['record files'] / med['from_generator (memory)']:.1f}x (target >= 3x)")
  print(
    f"  scan of the files before training (schemas, every record parsed and checked, length histogram): "
    f"{scan_sec:.2f} s ({len(seqs) / scan_sec:.0f} seqs/s, {size_mb / scan_sec:.1f} MB/s; first call in the "
    f"process {scan_secs[0]:.2f} s)"
  )


def child():
  """One training run (this process's peak RSS is what the parent measures)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  tf.get_logger().setLevel("ERROR")
  from graphs import char_lm  # pylint: disable=import-outside-toplevel
  from returnn_rc import engine  # pylint: disable=import-outside-toplevel

  kwargs = dict(train_dir=_TRAIN_DIR.value, num_epochs=1, batch_size=_BATCH_SIZE.value, fresh=True, log_every_secs=1e9)
  given = {}
  if _SOURCE.value == "files":
    kwargs.update(train_data=_TRAIN_GLOB.value, dev_data=_DEV_GLOB.value)
  else:
    given = dict(train_data=corpus(_SCALE.value))
  hooks = [tf.compat.v1.train.StopAtStepHook(last_step=_MAX_STEPS.value)] if _MAX_STEPS.value else None
  start = time.time()
  with engine.Engine(char_lm, engine.EngineConfig(**kwargs), hooks=hooks, **given) as eng:
    eng.train()
    steps, num = eng.step, eng.num_seqs["train"]
  with open("/proc/self/status", encoding="utf-8") as f:
    hwm = [line.split()[1] for line in f if line.startswith("VmHWM")][0]
  print(
    f"CHILD source={_SOURCE.value} scale={_SCALE.value} seqs={num} steps={steps} sec={time.time() - start:.0f} "
    f"VmHWM_kB={hwm}"
  )


def _run_child(source, scale, train_glob, dev_glob, train_dir):
  args = [
    sys.executable,
    os.path.abspath(__file__),
    "--mode=child",
    f"--source={source}",
    f"--scale={scale}",
    f"--train_dir={train_dir}",
    f"--max_steps={_MAX_STEPS.value}",
    f"--batch_size={_BATCH_SIZE.value}",
  ]
  if _CORPUS_SEQS.value:
    args.append(f"--corpus_seqs={_CORPUS_SEQS.value}")
  if source == "files":
    args += [f"--train_glob={train_glob}", f"--dev_glob={dev_glob}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  _, status, usage = os.wait4(proc.pid, 0)
  out, err = proc.stdout.read(), proc.stderr.read()
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{err[-3000:]}")
  line = [x for x in out.splitlines() if x.startswith("CHILD")][-1]
  return usage.ru_maxrss / 1024.0, line  # MiB (Linux: ru_maxrss in KiB)


def memory(work_dir):
  base = corpus(1)
  from graphs import char_lm  # pylint: disable=import-outside-toplevel

  dev = _write(os.path.join(work_dir, "dev"), char_lm.default_data("dev"), 1, "dev")
  globs = {1: _write(os.path.join(work_dir, "x1"), base, _SHARDS.value, "train")}
  big = corpus(_SCALE.value)
  globs[_SCALE.value] = _write(os.path.join(work_dir, f"x{_SCALE.value}"), big, _SHARDS.value, "train")
  del big
  runs = [("files", 1), ("files", _SCALE.value), ("memory", 1), ("memory", _SCALE.value)]
  peaks = {r: [] for r in runs}
  for rnd in range(_ROUNDS.value):
    for source, scale in runs:
      peak, line = _run_child(source, scale, globs.get(scale), dev, os.path.join(work_dir, f"td-{source}-{scale}"))
      peaks[(source, scale)].append(peak)
      print(f"round {rnd + 1}: peak RSS {peak:7.1f} MiB  {line}", flush=True)
  med = {r: statistics.median(v) for r, v in peaks.items()}
  steps = f"first {_MAX_STEPS.value} steps of epoch 1" if _MAX_STEPS.value else "one epoch + dev evaluation"
  print(
    f"\nchar_lm, batch size {_BATCH_SIZE.value}, {steps}; peak RSS of the training process, median of "
    f"{_ROUNDS.value} round(s):"
  )
  for source in ("files", "memory"):
    small, large = med[(source, 1)], med[(source, _SCALE.value)]
    growth = 100 * (large / small - 1)
    print(
      f"  {source:6s}  1x: {small:7.1f} MiB   {_SCALE.value}x: {large:7.1f} MiB   growth {growth:+.1f}%"
      + ("  (target: within 20%)" if source == "files" else "")
    )


def main(argv):
  del argv
  if _MODE.value == "child":
    child()
    return
  work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="returnn_rc_bench_input_")
  try:
    if _MODE.value == "throughput":
      throughput(work_dir)
    else:
      memory(work_dir)
  finally:
    if _WORK_DIR.value is None:
      shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
