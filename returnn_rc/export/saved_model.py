"""Export the marked outputs of ``forward_step`` as a TensorFlow SavedModel that plain TF can serve.

Example::

  from returnn_rc.export import export_saved_model
  desc = export_saved_model(load_graph_module("graphs.char_lm"), checkpoint_path="train_dir/char_lm",
                            export_dir="export/char_lm")

Serving needs only TensorFlow (no ``returnn_rc``)::

  fn = tf.saved_model.load("export/char_lm").signatures["serving_default"]
  out = fn(**{"data": tf.constant(x), "data:size1": tf.constant(lens)})  # x [B,T] int32, lens [B] int32
  out["output"], out["output:size1"]                                    # [B,T,V], [B]

The SavedModel has tag ``serve`` and one signature ``serving_default`` (method ``predict``):

- inputs: each extern-data input the outputs depend on, ``"<name>"`` ``[B,...]`` in the template's
  dtype, plus ``"<name>:size<axis>"`` ``[B]`` int32 for each dynamic axis (a dim shared by several
  inputs has one size key, named after the first of them);
- outputs: each marked output ``"<name>"`` plus ``"<name>:size<axis>"`` ``[B]`` int32 per dynamic axis.

Names (of inputs and outputs) must match :data:`returnn_rc.export.forward_graph.VALID_NAME`: a letter or
``_``, then letters, digits, ``_``, ``.``, ``-``. The dims of every input and output are stored in
``<export_dir>/assets.extra/returnn_rc_dims.json`` (:func:`load_dims`, :func:`tensors_from_outputs`).

The export is frozen for serving: train flag off (no dropout), epoch and step fixed at the values
saved in the checkpoint, and the custom op ``FlattenWithSeqLenMask`` replaced by its pure-TF
fallback, so loading needs no ``returnn_rc`` and no custom-op library.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from returnn_rc.export import dims as export_dims
from returnn_rc.export.forward_graph import (
  ForwardGraph,
  build_forward_graph,
  check_epoch_step,
  make_session,
  read_step_epoch,
  resolve_checkpoint,
)

SIGNATURE_KEY = "serving_default"
TAGS = ("serve",)

#: What an export of :func:`export_saved_model` holds (an earlier export is recognised by these names).
_EXPORT_TOP = {"saved_model.pb", "fingerprint.pb", "variables", "assets.extra"}
_EXPORT_VARIABLES = re.compile(r"^variables\.(index|data-\d{5}-of-\d{5})$")


def _is_cwd_or_above(path: str) -> bool:
  real, cwd = os.path.realpath(path), os.path.realpath(os.getcwd())
  return cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep)


def _unexpected_entries(export_dir: str) -> List[str]:
  """What in ``export_dir`` is not part of an export of :func:`export_saved_model` (empty: an earlier export)."""
  names = sorted(os.listdir(export_dir))
  odd = [n for n in names if n not in _EXPORT_TOP]
  for required in ("saved_model.pb", export_dims.DIMS_FILE):
    if not os.path.isfile(os.path.join(export_dir, required)):
      odd.append(f"(no {required})")
  variables = os.path.join(export_dir, "variables")
  if os.path.isdir(variables):
    odd += [f"variables/{n}" for n in sorted(os.listdir(variables)) if not _EXPORT_VARIABLES.match(n)]
  elif os.path.exists(variables):
    odd.append("variables (not a directory)")
  extra = os.path.join(export_dir, "assets.extra")
  if os.path.isdir(extra):
    odd += [f"assets.extra/{n}" for n in sorted(os.listdir(extra)) if n != os.path.basename(export_dims.DIMS_FILE)]
  elif os.path.exists(extra):
    odd.append("assets.extra (not a directory)")
  if not odd:
    try:
      export_dims.load_dims(export_dir)
    except ValueError as exc:
      odd.append(f"({exc})")
  return odd


def check_export_dir(export_dir: Any, overwrite: bool = False) -> str:
  """The absolute path of ``export_dir`` if an export may be written there; else ``ValueError``.

  Accepted: a path that does not exist, an empty directory, and with ``overwrite`` an earlier export
  of :func:`export_saved_model` (``saved_model.pb``, ``variables/``, ``assets.extra/returnn_rc_dims.json``
  and nothing else). Refused: anything else (e.g. ``--export_dir=.`` in a directory with other
  files), a file, and the current directory or one above it. Nothing is deleted here.
  """
  if not isinstance(export_dir, str) or not export_dir.strip():
    raise ValueError(f"export_dir must be a non-empty path, got {export_dir!r}")
  if not isinstance(overwrite, (bool, np.bool_)):
    raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
  path = os.path.abspath(export_dir)
  if _is_cwd_or_above(path):
    raise ValueError(
      f"export_dir {export_dir!r} is the current directory or one above it; the export is put "
      f"in place by renaming a directory: use a directory of its own, e.g. ./export/<graph>"
    )
  if not os.path.exists(path):
    return path
  if not os.path.isdir(path):
    raise ValueError(f"export_dir {export_dir!r} exists and is not a directory")
  if not os.listdir(path):
    return path
  if not overwrite:
    raise ValueError(
      f"export_dir {export_dir!r} already exists and is not empty; pass overwrite=True "
      f"(--overwrite) to replace it (only an earlier export is replaced)"
    )
  odd = _unexpected_entries(path)
  if odd:
    raise ValueError(
      f"export_dir {export_dir!r} is not an earlier returnn_rc export (unexpected: {odd[:8]}); "
      f"overwrite replaces only an export of export_saved_model, nothing was deleted. Use "
      f"another export_dir"
    )
  return path


def _put_in_place(new_dir: str, export_dir: str, tmp_root: str, overwrite: bool) -> None:
  """Renames ``new_dir`` to ``export_dir``; an existing (empty, or earlier export) dir is moved aside first."""
  check_export_dir(export_dir, overwrite)  # again: it may have changed while the export was written
  old = None
  if os.path.exists(export_dir):
    old = os.path.join(tmp_root, "previous")
    os.replace(export_dir, old)
  try:
    os.replace(new_dir, export_dir)
  except BaseException:
    if old is not None and not os.path.exists(export_dir):
      os.replace(old, export_dir)
    raise


def _signature_def(fg: ForwardGraph):
  info = tf.compat.v1.saved_model.build_tensor_info
  return tf.compat.v1.saved_model.build_signature_def(
    inputs={k: info(t) for k, t in fg.inputs.items()},
    outputs={k: info(t) for k, t in fg.fetches.items()},
    method_name=tf.compat.v1.saved_model.PREDICT_METHOD_NAME,
  )


def export_saved_model(
  graph_module: Any,
  *,
  checkpoint_path: Optional[str],
  export_dir: str,
  overwrite: bool = False,
  epoch: Optional[int] = None,
  step: Optional[int] = None,
) -> Dict[str, Any]:
  """Exports ``forward_step`` of ``graph_module`` with the weights of ``checkpoint_path``.

  Args:
    graph_module: an imported module (or object) following the contract of ``graphs/__init__.py``.
    checkpoint_path: a ``tf.compat.v1.train.Saver`` checkpoint prefix, or a directory (its latest
      checkpoint). ``None`` exports a freshly (randomly) initialised model: for tests only.
    export_dir: where to write the SavedModel. Must not exist or be empty, unless ``overwrite``.
    overwrite: replace an earlier export in ``export_dir`` (recognised by its files, see
      :func:`check_export_dir`; anything else is refused and nothing deleted). The new export is
      written to a temporary directory beside it and renamed into place.
    epoch, step: what ``get_model`` and the run context get (int >= 1 / >= 0); default: the values in
      the checkpoint's graph-state variables (else 1 and 0).
  Returns:
    the dims description also written to ``<export_dir>/assets.extra/returnn_rc_dims.json``:
    ``{"inputs": {name: {...}}, "outputs": {name: {...}}, "signature_key", "tags", ...}``.
  Raises:
    ValueError: bad ``export_dir`` / names / checkpoint (missing variable, shape mismatch, ...), no
      marked output, outputs not matching ``model_outputs_template``.
    RuntimeError: an expected output not marked; outputs depending on a non-input placeholder; op
      types outside core TensorFlow.
  """
  path = check_export_dir(export_dir, overwrite)
  check_epoch_step(epoch, step)
  ckpt = None
  saved = {"step": 0, "epoch": 1}
  if checkpoint_path is not None:
    ckpt = resolve_checkpoint(checkpoint_path)
    saved = read_step_epoch(ckpt)
  epoch = saved["epoch"] if epoch is None else epoch
  step = saved["step"] if step is None else step
  fg = build_forward_graph(graph_module, epoch=epoch, step=step)
  description = dict(fg.description)
  description.update(
    {
      "format": export_dims.DIMS_FORMAT,
      "version": export_dims.DIMS_VERSION,
      "signature_key": SIGNATURE_KEY,
      "tags": list(TAGS),
      "graph_module": getattr(graph_module, "__name__", None),
      "checkpoint": ckpt,
      "epoch": epoch,
      "step": step,
      "tensorflow_version": tf.__version__,
    }
  )
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp_root = tempfile.mkdtemp(prefix=".export-", dir=parent)
  tmp_dir = os.path.join(tmp_root, "saved_model")
  try:
    with make_session(fg, ckpt) as session, fg.graph.as_default():
      builder = tf.compat.v1.saved_model.Builder(tmp_dir)
      builder.add_meta_graph_and_variables(
        session,
        list(TAGS),
        signature_def_map={SIGNATURE_KEY: _signature_def(fg)},
        main_op=_main_op(fg),
        strip_default_attrs=True,
      )
      builder.save()
    export_dims.save_dims(tmp_dir, description)
    _put_in_place(tmp_dir, path, tmp_root, overwrite)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return description


def _main_op(fg: ForwardGraph) -> Optional[tf.Operation]:
  """Initialises local variables and tables at load time, if the graph has any."""
  with fg.graph.as_default():
    if fg.graph.get_collection(tf.compat.v1.GraphKeys.LOCAL_VARIABLES) or fg.graph.get_collection(
      tf.compat.v1.GraphKeys.TABLE_INITIALIZERS
    ):
      return tf.group(tf.compat.v1.local_variables_initializer(), tf.compat.v1.tables_initializer())
  return None
