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

import os

from absl import app, flags, logging

import graph_names

graph_names.ensure_repo_root_on_path()
from returnn_rc import graph_module  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.export import forwarding as forward  # noqa: E402  pylint: disable=wrong-import-position

_GRAPH = flags.DEFINE_string(
  "graph",
  None,
  "Graph module (with --checkpoint or --fresh_init): a name in graphs/, "
  "a dotted module name, or a .py path. Also gives default_data when --input is not set.",
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint prefix or directory for --graph.")
_FRESH_INIT = flags.DEFINE_bool("fresh_init", False, "With --graph: use freshly initialised (random) weights.")
_SAVED_MODEL = flags.DEFINE_string(
  "saved_model", None, "Exported SavedModel directory (instead of --checkpoint/--fresh_init)."
)
_INPUT = flags.DEFINE_string(
  "input",
  None,
  "Input .npz (padded '<name>' + '<name>:size<axis>' int lengths in "
  "[0, padded length], one per sequence; or 'seq<i>/<name>'). Default: "
  "default_data(--split) of --graph.",
)
_SPLIT = flags.DEFINE_string("split", "dev", "default_data split when --input is not given.")
_MAX_SEQS = flags.DEFINE_integer("max_seqs", None, "Forward only the first N sequences.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Sequences per batch.", lower_bound=1)
_OUTPUT = flags.DEFINE_string(
  "output",
  None,
  "Output .npz: '<name>' [N,...] padded, '<name>:size<axis>' [N] int32 lengths. Its directory must exist.",
)
flags.mark_flag_as_required("output")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from_graph = _CHECKPOINT.value is not None or _FRESH_INIT.value
  if from_graph == (_SAVED_MODEL.value is not None):
    raise app.UsageError("give either --saved_model, or --graph with --checkpoint or --fresh_init")
  if _CHECKPOINT.value is not None and _FRESH_INIT.value:
    raise app.UsageError("give only one of --checkpoint and --fresh_init")
  if _INPUT.value is None and _GRAPH.value is None:
    raise app.UsageError("give --input, or --graph for its default_data")
  if from_graph and _GRAPH.value is None:
    raise app.UsageError("--checkpoint / --fresh_init need --graph")
  try:  # every check before the forwarding starts
    forward.check_output_path(_OUTPUT.value)
    if _INPUT.value is not None and not os.path.isfile(_INPUT.value):
      raise ValueError(f"--input {_INPUT.value!r} does not exist")
    module = graph_names.load(_GRAPH.value) if _GRAPH.value else None
  except ValueError as exc:
    raise app.UsageError(str(exc)) from None
  if from_graph:
    forwarder = forward.GraphModuleForwarder(module, _CHECKPOINT.value)
  else:
    forwarder = forward.SavedModelForwarder(_SAVED_MODEL.value)
  with forwarder:
    if _INPUT.value is not None:
      seqs = forward.read_sequences_npz(_INPUT.value, forwarder.description["inputs"])
    else:
      seqs = graph_module.default_data(module, _SPLIT.value)
    if _MAX_SEQS.value is not None:
      seqs = seqs[: _MAX_SEQS.value]
    logging.info("forwarding %d sequences, batch size %d", len(seqs), _BATCH_SIZE.value)
    outputs = forward.forward_sequences(forwarder, seqs, batch_size=_BATCH_SIZE.value)
  forward.write_outputs_npz(_OUTPUT.value, outputs, forwarder.description["outputs"])
  logging.info("wrote %s: %s", _OUTPUT.value, sorted(forwarder.description["outputs"]))


if __name__ == "__main__":
  app.run(main)
