"""Keep the best N checkpoints by a dev figure, beside (and independent of) the last-N rotation.

Layout, in ``<train_dir>/best/``::

  best_checkpoints.json     this module's state: the loss name and the kept entries
  checkpoint                a tf.compat.v1.train checkpoint state file: the best checkpoint is the
                            "latest", so ``tf.train.latest_checkpoint(<train_dir>/best)`` (and
                            ``tools/evaluate.py --checkpoint=<train_dir>/best``) give the best one
  model.<epoch>.index ...   hard links of the kept checkpoints' files (copies where links fail)

After each epoch's checkpoint the engine calls :meth:`BestCheckpoints.update` with the epoch's figure
of the keyed loss (lower is better; dev if there is a dev set, else train). If it is among the
``keep`` best so far, the checkpoint's files are linked in, and the files of the entry that drops
out are removed. The rotation of the last N checkpoints in the train dir may delete its own files
at any time: the links keep the data. Only files listed in this module's own state are ever
deleted; the state file is written atomically after the links exist.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import tensorflow as tf

BEST_DIR = "best"
STATE_FILE = "best_checkpoints.json"


# The files this module links into best/: a Saver prefix's files ("model.001.index", "model.001.data-00000-of-00001").
_OWN_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(index|meta|data-\d+-of-\d+)")


def _own_file(entry: Dict[str, Any], name: Any) -> bool:
  """Whether ``name`` (listed in the state of ``entry``) can be a file this module wrote: a plain file name of the
  entry's checkpoint prefix. A hand-edited state naming anything else ("../notes.txt") deletes nothing."""
  prefix = entry.get("checkpoint")
  return (
    isinstance(name, str)
    and isinstance(prefix, str)
    and name == os.path.basename(name)
    and name.startswith(prefix + ".")
    and _OWN_FILE.fullmatch(name) is not None
  )


def _write_json_atomic(path: str, obj: Any) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
  with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def _link_or_copy(src: str, dst: str) -> None:
  if os.path.exists(dst):
    os.remove(dst)
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


class BestCheckpoints:
  """The best ``keep`` checkpoints of a train dir by the figure of ``loss_name`` (lower is better).

  Args:
    train_dir: the engine's train dir; the kept checkpoints live in ``<train_dir>/best``.
    keep: how many to keep (>= 1).
    loss_name: the loss whose figure ranks the checkpoints (stored; a train dir ranked by another
      loss is an error).
  """

  def __init__(self, train_dir: str, *, keep: int, loss_name: str):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise ValueError(f"keep_best_checkpoints must be an int >= 1, got {keep!r}")
    self.dir = os.path.join(os.path.abspath(train_dir), BEST_DIR)
    self.keep = keep
    self.loss_name = loss_name
    self.entries: List[Dict[str, Any]] = []
    if os.path.exists(self.state_path):
      with open(self.state_path, encoding="utf-8") as f:
        state = json.load(f)
      if state.get("loss") != loss_name:
        raise ValueError(
          f"{self.dir!r} keeps the best checkpoints by loss {state.get('loss')!r}, this run ranks "
          f"by {loss_name!r}; use the same best_checkpoint_loss or another train dir"
        )
      self.entries = list(state.get("entries", []))

  @property
  def state_path(self) -> str:
    return os.path.join(self.dir, STATE_FILE)

  def best(self) -> Optional[str]:
    """Path prefix of the best kept checkpoint, or None."""
    return os.path.join(self.dir, self.entries[0]["checkpoint"]) if self.entries else None

  def update(self, checkpoint_path: str, *, epoch: int, figure: float) -> bool:
    """Offers the checkpoint ``checkpoint_path`` (a Saver prefix) of ``epoch`` with ``figure``; returns
    whether it is kept. A non-finite figure is never kept."""
    if not math.isfinite(figure):
      return False
    ranked = [e for e in self.entries if e["epoch"] != epoch]
    candidate = {"epoch": int(epoch), "figure": float(figure), "checkpoint": os.path.basename(checkpoint_path)}
    ranked = sorted(ranked + [candidate], key=lambda e: (e["figure"], e["epoch"]))
    kept, dropped = ranked[: self.keep], ranked[self.keep :]
    if candidate not in kept:
      return False
    os.makedirs(self.dir, exist_ok=True)
    files = sorted(glob.glob(checkpoint_path + ".*"))
    if not files:
      raise ValueError(f"checkpoint {checkpoint_path!r} has no files to keep")
    candidate["files"] = [os.path.basename(p) for p in files]
    for path in files:
      _link_or_copy(path, os.path.join(self.dir, os.path.basename(path)))
    self.entries = kept
    _write_json_atomic(self.state_path, {"loss": self.loss_name, "entries": self.entries})
    tf.compat.v1.train.update_checkpoint_state(
      self.dir,
      self.entries[0]["checkpoint"],
      all_model_checkpoint_paths=[e["checkpoint"] for e in reversed(self.entries)],
    )
    still = {f for e in kept for f in e.get("files", [])}
    for entry in dropped:
      for name in entry.get("files", []):
        path = os.path.join(self.dir, name)
        if name not in still and _own_file(entry, name) and os.path.exists(path):
          os.remove(path)
    return True

  def delete_all(self) -> None:
    """Deletes the files this module wrote (see :func:`delete_best`)."""
    delete_best(os.path.dirname(self.dir))
    self.entries = []


def delete_best(train_dir: str) -> None:
  """Deletes the files :class:`BestCheckpoints` wrote in ``<train_dir>/best`` (the kept links listed in
  its state, the state, the checkpoint state file) and the directory if it is then empty; other files stay."""
  best_dir = os.path.join(os.path.abspath(train_dir), BEST_DIR)
  state_path = os.path.join(best_dir, STATE_FILE)
  if not os.path.exists(state_path):
    return
  with open(state_path, encoding="utf-8") as f:
    entries = json.load(f).get("entries", [])
  for entry in entries:
    for name in entry.get("files", []):
      path = os.path.join(best_dir, name)
      if _own_file(entry, name) and os.path.isfile(path):
        os.remove(path)
  for name in ("checkpoint", STATE_FILE):
    path = os.path.join(best_dir, name)
    if os.path.exists(path):
      os.remove(path)
  if not os.listdir(best_dir):
    os.rmdir(best_dir)
