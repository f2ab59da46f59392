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

from absl import app, flags, logging

import graph_names
import train_options

FLAGS = flags.FLAGS
flags.DEFINE_string("graph", "char_lm",
                    "Graph module: a name in graphs/ (char_lm, seq_classifier, two_losses), a dotted module name, "
                    "or a path to a .py file defining extern_data_template, default_data, get_model, train_step, "
                    "forward_step.")
flags.DEFINE_string("train_dir", None,
                    "Directory for checkpoints, train_state.json and TensorBoard events. Default: "
                    "./train_dir/<graph>. An existing checkpoint there of the same model is resumed; one of "
                    "another model is an error (use another dir or --fresh).")
flags.DEFINE_bool("fresh", False, "Delete this engine's files (checkpoints, state, events) in --train_dir first "
                  "and train from scratch instead of resuming.")
flags.DEFINE_integer("num_epochs", 3, "Train up to and including this epoch (counted from 1 over resumes).")
flags.DEFINE_integer("batch_size", 32, "Maximum number of sequences per batch (batches are bucketed by length).")
flags.DEFINE_integer("max_seqs", None, "Use at most this many train sequences (dev: a tenth); default: the graph's "
                     "default data (char_lm: 6000 train / 500 dev lines).")
flags.DEFINE_float("learning_rate", 1e-3, "Initial learning rate (Adam).")
flags.DEFINE_string("lr_control_loss", None,
                    "Exact name of the loss whose epoch figure (dev, else train) controls the learning rate "
                    "(Newbob: multiplied by --lr_decay when it did not improve by 1% relative). Default: the "
                    "first loss used by the optimizer (char_lm: ce).")
flags.DEFINE_float("lr_decay", 0.5, "Learning-rate decay factor of the Newbob control (1 disables it).")
flags.DEFINE_integer("seed", 42, "Seed of the variable initialisers, the data order per epoch and the dropout masks.")
flags.DEFINE_bool("xla", False, "Compile the train step (model, losses, gradients) with XLA (jit_scope). XLA "
                  "compiles once per batch shape; see --pad_to_bucket_boundary.")
flags.DEFINE_bool("pad_to_bucket_boundary", False,
                  "Pad each batch to its length bucket's bound instead of its longest sequence: few distinct shapes "
                  "(fewer XLA compilations), more padding. Changes dropout masks (their shape), not the figures' "
                  "definition.")
flags.DEFINE_string("export_dir", None,
                    "If set, export the marked outputs of forward_step of the final checkpoint as a SavedModel "
                    "here (returnn_rc.export.export_saved_model).")
flags.DEFINE_bool("overwrite_export", False, "Allow --export_dir to replace an existing export.")
flags.adopt_module_key_flags(train_options)  # data from files, optimizer, clipping, accumulation, schedule, best-N


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().setLevel("ERROR")  # TF's deprecation warnings of the v1 API
  module = graph_names.load(FLAGS.graph)
  from returnn_rc import engine  # pylint: disable=import-outside-toplevel

  name = engine.graph_name_of(module)
  train_dir = FLAGS.train_dir or os.path.join("train_dir", name)
  config = engine.EngineConfig(
      train_dir=train_dir, num_epochs=FLAGS.num_epochs, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate, lr_control_loss=FLAGS.lr_control_loss, lr_decay=FLAGS.lr_decay,
      seed=FLAGS.seed, xla=FLAGS.xla, pad_to_bucket_boundary=FLAGS.pad_to_bucket_boundary, fresh=FLAGS.fresh,
      max_seqs=FLAGS.max_seqs, **train_options.engine_config_kwargs())
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
  if FLAGS.export_dir:
    from returnn_rc.export import export_saved_model  # pylint: disable=import-outside-toplevel
    export_saved_model(module, checkpoint_path=checkpoint, export_dir=FLAGS.export_dir,
                       overwrite=FLAGS.overwrite_export)
    print(f"exported SavedModel to {FLAGS.export_dir}")


if __name__ == "__main__":
  app.run(main)
