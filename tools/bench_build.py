"""Benchmark 5: build time and op count of the train graph of each graph module in ``graphs/``.

    python tools/bench_build.py               # full run (~10 s)
    python tools/bench_build.py --quick       # one build per module

What the engine builds on top of its input (:func:`returnn_rc.engine.train_graph.build_train_graph`:
graph state, model, losses, Adam, learning-rate variables, forward outputs, saver), on placeholders
for the extern data (:func:`returnn_rc.graph_module.make_placeholders`); the engine's ``tf.data``
input pipeline is not included. Median of ``--repeats`` builds, each in a fresh graph.
"""

import time
from typing import List

import tensorflow as tf
from absl import app, flags

from returnn_rc import graph_module as rc_graph_module
from returnn_rc.engine.train_graph import TrainGraphConfig, build_train_graph

import bench_common
import graph_names
from bench_common import Row

flags.adopt_module_key_flags(bench_common)
REPEATS = flags.DEFINE_integer("repeats", 3, "Builds per graph module (the median is reported).")


def build(module) -> tf.Graph:
  """The train graph of ``module`` on placeholders, in a fresh graph."""
  graph = tf.Graph()
  with graph.as_default():
    extern_data = rc_graph_module.extern_data_template(module)
    rc_graph_module.make_placeholders(extern_data)
    build_train_graph(module, extern_data, TrainGraphConfig(seed=bench_common.SEED.value))
  return graph


def measure() -> List[Row]:
  """Median build time and op count of each graph module's train graph."""
  rows = []
  for name in graph_names.available():
    module = graph_names.load(name)
    secs, graph = [], None
    for _ in range(REPEATS.value):
      start = time.perf_counter()
      graph = build(module)
      secs.append(time.perf_counter() - start)
    rows.append(
      Row(
        f"5 {name}",
        f"train graph build of graphs/{name}.py: time, ops",
        f"{bench_common.ms(bench_common.median(secs))}, {len(graph.get_operations())} ops",
      )
    )
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if REPEATS.value < 1:
    raise app.UsageError(f"--repeats must be >= 1, got {REPEATS.value}")
  with bench_common.quick(repeats=1):
    bench_common.run(measure)


if __name__ == "__main__":
  app.run(main)
