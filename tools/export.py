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
from returnn_rc import export  # noqa: E402  pylint: disable=wrong-import-position

_GRAPH = flags.DEFINE_string(
  "graph", None, "Graph module: a name in graphs/ ('char_lm'), a dotted module name, or a .py path."
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "tf.compat.v1.train.Saver checkpoint prefix, or a directory (its latest checkpoint). Required unless --fresh_init.",
)
_FRESH_INIT = flags.DEFINE_bool(
  "fresh_init",
  False,
  "Export a freshly (randomly) initialised model instead of a checkpoint (for tests and smoke runs).",
)
_EXPORT_DIR = flags.DEFINE_string(
  "export_dir",
  None,
  "Directory to write the SavedModel to; must not exist or be "
  "empty (or, with --overwrite, hold an earlier export). Not the current directory.",
)
_OVERWRITE = flags.DEFINE_bool(
  "overwrite",
  False,
  "Replace an earlier export in --export_dir (recognised by its files; anything else is refused and nothing deleted).",
)
_EPOCH = flags.DEFINE_integer(
  "epoch", None, "Epoch for get_model / the run context (default: from the checkpoint, else 1).", lower_bound=1
)
_STEP = flags.DEFINE_integer(
  "step", None, "Step for get_model / the run context (default: from the checkpoint, else 0).", lower_bound=0
)
flags.mark_flags_as_required(["graph", "export_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if (_CHECKPOINT.value is None) == (not _FRESH_INIT.value):
    raise app.UsageError("give exactly one of --checkpoint and --fresh_init")
  try:  # every check before the export starts
    export.check_export_dir(_EXPORT_DIR.value, _OVERWRITE.value)
    module = graph_names.load(_GRAPH.value)
  except ValueError as exc:
    raise app.UsageError(str(exc)) from None
  desc = export.export_saved_model(
    module,
    checkpoint_path=_CHECKPOINT.value,
    export_dir=_EXPORT_DIR.value,
    overwrite=_OVERWRITE.value,
    epoch=_EPOCH.value,
    step=_STEP.value,
  )
  logging.info("exported %s (epoch %d, step %d) to %s", _GRAPH.value, desc["epoch"], desc["step"], _EXPORT_DIR.value)
  print(
    json.dumps({"export_dir": _EXPORT_DIR.value, "inputs": sorted(desc["inputs"]), "outputs": sorted(desc["outputs"])})
  )


if __name__ == "__main__":
  app.run(main)
