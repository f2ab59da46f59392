"""Writes the committed golden artefacts (see :mod:`tests.conformance.artefacts`).

  python -m tests.conformance.generate_artefacts                   # every golden in graphs/
  python -m tests.conformance.generate_artefacts --graphs=ctc_acoustic

Run from the repository root after a deliberate change of variable names, the export format or the
numerics (then say so in the commit message): ``artefacts_test.py`` fails until the artefacts match.
Per golden: the engine's train graph (``goldens.build``) trains :data:`artefacts.TRAIN_STEPS` steps
on the fixed train batch from its seeded initialisation, the checkpoint is saved, a SavedModel is
exported from it (to a temp dir; only its dims JSON is kept), and the figures are recorded from a
fresh graph that restored the checkpoint (as the test does).
"""

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position
from absl import app, flags, logging  # noqa: E402  pylint: disable=wrong-import-position

from returnn_rc import export  # noqa: E402  pylint: disable=wrong-import-position
from tests.conformance import artefacts, goldens  # noqa: E402  pylint: disable=wrong-import-position

_GRAPHS = flags.DEFINE_list("graphs", None, "Goldens to (re)generate; default: every module of graphs/.")


def generate(name: str) -> None:
  """(Re)writes the artefacts of golden ``name`` (only the files listed in :mod:`artefacts`)."""
  out_dir = artefacts.golden_dir(name)
  os.makedirs(out_dir, exist_ok=True)
  with artefacts.sizes(name), tempfile.TemporaryDirectory(prefix="rc_artefacts_") as tmp:
    built = goldens.build(name)
    with built.session() as sess:
      for _ in range(artefacts.TRAIN_STEPS):
        sess.run(built.train_op, built.feed(artefacts.train_batch(built), train=True))
      with built.graph.as_default():  # the v1 Saver checks for graph mode
        ckpt = built.saver.save(
          sess, os.path.join(tmp, artefacts.CHECKPOINT), write_meta_graph=False, write_state=False
        )
    desc = export.export_saved_model(
      goldens.module(name), checkpoint_path=ckpt, export_dir=os.path.join(tmp, "saved_model")
    )
    restored = goldens.build(name)
    with restored.session() as sess:
      with restored.graph.as_default():
        restored.saver.restore(sess, ckpt)
      figures = artefacts.figures(restored, sess)
    for file_name in artefacts.CHECKPOINT_FILES:
      shutil.copyfile(os.path.join(tmp, file_name), os.path.join(out_dir, file_name))
  artefacts.write_json(os.path.join(out_dir, artefacts.DIMS_JSON), artefacts.stable_dims(desc))
  artefacts.write_json(os.path.join(out_dir, artefacts.FIGURES_JSON), figures)
  size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
  print(f"{name}: {out_dir} ({size / 1024:.1f} KiB); dev figures {figures['dev']}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel("ERROR")  # the v1 Saver's and SavedModel builder's info lines
  names = goldens.names()
  chosen = _GRAPHS.value or names
  unknown = sorted(set(chosen) - set(names))
  if unknown:
    raise app.UsageError(f"--graphs: unknown goldens {unknown}; the goldens are {names}")
  for name in chosen:
    generate(name)


if __name__ == "__main__":
  app.run(main)
