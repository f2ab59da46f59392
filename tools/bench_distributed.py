"""Benchmark 9: the all-reduce overhead per train step on 2 local workers vs 1 (char LM), and the numbers of the
model of the step time on N hosts in tools/BENCHMARKS.md.

    python tools/bench_distributed.py             # full run (~1-2 min): starts 2 local worker processes
    python tools/bench_distributed.py --quick     # tiny char LM, one round

The program starts itself as 2 workers (TF_CONFIG, free localhost ports, MultiWorkerMirroredStrategy); each
builds, in interleaved rounds (the same order on both, as collectives need):

- ``dist``: the engine's distributed train step (:func:`returnn_rc.engine.train_graph.build_train_graph` with the
  strategy) on a global batch of ``B`` sequences, each worker computing its ``B/2``;
- ``single``: the single-process train step on the same global batch (its own local session);
- ``allreduce``: the batched all-reduce alone, of one float32 buffer of the model's parameter count.

Reported by the chief: the times, ``dist / single`` and ``allreduce / single``. On one machine the 2
workers share its cores (and memory bandwidth): the ratio bounds the overhead from above; the model in
BENCHMARKS.md separates compute and communication.
"""

import json
import os
import subprocess
import sys
from typing import List

import numpy as np
import tensorflow as tf
from absl import app, flags

from graphs import char_lm
from returnn_rc import graph_module as rc_graph_module
from returnn_rc.engine import distributed
from returnn_rc.engine.train_graph import GlobalBatch, TrainGraphConfig, _all_reduce_sum, build_train_graph

import bench_common
from bench_common import Row

flags.adopt_module_key_flags(bench_common)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size (sequences).")
STEPS = flags.DEFINE_integer("steps", 10, "Train steps per round and variant.")


def _graph(strategy):
  batches = bench_common.char_lm_batches(8, BATCH_SIZE.value, bench_common.SEED.value)
  graph = tf.Graph()
  with graph.as_default():
    init, batch = bench_common.batch_iterator(batches, fixed_shape=False)
    batch = dict(batch)
    cfg = TrainGraphConfig(seed=bench_common.SEED.value, train_flag=True)
    if strategy is None:
      extern = rc_graph_module.extern_data_template(char_lm)
      from returnn_rc.engine import data as rc_data  # pylint: disable=import-outside-toplevel

      tg = build_train_graph(char_lm, rc_data.extern_data_from_batch(extern, batch), cfg)
    else:
      gb = GlobalBatch(template=lambda: rc_graph_module.extern_data_template(char_lm), batch=batch)
      tg = build_train_graph(char_lm, gb, cfg, strategy=strategy)
    num_params = int(sum(np.prod(v.shape) for v in tf.compat.v1.trainable_variables()))
    fetches = [tg.train_op, tg.report]
    allreduce = None
    if strategy is not None:
      out = strategy.extended.call_for_each_replica(
        tf.autograph.experimental.do_not_convert(lambda: _all_reduce_sum([tf.ones([num_params], tf.float32)]))
      )
      allreduce = tf.nest.map_structure(lambda x: strategy.experimental_local_results(x)[0], out)
  return graph, init, tg, fetches, allreduce, num_params


def worker():
  dist = distributed.multi_worker()
  graph_d, init_d, tg_d, fetch_d, allreduce, num_params = _graph(dist.strategy)
  graph_s, init_s, tg_s, fetch_s, _, _ = _graph(None)
  sess_d = tf.compat.v1.Session(dist.target, graph=graph_d, config=dist.session_config)
  sess_s = tf.compat.v1.Session(graph=graph_s)
  for sess, tg, init in ((sess_d, tg_d, init_d), (sess_s, tg_s, init_s)):
    sess.run([tg.init_op, init])
  steps = STEPS.value
  times = bench_common.interleaved(
    {
      "dist": lambda: bench_common.run_steps(sess_d, fetch_d, {}, steps),
      "single": lambda: bench_common.run_steps(sess_s, fetch_s, {}, steps),
      "allreduce": lambda: bench_common.run_steps(sess_d, allreduce, {}, steps),
    },
    bench_common.ROUNDS.value,
  )
  if dist.is_chief:
    med = {k: bench_common.median(v) for k, v in times.items()}
    rows = [
      Row("9a", f"char LM train step, 1 process, global batch {BATCH_SIZE.value}", bench_common.ms(med["single"])),
      Row(
        "9b",
        f"char LM train step, 2 local workers x {BATCH_SIZE.value // 2} (MWMS)",
        bench_common.ms(med["dist"]),
        bench_common.paired_ratio(times, "dist", "single"),
      ),
      Row(
        "9c",
        f"all-reduce alone: {num_params} float32 parameters = {4 * num_params / 1e6:.2f} MB, 2 workers",
        bench_common.ms(med["allreduce"]),
        bench_common.paired_ratio(times, "allreduce", "single"),
      ),
    ]
    print(json.dumps({"rows": [list(r) for r in rows]}), flush=True)
  sess_d.close()
  sess_s.close()


def measure() -> List[Row]:
  ports = distributed.free_ports(2)
  workers = [f"localhost:{p}" for p in ports]
  procs = []
  for i in range(2):
    env = dict(os.environ, TF_CONFIG=distributed.ClusterSpec(workers=workers, index=i).tf_config())
    procs.append(
      subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
        env=env,  # pylint: disable=consider-using-with
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outs = [p.communicate(timeout=1800) for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    if p.returncode:
      raise RuntimeError(f"worker {i} failed (exit code {p.returncode}):\n{err[-3000:]}")
  line = [ln for ln in outs[0][0].splitlines() if ln.startswith('{"rows"')][0]
  return [Row(*r) for r in json.loads(line)["rows"]]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if os.environ.get("TF_CONFIG"):
    with bench_common.quick(steps=1, batch_size=4):
      worker()
    return
  with bench_common.quick(steps=1, batch_size=4):
    bench_common.run(measure)


if __name__ == "__main__":
  app.run(main)
