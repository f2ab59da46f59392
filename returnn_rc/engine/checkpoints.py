"""Atomic checkpoints in a train dir, with a model description to refuse another model's checkpoint.

Layout of a train dir::

  checkpoint                      the checkpoint state file (tf.compat.v1.train), written last
  model.<epoch>.index / .data-*   tf.compat.v1.train.Saver checkpoints (no meta graph)
  train_state.json                graph name, variable shapes, per-epoch history
  events.out.tfevents.*           TensorBoard

:meth:`CheckpointDir.save` writes into a temporary directory inside the train dir, moves the files
in with ``os.replace``, writes ``train_state.json`` atomically and updates the state file last: a
crash at any point leaves the previous checkpoint as the latest, never a partial one.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import tensorflow as tf

STATE_FILE = "train_state.json"
PREFIX = "model"
_TMP_PREFIX = ".tmp-ckpt-"


def _write_json_atomic(path: str, obj: Any) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def variable_shapes(variables) -> Dict[str, List[int]]:
  """name (without ``:0``) → shape, for the variables a saver stores."""
  return {v.op.name: [int(s) for s in v.shape.as_list()] for v in variables}


class CheckpointDir:
  """Checkpoints of one model in ``train_dir``.

  Args:
    train_dir: the directory (created if missing).
    graph_name: name of the graph module, stored and compared on resume.
    var_shapes: :func:`variable_shapes` of the saved variables, stored and compared on resume.
    keep: number of checkpoints to keep (older ones are deleted after a successful save).
  """

  def __init__(self, train_dir: str, *, graph_name: str, var_shapes: Dict[str, List[int]], keep: int = 2):
    self.train_dir = os.path.abspath(train_dir)
    self.graph_name = graph_name
    self.var_shapes = var_shapes
    self.keep = max(1, int(keep))
    os.makedirs(self.train_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(self.train_dir, _TMP_PREFIX + "*")):  # left by a crash
      shutil.rmtree(stale, ignore_errors=True)

  @property
  def state_path(self) -> str:
    return os.path.join(self.train_dir, STATE_FILE)

  def latest(self) -> Optional[str]:
    """Path prefix of the latest complete checkpoint, or None."""
    return tf.compat.v1.train.latest_checkpoint(self.train_dir)

  def read_state(self) -> Dict[str, Any]:
    with open(self.state_path, encoding="utf-8") as f:
      return json.load(f)

  def check_compatible(self) -> Optional[Dict[str, Any]]:
    """The stored state if the latest checkpoint is of this model; None if there is none.

    Raises ``ValueError`` naming the train dir and the difference (graph name, missing / unexpected
    variables, shapes) if it holds another model's checkpoint.
    """
    latest = self.latest()
    if latest is None:
      return None
    if not os.path.exists(self.state_path):
      raise ValueError(
          f"train_dir {self.train_dir!r} holds checkpoint {latest!r} but no {STATE_FILE} describing its model; "
          f"it was not written by returnn_rc's engine: use another --train_dir")
    state = self.read_state()
    problems = []
    if state.get("graph") != self.graph_name:
      problems.append(f"graph {state.get('graph')!r} (this run: {self.graph_name!r})")
    stored = state.get("variables", {})
    missing = sorted(set(self.var_shapes) - set(stored))
    extra = sorted(set(stored) - set(self.var_shapes))
    if missing:
      problems.append(f"variables missing in the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
      problems.append(f"unexpected variables in the checkpoint: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    shapes = [f"{k}: {stored[k]} vs {self.var_shapes[k]}" for k in sorted(set(stored) & set(self.var_shapes))
              if list(stored[k]) != list(self.var_shapes[k])]
    if shapes:
      problems.append(f"shape mismatch (checkpoint vs this model): {shapes[:5]}")
    if problems:
      raise ValueError(
          f"train_dir {self.train_dir!r} holds the checkpoint of another model: " + "; ".join(problems) +
          ". Use another --train_dir (or --fresh to delete it).")
    return state

  def save(self, session: tf.compat.v1.Session, saver: tf.compat.v1.train.Saver, *, epoch: int,
           history: List[Dict[str, Any]]) -> str:
    """Saves a checkpoint of ``epoch`` atomically; returns its path prefix."""
    name = f"{PREFIX}.{epoch:03d}"
    final = os.path.join(self.train_dir, name)
    tmp_dir = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.train_dir)
    try:
      saver.save(session, os.path.join(tmp_dir, name), write_meta_graph=False, write_state=False)
      for path in sorted(glob.glob(os.path.join(tmp_dir, name + ".*"))):
        os.replace(path, os.path.join(self.train_dir, os.path.basename(path)))
    finally:
      shutil.rmtree(tmp_dir, ignore_errors=True)
    _write_json_atomic(self.state_path, {
        "graph": self.graph_name, "variables": self.var_shapes, "epoch": epoch, "history": history})
    old = tf.compat.v1.train.get_checkpoint_state(self.train_dir)
    paths = [os.path.basename(p) for p in (old.all_model_checkpoint_paths if old else [])]
    paths = [p for p in paths if p != name] + [name]
    keep, drop = paths[-self.keep:], paths[:-self.keep]
    tf.compat.v1.train.update_checkpoint_state(self.train_dir, name, all_model_checkpoint_paths=keep)
    for p in drop:
      for path in glob.glob(os.path.join(self.train_dir, p + ".*")):
        os.remove(path)
    return final

  def delete_all(self) -> None:
    """Deletes this engine's files (checkpoints, state, events); leaves other files alone."""
    patterns = ["checkpoint", f"{PREFIX}.*", STATE_FILE, "events.out.tfevents.*", _TMP_PREFIX + "*"]
    for pattern in patterns:
      for path in glob.glob(os.path.join(self.train_dir, pattern)):
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
