"""Evaluation of a checkpoint on a data set: the exact ``Σ summed / Σ inv_norm`` of every loss.

:func:`evaluate_checkpoint` builds the training graph of the graph module with the engine's one
builder (:func:`returnn_rc.engine.train_graph.build_train_graph`) on the engine's input pipeline
(record files or in-memory sequences, in their order, length-bucketed), restores the model's
variables from the checkpoint **read-only** (nothing is written anywhere near it; optimizer slots
and other training state in the checkpoint are ignored), and runs every batch once with the train
flag off (no dropout, no update), adding up each loss's summed loss and inverse norm factor.
Batching does not change the figures: the same sequences from files and from memory give the
same figures up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Union

import tensorflow as tf

from returnn_rc import checkpoint_compat
from returnn_rc import graph_module as _graph_module
from returnn_rc.engine import data as _data
from returnn_rc.engine.train_graph import TrainGraphConfig, build_train_graph
from returnn_rc.reporting import EpochAccumulator, ratio


@dataclasses.dataclass
class Evaluation:
  """The result of :func:`evaluate_checkpoint`.

  Attributes:
    graph: the graph module's name.
    checkpoint: the checkpoint prefix evaluated.
    data: what was evaluated (the file pattern, or ``"default_data('dev')"`` / ``"sequences"``).
    num_seqs / num_batches: sequences and batches evaluated.
    losses: name → ``{"summed": Σ summed, "inv_norm": Σ inv_norm, "figure": their ratio, "as_error": bool}``.
    skipped_records: corrupt records skipped (``skip_corrupt_records``).
  """

  graph: str
  checkpoint: str
  data: str
  num_seqs: int
  num_batches: int
  losses: Dict[str, Dict[str, Any]]
  skipped_records: int = 0

  def figures(self) -> Dict[str, float]:
    """name → Σ summed / Σ inv_norm."""
    return {name: v["figure"] for name, v in self.losses.items()}

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def table(self) -> str:
    """A plain-text table: loss, Σ summed, Σ inv_norm, figure (``(err)`` marks ``as_error`` losses)."""
    cols = ["loss", "summed", "inv_norm", "figure"]
    rows = [
      [f"{name}(err)" if v["as_error"] else name, f"{v['summed']:.6g}", f"{v['inv_norm']:.6g}", f"{v['figure']:.6f}"]
      for name, v in self.losses.items()
    ]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def model_saver(variables: Sequence[tf.Variable], path: str) -> tf.compat.v1.train.Saver:
  """A Saver restoring every variable of ``variables`` that checkpoint ``path`` holds (the others keep
  their initial values: optimizer slots of another optimizer, accumulators); ``ValueError`` naming the
  trainable variables it lacks or holds with another shape or dtype (the one check of
  :mod:`returnn_rc.checkpoint_compat`). Build it before ``graph.finalize()``."""
  trainable = set(tf.compat.v1.trainable_variables())
  optional = [v.op.name for v in variables if v not in trainable]
  restore = checkpoint_compat.restorable_variables(path, variables, what="the graph's model", optional=optional)
  return tf.compat.v1.train.Saver(var_list=restore)


def evaluate_checkpoint(
  module: Any,
  checkpoint: str,
  *,
  data: Union[None, str, Sequence[str]] = None,
  seqs: Optional[Sequence] = None,
  split: str = "dev",
  batch_size: int = 32,
  seed: int = 42,
  skip_corrupt_records: bool = False,
  max_seqs: Optional[int] = None,
) -> Evaluation:
  """Exact figures of every loss of ``module`` restored from ``checkpoint``.

  Args:
    module: a graph module.
    checkpoint: a Saver prefix, or a directory (its latest checkpoint; ``<train_dir>/best`` for the best).
    data: a glob (or list of globs) of record files (or of the module's own format); else ``seqs``;
      else ``default_data(split)``.
    seqs: in-memory sequences.
    split: the ``default_data`` split when neither ``data`` nor ``seqs`` is given.
    batch_size: sequences per batch (does not change the figures).
    seed: the graph seed (irrelevant with the train flag off, kept for symmetry with the engine).
    skip_corrupt_records: skip corrupt records instead of refusing the files.
    max_seqs: evaluate at most this many sequences (the first ones).
  """
  _graph_module.check_graph_module(module)
  name = _graph_module.graph_name_of(module)
  path = checkpoint_compat.resolve_checkpoint(checkpoint)
  template = _graph_module.extern_data_template(module)
  files = None
  if data is not None:
    if seqs is not None:
      raise ValueError("give data (files) or seqs, not both")
    files = _data.scan_files(
      data,
      template,
      what=f"graph {name!r} evaluation data",
      graph_name=name,
      skip_corrupt=skip_corrupt_records,
      reader=_data.dataset_hook(module),
    )
    what = str(data)
  else:
    what = "sequences" if seqs is not None else f"default_data({split!r})"
    seqs = list(seqs) if seqs is not None else _graph_module.default_data(module, split)
    if max_seqs is not None:
      seqs = seqs[:max_seqs]
    _data.check_data(template, seqs, what=f"graph {name!r} evaluation data")
  graph = tf.Graph()
  with graph.as_default():
    order_seed = tf.compat.v1.placeholder_with_default(tf.constant(1, tf.int64), (), name="epoch_order_seed")
    opts = dict(batch_size=batch_size, order_seed=order_seed, shuffle=False, seed=seed)
    if files is not None:
      ds = _data.make_file_dataset(template, files, max_seqs=max_seqs, **opts)
    else:
      ds = _data.make_dataset(template, seqs, **opts)
    iterator = tf.compat.v1.data.make_initializable_iterator(ds)
    extern_data = _data.extern_data_from_batch(template, iterator.get_next())
    tg = build_train_graph(module, extern_data, TrainGraphConfig(seed=seed))
    num_in_batch = tf.shape(extern_data[list(template)[0]].get_raw())[0]
    saver = model_saver(tg.variables, path)
    graph.finalize()
  with tf.compat.v1.Session(graph=graph) as session:
    session.run(tg.init_op)
    with graph.as_default():  # Saver checks for graph mode
      saver.restore(session, path)
    session.run(iterator.initializer)
    acc = EpochAccumulator()
    num_seqs = 0
    while True:
      try:
        fetched, n = session.run([tg.report, num_in_batch], tg.feed_dict(train=False))
      except tf.errors.OutOfRangeError:
        break
      acc.add(fetched)
      num_seqs += int(n)
  totals = acc.totals()
  losses: Dict[str, Dict[str, Any]] = {}
  for loss_name in tg.loss_names:
    summed, inv_norm = totals.get(loss_name, (0.0, 0.0))
    losses[loss_name] = {
      "summed": summed,
      "inv_norm": inv_norm,
      "figure": ratio(summed, inv_norm),
      "as_error": loss_name in tg.error_names,
    }
    if not math.isfinite(losses[loss_name]["figure"]):
      raise ValueError(
        f"loss {loss_name!r} of checkpoint {path!r} is not finite on {what}: summed={summed}, inv_norm={inv_norm}"
      )
  return Evaluation(
    graph=name,
    checkpoint=path,
    data=what,
    num_seqs=num_seqs,
    num_batches=acc.num_batches,
    losses=losses,
    skipped_records=files.num_skipped if files is not None else 0,
  )
