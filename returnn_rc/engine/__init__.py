"""Training: data → one training graph → session loop → reporting, learning-rate control, checkpoints.

- :mod:`~returnn_rc.engine.records`: the on-disk format (TFRecord files of ``tf.train.Example``s);
- :mod:`~returnn_rc.engine.data`: sequences (in memory, or streamed from files) → length-bucketed padded
  ``tf.data`` batches, split per worker;
- :mod:`~returnn_rc.engine.train_graph`: the ONE training-graph builder (engine, suites, benchmarks);
- :mod:`~returnn_rc.engine.updates`: optimizer, decoupled weight decay, clipping, exact gradient accumulation;
- :mod:`~returnn_rc.engine.lr_schedule`: learning-rate warm-up and schedules of the global step;
- :mod:`~returnn_rc.engine.hooks`: ``SessionRunHook``s in the train loop;
- :mod:`~returnn_rc.engine.evaluation`: exact figures of a checkpoint on a data set (read-only);
- :mod:`~returnn_rc.engine.engine`: :class:`Engine`, the session loop (train / evaluate / forward);
- :mod:`~returnn_rc.engine.history`: per-epoch results, the epoch table, TensorBoard scalars;
- :mod:`~returnn_rc.engine.lr_control`: Newbob learning-rate control keyed by a loss name;
- :mod:`~returnn_rc.engine.checkpoints`: checkpoints of one model in a train dir (TF's ``Saver`` rotation, resume
  from the newest one that restores, the engine's own file names for ``fresh``);
- :mod:`~returnn_rc.engine.best_checkpoints`: the best N checkpoints by a dev figure.
"""

from returnn_rc.engine.distributed import Distribution, WorkerLostError
from returnn_rc.engine.engine import Engine, EngineConfig, NonFiniteLossError
from returnn_rc.engine.train_graph import TrainGraph, TrainGraphConfig, build_train_graph, dense_gradients
from returnn_rc.graph_module import check_graph_module, graph_name_of, load_graph_module

__all__ = [
  "Distribution",
  "WorkerLostError",
  "Engine",
  "EngineConfig",
  "NonFiniteLossError",
  "TrainGraph",
  "TrainGraphConfig",
  "build_train_graph",
  "check_graph_module",
  "dense_gradients",
  "graph_name_of",
  "load_graph_module",
]
