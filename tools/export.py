r"""Export the marked outputs of a graph module's ``forward_step`` as a TensorFlow SavedModel.

Example::

  python tools/export.py --graph=char_lm --checkpoint=train_dir/char_lm --export_dir=export/char_lm

The SavedModel (tag ``serve``, signature ``serving_default``) loads in plain TensorFlow, without
returnn_rc: inputs ``"<name>"`` and ``"<name>:size<axis>"`` (int32 ``[B]``), outputs likewise for each
marked output. The dims of every input and output are in ``<export_dir>/assets.extra/returnn_rc_dims.json``.
"""

import json
from absl import app, flags, logging

import graph_names

graph_names.ensure_repo_root_on_path()
from returnn_rc import export  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("graph", None, "Graph module: a name in graphs/ ('char_lm'), a dotted module name, or a .py path.")
flags.DEFINE_string("checkpoint", None, "tf.compat.v1.train.Saver checkpoint prefix, or a directory (its latest "
                    "checkpoint). Required unless --fresh_init.")
flags.DEFINE_bool("fresh_init", False, "Export a freshly (randomly) initialised model instead of a checkpoint "
                  "(for tests and smoke runs).")
flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel to; must not exist or be empty.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
flags.DEFINE_integer("epoch", None, "Epoch for get_model / the run context (default: from the checkpoint, else 1).")
flags.DEFINE_integer("step", None, "Step for get_model / the run context (default: from the checkpoint, else 0).")
flags.mark_flags_as_required(["graph", "export_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if (FLAGS.checkpoint is None) == (not FLAGS.fresh_init):
    raise app.UsageError("give exactly one of --checkpoint and --fresh_init")
  module = graph_names.load(FLAGS.graph)
  desc = export.export_saved_model(module, checkpoint_path=FLAGS.checkpoint, export_dir=FLAGS.export_dir,
                                   overwrite=FLAGS.overwrite, epoch=FLAGS.epoch, step=FLAGS.step)
  logging.info("exported %s (epoch %d, step %d) to %s", FLAGS.graph, desc["epoch"], desc["step"], FLAGS.export_dir)
  print(json.dumps({"export_dir": FLAGS.export_dir, "inputs": sorted(desc["inputs"]),
                    "outputs": sorted(desc["outputs"])}))


if __name__ == "__main__":
  app.run(main)
