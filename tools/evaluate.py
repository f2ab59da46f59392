r"""Evaluates a checkpoint: the exact ``Σ summed / Σ inv_norm`` of every loss on a data set.

Examples::

  python tools/evaluate.py --graph=char_lm --checkpoint=train_dir/char_lm                  # default_data("dev")
  python tools/evaluate.py --graph=char_lm --checkpoint=train_dir/char_lm/best \
      --data='data/char_lm/dev-*' --output_json=eval.json

Builds the graph with the engine's training-graph builder, restores the model's variables from the
checkpoint read-only (a directory gives its latest checkpoint; ``<train_dir>/best`` the best one
kept by ``--keep_best_checkpoints``), runs every sequence once with the train flag off, and prints
a table (loss, Σ summed, Σ inv_norm, figure; ``(err)`` marks as_error losses). ``--output_json``
writes the same as JSON: ``{"graph", "checkpoint", "data", "num_seqs", "num_batches",
"losses": {name: {"summed", "inv_norm", "figure", "as_error"}}, "skipped_records"}``.
"""

import json
import os

from absl import app, flags, logging

import graph_names
import tool_errors

graph_names.ensure_repo_root_on_path()
from returnn_rc.engine import evaluation  # noqa: E402  pylint: disable=wrong-import-position

_GRAPH = flags.DEFINE_string(
  "graph", "char_lm", "Graph module: a name in graphs/, a dotted module name, or a .py path."
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "Checkpoint prefix (train_dir/model.003) or directory (its "
  "latest checkpoint; train_dir/best: the best kept one). Only read.",
)
_DATA = flags.DEFINE_string(
  "data", None, "Glob of record files (tools/make_dataset.py); default: the graph's default_data(--split)."
)
_SPLIT = flags.DEFINE_string("split", "dev", "default_data split when --data is not given.")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 32, "Sequences per batch (does not change the figures).", lower_bound=1
)
_MAX_SEQS = flags.DEFINE_integer("max_seqs", None, "Evaluate only the first N sequences.", lower_bound=1)
_SKIP_CORRUPT = flags.DEFINE_bool(
  "skip_corrupt_records", False, "Skip corrupt records of --data (counted) instead of refusing the files."
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the figures as JSON to this file.")
flags.mark_flag_as_required("checkpoint")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  tf.get_logger().setLevel("ERROR")  # TF's deprecation warnings of the v1 API
  module = graph_names.load(_GRAPH.value)
  with tool_errors.input_errors():
    result = evaluation.evaluate_checkpoint(
      module,
      _CHECKPOINT.value,
      data=_DATA.value,
      split=_SPLIT.value,
      batch_size=_BATCH_SIZE.value,
      skip_corrupt_records=_SKIP_CORRUPT.value,
      max_seqs=_MAX_SEQS.value,
    )
  skipped = f", {result.skipped_records} corrupt records skipped" if result.skipped_records else ""
  print(
    f"{result.graph}: checkpoint {result.checkpoint} on {result.data}: {result.num_seqs} sequences in "
    f"{result.num_batches} batches{skipped}\n{result.table()}"
  )
  if _OUTPUT_JSON.value:
    path = os.path.abspath(_OUTPUT_JSON.value)
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(result.to_json(), f, indent=1, sort_keys=True)
    logging.info("wrote %s", path)


if __name__ == "__main__":
  app.run(main)
