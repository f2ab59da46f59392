"""Benchmark 1: what the symbolic train flag costs in the char-LM train step.

    python tools/bench_flag.py                # full run (~1 min on 2 CPU cores)
    python tools/bench_flag.py --rounds=15    # more rounds
    python tools/bench_flag.py --quick        # smoke test (seconds; meaningless numbers)

The train step of ``graphs/char_lm.py`` as the engine builds it
(:func:`returnn_rc.engine.train_graph.build_train_graph`: Adam on dense gradients, learning-rate
variables, ``rc.report_fetches``), on an in-graph iterator over ``--steps`` real char-LM batches, with
the train flag fed (the graph state's placeholder, fed True) vs a static Python ``True``; for context
also the flag as a bool variable (no feed), a ``tf.cond``-wrapped dropout on the fed flag (the naive
way), and the op counts (the whole graph the builder makes: train step, forward outputs, saver).
Variants run interleaved (``tools/bench_common.py``).
"""

from typing import List

from absl import app, flags

import bench_common
from bench_common import Row, build_char_lm_step

flags.adopt_module_key_flags(bench_common)
STEPS = flags.DEFINE_integer(
  "steps",
  8,
  "Train steps per variant and round; also the number K of distinct real "
  "char-LM batches cycled through (every round sees the same K batches).",
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Char-LM batch size (EngineConfig's default).")

TARGET_FLAG = 1.01
VARIANTS = ("fed", "static", "variable", "cond")


def measure() -> List[Row]:
  """Fed vs static train flag (and variable flag, tf.cond dropout) on the char-LM train step."""
  batches = bench_common.char_lm_batches(STEPS.value, BATCH_SIZE.value, bench_common.SEED.value)
  steps = {name: build_char_lm_step(batches, flag=name, seed=bench_common.SEED.value) for name in VARIANTS}
  num_ops = {name: len(s.graph.get_operations()) for name, s in steps.items()}
  times = bench_common.interleaved(
    {
      name: (lambda s=s: bench_common.run_steps(s.session, s.fetches, s.feed, STEPS.value)) for name, s in steps.items()
    },
    bench_common.ROUNDS.value,
  )
  for s in steps.values():
    s.session.close()
  t = {name: bench_common.median(times[name]) for name in steps}
  ms = bench_common.ms
  shape = f"B={batches.data.shape[1]}, T<={batches.data.shape[2]}"
  return [
    Row(
      "1a",
      f"char_lm train step, fed flag / static True ({shape})",
      f"{ms(t['fed'])} / {ms(t['static'])}",
      bench_common.paired_ratio(times, "fed", "static"),
      TARGET_FLAG,
    ),
    Row(
      "1b",
      "char_lm train step, bool-variable flag (no feed) / static True",
      f"{ms(t['variable'])} / {ms(t['static'])}",
      bench_common.paired_ratio(times, "variable", "static"),
    ),
    Row(
      "1c",
      "char_lm train step, tf.cond dropout on fed flag / static True (the naive way)",
      f"{ms(t['cond'])} / {ms(t['static'])}",
      bench_common.paired_ratio(times, "cond", "static"),
    ),
    Row(
      "1d", "char_lm train graph ops: fed / static / variable / tf.cond", " / ".join(str(num_ops[n]) for n in VARIANTS)
    ),
  ]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if STEPS.value < 1:
    raise app.UsageError(f"--steps must be >= 1, got {STEPS.value}")
  with bench_common.quick(steps=1, batch_size=8):
    bench_common.run(measure)


if __name__ == "__main__":
  app.run(main)
