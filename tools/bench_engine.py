"""Benchmark 2: an :class:`returnn_rc.engine.Engine` train step vs a hand-written minimal TF1 loop.

    python tools/bench_engine.py              # full run (~1 min on 2 CPU cores)
    python tools/bench_engine.py --quick      # smoke test (seconds; meaningless numbers)

Both train ``graphs/char_lm.py`` on the same ``tf.data`` batches in the same order (the engine's
pipeline), one epoch of ``--epoch_seqs`` sequences per variant and round, the epochs aligned; the
rounds run interleaved (``tools/bench_common.py``). The engine (its graph from
:func:`returnn_rc.engine.train_graph.build_train_graph`) runs with a fed train flag, both losses
incl. the ``fer`` error, report fetches, TensorBoard scalars and finite checks. The baseline stays
hand-written on purpose: the char-LM model, CE ``[B,T-1]`` summed over the valid frames via
``tf.boolean_mask``, Adam on dense gradients, a static train flag, the loss as its only fetch.
"""

import tempfile
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

import returnn_rc as rc
from graphs import char_lm
from returnn_rc import engine as rc_engine
from returnn_rc import nn as rc_nn
from returnn_rc.engine import data as rc_data
from returnn_rc.tensor import size_key

import bench_common
from bench_common import Row

flags.adopt_module_key_flags(bench_common)
EPOCH_SEQS = flags.DEFINE_integer(
  "epoch_seqs", 480, "Char-LM train sequences per epoch (one epoch per variant and round)."
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Char-LM batch size (EngineConfig's default).")

TARGET_ENGINE = 1.05
MAX_ROUNDS = 6


class HandLoop:
  """A minimal TF1 loop: char-LM model, CE ``[B,T-1]`` summed over valid frames via ``tf.boolean_mask``,
  Adam, static train flag; input from the engine's ``tf.data`` pipeline (same batches, same order)."""

  def __init__(self, seqs: Sequence[Dict[str, np.ndarray]], *, batch_size: int, seed: int):
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.compat.v1.set_random_seed(seed)
      rc_nn.set_stateless_dropout_seed(seed)
      self._order = tf.compat.v1.placeholder(tf.int64, (), name="order_seed")
      ds = rc_data.make_dataset(
        char_lm.extern_data_template(), seqs, batch_size=batch_size, order_seed=self._order, shuffle=True, seed=seed
      )
      it = tf.compat.v1.data.make_initializable_iterator(ds)
      self._init_iter = it.initializer
      batch = it.get_next()
      ids, lens = batch["data"], batch[size_key("data", 1)]  # [B,T], [B]
      global_step = tf.compat.v1.train.get_or_create_global_step()
      model = char_lm.Model()
      with rc.init_train_step_run_ctx(train_flag=True, step=global_step):  # rc.dropout reads the flag and step
        logits = model.logits(ids[:, :-1])  # [B,T-1,V]
      ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[:, 1:], logits=logits)  # [B,T-1]
      mask = tf.sequence_mask(lens - 1, tf.shape(ce)[1])
      self.loss = tf.reduce_sum(tf.boolean_mask(ce, mask))
      optimizer = tf.compat.v1.train.AdamOptimizer(learning_rate=1e-3)
      grads_and_vars = rc_engine.dense_gradients(optimizer.compute_gradients(self.loss))  # as the engine
      self.train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
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


def measure(train_dir: str) -> List[Row]:
  """Engine.train steps/s vs :class:`HandLoop`, one epoch per round, epochs aligned."""
  seqs = char_lm.default_data("train", max_seqs=EPOCH_SEQS.value)
  cfg = rc_engine.EngineConfig(
    train_dir=train_dir,
    batch_size=BATCH_SIZE.value,
    seed=bench_common.SEED.value,
    save_checkpoints=False,
    log_every_secs=1e9,
  )
  with rc_engine.Engine(char_lm, cfg, train_data=seqs, dev_data=[]) as engine:
    hand = HandLoop(seqs, batch_size=BATCH_SIZE.value, seed=bench_common.SEED.value)
    epochs = {"engine": 0, "hand": 0}

    def engine_round():
      epochs["engine"] += 1
      result = engine.train(num_epochs=epochs["engine"])[-1]
      return result.seconds / result.num_batches

    def hand_round():
      epochs["hand"] += 1
      return hand.epoch(epochs["hand"])

    times = bench_common.interleaved(
      {"engine": engine_round, "hand": hand_round}, min(bench_common.ROUNDS.value, MAX_ROUNDS)
    )
    num_batches = engine.history[-1].num_batches
    hand.session.close()
  eng, hnd = bench_common.median(times["engine"]), bench_common.median(times["hand"])
  return [
    Row(
      "2",
      f"Engine.train step / hand-written TF1 loop (char_lm, {num_batches} steps/epoch)",
      f"{bench_common.ms(eng)} / {bench_common.ms(hnd)}",
      bench_common.paired_ratio(times, "engine", "hand"),
      TARGET_ENGINE,
    )
  ]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with bench_common.quick(epoch_seqs=32, batch_size=8), tempfile.TemporaryDirectory(prefix="rc_bench_") as tmp:
    bench_common.run(lambda: measure(tmp))


if __name__ == "__main__":
  app.run(main)
