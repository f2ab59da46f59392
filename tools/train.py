"""Trains a graph module (default: graphs/char_lm.py on Python's stdlib sources) with returnn_rc's engine.

  python tools/train.py                       # char LM, a short run (~1.5 min on 2 CPU cores)
  python tools/train.py --graph=two_losses --num_epochs=5
  python tools/train.py --fresh               # start over in --train_dir
  python tools/train.py --train_data='data/char_lm/train-*' --dev_data='data/char_lm/dev-*'   # record files

Prints a per-epoch table of train and dev figures (Σ summed / Σ inv_norm per loss; "(err)" marks
as_error losses); writes checkpoints, train_state.json and TensorBoard events to --train_dir.
A re-run resumes from the latest checkpoint there and trains only the missing epochs (none if
--num_epochs were already trained: it then prints the table and exits).
"""

import os
import time

import graph_names
from absl import app, flags, logging

import train_options

_GRAPH = flags.DEFINE_string(
    "graph", "char_lm",
    "Graph module: a name in graphs/ (char_lm, seq_classifier, two_losses), a dotted module name, or a path to a "
    ".py file defining extern_data_template, default_data, get_model, train_step, forward_step.")
_TRAIN_DIR = flags.DEFINE_string(
    "train_dir", None,
    "Directory for checkpoints, train_state.json and TensorBoard events. Default: ./train_dir/<graph>. The newest "
    "checkpoint there that restores is resumed (a broken newer one is named in a warning); one of another model is "
    "an error (use another dir or --fresh). Not / or the home directory.")
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Delete the engine's own files in --train_dir first (model.<epoch>.index/.data-*, checkpoint, "
    "train_state.json, its events files; nothing else) and train from scratch instead of resuming.")
_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Train up to and including this epoch (counted from 1 over "
                                   "resumes).", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Maximum number of sequences per batch (batches are bucketed "
                                   "by length).", lower_bound=1)
_MAX_SEQS = flags.DEFINE_integer("max_seqs", None, "Use at most this many train sequences (dev: a tenth); default: "
                                 "the graph's default data (char_lm: 6000 train / 500 dev lines).", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Initial learning rate (Adam), finite and >= 0.",
                                    lower_bound=0.0)
_LR_CONTROL_LOSS = flags.DEFINE_string(
    "lr_control_loss", None,
    "Exact name of the loss whose epoch figure (dev, else train) controls the learning rate (Newbob: multiplied by "
    "--lr_decay when it did not improve by 1% relative). Default: the first loss used by the optimizer "
    "(char_lm: ce).")
_LR_DECAY = flags.DEFINE_float("lr_decay", 0.5, "Learning-rate decay factor of the Newbob control, in (0, 1] "
                               "(1 disables it).", lower_bound=0.0, upper_bound=1.0)
_SEED = flags.DEFINE_integer("seed", 42, "Seed of the variable initialisers, the data order per epoch and the "
                             "dropout masks.", lower_bound=0, upper_bound=2**31 - 1)
_XLA = flags.DEFINE_bool("xla", False, "Compile the train step (model, losses, gradients) with XLA (jit_scope). "
                         "XLA compiles once per batch shape; see --pad_to_bucket_boundary.")
_PAD_TO_BUCKET_BOUNDARY = flags.DEFINE_bool(
    "pad_to_bucket_boundary", False,
    "Pad each batch to its length bucket's bound instead of its longest sequence: few distinct shapes (fewer XLA "
    "compilations), more padding. Changes dropout masks (their shape), not the figures' definition.")
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 2, "How many epoch checkpoints to keep.", lower_bound=1)
_LOG_EVERY_SECS = flags.DEFINE_float("log_every_secs", 20.0, "Progress logging interval within an epoch (seconds "
                                     "> 0).")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None,
    "If set, export the marked outputs of forward_step of the final checkpoint as a SavedModel here "
    "(returnn_rc.export.export_saved_model). Checked before training: it must not exist, be empty, or (with "
    "--overwrite_export) hold an earlier export.")
_OVERWRITE_EXPORT = flags.DEFINE_bool("overwrite_export", False, "Allow --export_dir to replace an earlier export "
                                      "(only an export is replaced; anything else is refused).")
flags.adopt_module_key_flags(train_options)  # data from files, optimizer, clipping, accumulation, schedule, best-N


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().setLevel("ERROR")  # TF's deprecation warnings of the v1 API
  try:
    module = graph_names.load(_GRAPH.value)
  except ValueError as exc:
    raise app.UsageError(str(exc)) from None
  from returnn_rc import engine  # pylint: disable=import-outside-toplevel
  from returnn_rc.export import check_export_dir, export_saved_model  # pylint: disable=import-outside-toplevel

  name = engine.graph_name_of(module)
  train_dir = _TRAIN_DIR.value or os.path.join("train_dir", name)
  config = engine.EngineConfig(
      train_dir=train_dir, num_epochs=_NUM_EPOCHS.value, batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value, lr_control_loss=_LR_CONTROL_LOSS.value, lr_decay=_LR_DECAY.value,
      seed=_SEED.value, xla=_XLA.value, pad_to_bucket_boundary=_PAD_TO_BUCKET_BOUNDARY.value, fresh=_FRESH.value,
      keep_checkpoints=_KEEP_CHECKPOINTS.value, log_every_secs=_LOG_EVERY_SECS.value, max_seqs=_MAX_SEQS.value,
      **train_options.engine_config_kwargs())
  try:  # every check before anything is written
    config.validate()
    if _EXPORT_DIR.value:
      export_dir = check_export_dir(_EXPORT_DIR.value, _OVERWRITE_EXPORT.value)
      if os.path.realpath(export_dir) == os.path.realpath(train_dir):
        raise ValueError(f"--export_dir {_EXPORT_DIR.value!r} is --train_dir; use another directory")
  except (TypeError, ValueError) as exc:
    raise app.UsageError(str(exc)) from None
  start = time.time()
  with engine.Engine(module, config, hooks=train_options.hooks(train_dir)) as eng:
    logging.info("graph %s: %d train / %d dev sequences; train_dir %s; losses %s (errors %s); lr control on %r",
                 name, eng.num_seqs["train"], eng.num_seqs["dev"], os.path.abspath(train_dir),
                 eng.loss_names, eng.error_names, eng.lr_control.loss_name)
    eng.train()
    checkpoint = eng.latest_checkpoint()
    skipped = {split: n for split, n in eng.num_skipped_records.items() if n}
    if skipped:
      print(f"skipped corrupt records: {skipped}")
    if eng.best_checkpoint():
      print(f"best checkpoint by {eng.best_checkpoint_loss}: {eng.best_checkpoint()}")
    print(f"\n{name}: per-epoch figures (Σ summed / Σ inv_norm per loss)\n{eng.table()}")
    print(f"wall time {time.time() - start:.1f}s; checkpoint {checkpoint}; TensorBoard: "
          f"tensorboard --logdir {os.path.abspath(train_dir)}")
  if _EXPORT_DIR.value:
    export_saved_model(module, checkpoint_path=checkpoint, export_dir=_EXPORT_DIR.value,
                       overwrite=_OVERWRITE_EXPORT.value)
    print(f"exported SavedModel to {_EXPORT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
