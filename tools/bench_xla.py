"""Benchmark 4: the char-LM train step compiled with XLA vs not.

    python tools/bench_xla.py                 # full run (~1 min on 2 CPU cores)
    python tools/bench_xla.py --quick         # smoke test (seconds; meaningless numbers)

The fed-flag train step of ``graphs/char_lm.py`` as the engine builds it
(:func:`returnn_rc.engine.train_graph.build_train_graph`) with ``xla=True`` (``jit_scope`` around the
train step, as ``EngineConfig(xla=True)``) vs without, on the same ``--steps`` real char-LM batches,
all padded to one shape (the longest of them). An untimed first pass over the batches compiles;
then the variants run interleaved (``tools/bench_common.py``).
"""

from typing import List

from absl import app, flags

import bench_common
from bench_common import Row, build_char_lm_step

flags.adopt_module_key_flags(bench_common)
STEPS = flags.DEFINE_integer(
  "steps", 8, "Train steps per variant and round; also the number K of distinct real char-LM batches cycled through."
)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Char-LM batch size (EngineConfig's default).")
MAX_ROUNDS = 5


def measure() -> List[Row]:
  """The fed-flag char-LM train step under ``jit_scope`` vs without, fixed-shape batches."""
  batches = bench_common.char_lm_batches(STEPS.value, BATCH_SIZE.value, bench_common.SEED.value)
  num = len(batches.lens)
  steps, first = {}, {}
  for name, xla in (("xla", True), ("no_xla", False)):
    steps[name] = s = build_char_lm_step(batches, flag="fed", seed=bench_common.SEED.value, xla=xla, fixed_shape=True)
    # One pass over the K batches: XLA compiles here.
    first[name] = bench_common.run_steps(s.session, s.fetches, s.feed, num) * num
  times = bench_common.interleaved(
    {
      name: (lambda s=s: bench_common.run_steps(s.session, s.fetches, s.feed, STEPS.value)) for name, s in steps.items()
    },
    min(bench_common.ROUNDS.value, MAX_ROUNDS),
  )
  for s in steps.values():
    s.session.close()
  xla, plain = bench_common.median(times["xla"]), bench_common.median(times["no_xla"])
  shape = f"B={batches.data.shape[1]}, T={batches.data.shape[2]} fixed"
  return [
    Row(
      "4",
      f"char_lm train step, XLA jit_scope / no XLA ({shape})",
      f"{bench_common.ms(xla)} / {bench_common.ms(plain)}",
      bench_common.paired_ratio(times, "xla", "no_xla"),
    ),
    Row(
      "4 first pass",
      f"first pass over the {num} batches (XLA: compiles), XLA / no XLA",
      f"{first['xla']:.2f} s / {first['no_xla']:.2f} s",
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
