r"""Forward sequences through a graph module + checkpoint, or an exported SavedModel; write the outputs.

Examples::

  python tools/forward.py --graph=char_lm --checkpoint=train_dir/char_lm --output=out.npz
  python tools/forward.py --saved_model=export/char_lm --input=in.npz --output=out.npz --batch_size=16

Input: ``--input`` (a ``.npz``), else the graph module's ``default_data(--split)``. Input ``.npz``
formats: (a) padded: ``<name>`` ``[N,...]`` with dynamic axes zero-padded, and ``<name>:size<axis>``
``[N]`` the true lengths; (b) per sequence: ``seq<i>/<name>`` unpadded arrays (no batch axis).

Output ``--output`` (a ``.npz``, padded format): for each marked output ``<name>`` ``[N,...]`` (N
sequences in input order, dynamic axes zero-padded to the longest) and ``<name>:size<axis>`` ``[N]``
int32 for each dynamic axis; sequence i is ``out[name][i, :out[name + ":size1"][i]]`` for ``[B,T,...]``.
"""

from absl import app, flags, logging

import graph_names

graph_names.ensure_repo_root_on_path()
from returnn_rc import graph_module  # pylint: disable=wrong-import-position
from returnn_rc.export import forwarding as forward  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("graph", None, "Graph module (with --checkpoint or --fresh_init): a name in graphs/, a "
                    "dotted module name, or a .py path. Also gives default_data when --input is not set.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory for --graph.")
flags.DEFINE_bool("fresh_init", False, "With --graph: use freshly initialised (random) weights.")
flags.DEFINE_string("saved_model", None, "Exported SavedModel directory (instead of --checkpoint/--fresh_init).")
flags.DEFINE_string("input", None, "Input .npz (padded '<name>' + '<name>:size<axis>', or 'seq<i>/<name>'). "
                    "Default: default_data(--split) of --graph.")
flags.DEFINE_string("split", "dev", "default_data split when --input is not given.")
flags.DEFINE_integer("max_seqs", None, "Forward only the first N sequences.")
flags.DEFINE_integer("batch_size", 8, "Sequences per batch.", lower_bound=1)
flags.DEFINE_string("output", None, "Output .npz: '<name>' [N,...] padded, '<name>:size<axis>' [N] int32 lengths.")
flags.mark_flag_as_required("output")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from_graph = FLAGS.checkpoint is not None or FLAGS.fresh_init
  if from_graph == (FLAGS.saved_model is not None):
    raise app.UsageError("give either --saved_model, or --graph with --checkpoint or --fresh_init")
  if FLAGS.checkpoint is not None and FLAGS.fresh_init:
    raise app.UsageError("give only one of --checkpoint and --fresh_init")
  module = graph_names.load(FLAGS.graph) if FLAGS.graph else None
  if from_graph and module is None:
    raise app.UsageError("--checkpoint / --fresh_init need --graph")
  if FLAGS.input is None and module is None:
    raise app.UsageError("give --input, or --graph for its default_data")
  if from_graph:
    forwarder = forward.GraphModuleForwarder(module, FLAGS.checkpoint)
  else:
    forwarder = forward.SavedModelForwarder(FLAGS.saved_model)
  with forwarder:
    if FLAGS.input is not None:
      seqs = forward.read_sequences_npz(FLAGS.input, forwarder.description["inputs"])
    else:
      seqs = graph_module.default_data(module, FLAGS.split)
    if FLAGS.max_seqs is not None:
      seqs = seqs[:FLAGS.max_seqs]
    logging.info("forwarding %d sequences, batch size %d", len(seqs), FLAGS.batch_size)
    outputs = forward.forward_sequences(forwarder, seqs, batch_size=FLAGS.batch_size)
  forward.write_outputs_npz(FLAGS.output, outputs, forwarder.description["outputs"])
  logging.info("wrote %s: %s", FLAGS.output, sorted(forwarder.description["outputs"]))


if __name__ == "__main__":
  app.run(main)
