r"""Writes a graph's data as record files (TFRecord shards of ``tf.train.Example``, one per sequence).

Examples::

  python tools/make_dataset.py --graph=char_lm --split=train --output=data/char_lm --num_shards=4
  python tools/make_dataset.py --graph=char_lm --split=dev --output=data/char_lm
  python tools/make_dataset.py --graph=two_losses --input=seqs.npz --split=train --output=data/two_losses

Writes ``<output>/<split>-00000-of-0000N.tfrecord`` ... (sequence ``i`` into shard ``i % N``): a schema
record, then one record per sequence; the format is documented in ``returnn_rc/engine/records.py``
and the README. Input: ``--input`` (an ``.npz`` in ``tools/forward.py``'s input formats: padded
``<name>`` + ``<name>:size<axis>``, or per sequence ``seq<i>/<name>``), else the graph module's
``default_data(--split)``. Train on the files with ``tools/train.py --train_data='<output>/train-*'``.
"""

import os

from absl import app, flags, logging

import graph_names

graph_names.ensure_repo_root_on_path()
from returnn_rc import graph_module  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.engine import data as rc_data  # noqa: E402  pylint: disable=wrong-import-position
from returnn_rc.engine import records  # noqa: E402  pylint: disable=wrong-import-position

_GRAPH = flags.DEFINE_string(
  "graph",
  "char_lm",
  "Graph module: a name in graphs/, a dotted module name, or a .py "
  "path. Its extern_data_template() defines the records' schema.",
)
_SPLIT = flags.DEFINE_string(
  "split",
  "train",
  "default_data split to write (when --input is not given); also the file name prefix unless --prefix is set.",
)
_INPUT = flags.DEFINE_string(
  "input",
  None,
  "Input .npz instead of default_data: padded '<name>' [N,...] + "
  "'<name>:size<axis>' [N], or per-sequence 'seq<i>/<name>' arrays.",
)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory (created if missing).")
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards", 1, "Number of files; sequence i goes to shard i % num_shards.", lower_bound=1
)
_PREFIX = flags.DEFINE_string("prefix", None, "File name prefix (default: --split).")
_MAX_SEQS = flags.DEFINE_integer("max_seqs", None, "Write only the first N sequences.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool(
  "overwrite", False, "Replace existing files of the same names (other files in --output are never touched)."
)
flags.mark_flag_as_required("output")


def _inputs_description(template):
  """The dims description of ``template`` that ``read_sequences_npz`` takes (as the export writes it)."""
  from returnn_rc.export import dims as export_dims  # pylint: disable=import-outside-toplevel

  ids = export_dims.DimIds()
  size_keys = {}
  for name, tensor in template.items():
    for axis, d in enumerate(tensor.dims):
      if d.is_dynamic():
        size_keys.setdefault(id(d), export_dims.size_key(name, axis))
  return {name: export_dims.describe_tensor(t, dim_ids=ids, size_keys=size_keys) for name, t in template.items()}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  module = graph_names.load(_GRAPH.value)
  name = graph_module.graph_name_of(module)
  template = graph_module.extern_data_template(module)
  if _INPUT.value is not None:
    from returnn_rc.export import forwarding  # pylint: disable=import-outside-toplevel

    seqs = forwarding.read_sequences_npz(_INPUT.value, _inputs_description(template))
    source = _INPUT.value
  else:
    seqs = graph_module.default_data(module, _SPLIT.value)
    source = f"default_data({_SPLIT.value!r})"
  if _MAX_SEQS.value is not None:
    seqs = seqs[: _MAX_SEQS.value]
  rc_data.check_data(template, seqs, what=f"graph {name!r} {source}")
  paths = records.write_shards(
    _OUTPUT.value,
    template,
    seqs,
    num_shards=_NUM_SHARDS.value,
    prefix=_PREFIX.value or _SPLIT.value,
    graph_name=name,
    overwrite=_OVERWRITE.value,
  )
  size = sum(os.path.getsize(p) for p in paths)
  logging.info(
    "wrote %d sequences of %s (graph %s) into %d file(s), %.1f MB", len(seqs), source, name, len(paths), size / 1e6
  )
  pattern = os.path.join(_OUTPUT.value, f"{_PREFIX.value or _SPLIT.value}-*{records.FILE_SUFFIX}")
  print(f"{len(seqs)} sequences -> {len(paths)} file(s) {pattern} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
  app.run(main)
