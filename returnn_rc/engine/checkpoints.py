"""Checkpoints of one model in a train dir: resume from the newest one that restores, never lose a good one.

Layout of a train dir (every name the engine writes; nothing else is ever written or deleted)::

  checkpoint                          TensorFlow's checkpoint state file, written last (atomically)
  model.<epoch>.index / .data-*       tf.compat.v1.train.Saver checkpoints (no meta graph), <epoch> = 001, 002, ...
  train_state.json                    graph name, variable shapes, per-epoch history (for the table)
  events.out.tfevents.*.returnn_rc    TensorBoard

Writing (:meth:`CheckpointDir.save`) uses TensorFlow's own pieces: ``train_state.json`` is written
atomically first (temporary file + ``os.replace``); then ``Saver.save`` writes the ``.data`` and
``.index`` files, each to a temporary file renamed into place, and only then the state file
(again temporary + rename); finally the Saver's rotation (``max_to_keep``) deletes the oldest
checkpoint beyond ``keep``. A crash at any point leaves the previous checkpoint as the latest.
After a restart, :meth:`CheckpointDir.recover_rotation` tells the Saver which checkpoints exist
(``Saver.recover_last_checkpoints``), so rotation continues where it left off.

Reading (:meth:`CheckpointDir.restore`) tries the checkpoints newest first and resumes from the first
that restores, with a warning naming each newer one that did not (files missing, truncated or
garbage ``.index`` / ``.data``); a missing or garbage state file or ``train_state.json`` is named in
a warning too (the checkpoints are found by their file names; the history of earlier epochs is
then lost). If checkpoints are present but none restores, it raises an error naming each and how to
proceed: it never starts over silently. A checkpoint of another model (another graph name in
``train_state.json``, or other variable names / shapes / dtypes, checked with
:mod:`returnn_rc.checkpoint_compat`) is an error. Nothing here deletes or overwrites a checkpoint that
restores: the engine resumes from the newest such one, so a new save always has a higher epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from returnn_rc import checkpoint_compat

STATE_FILE = "train_state.json"
CHECKPOINT_STATE_FILE = "checkpoint"
PREFIX = "model"
#: Suffix of the engine's TensorBoard event files (``FileWriter(filename_suffix=...)``): its own names.
EVENTS_SUFFIX = ".returnn_rc"

_CKPT_NAME = re.compile(r"^" + PREFIX + r"\.(\d{3,})$")
_DATA = r"data-\d{5}-of-\d{5}"
# Exactly the names the engine (and TensorFlow on its behalf) writes into a train dir.
_OWN_FILES = [
  re.compile(p)
  for p in (
    r"^checkpoint$",
    r"^train_state\.json$",
    r"^" + PREFIX + r"\.\d{3,}\.(index|" + _DATA + r")$",
    r"^" + PREFIX + r"\.\d{3,}\.(index|" + _DATA + r")\.tempstate\d+$",  # TF's temporary checkpoint files
    r"^checkpoint\.tmp[0-9a-f]{32}$",  # TF's temporary state file
    r"^\.train_state\.json\.[A-Za-z0-9_]+\.tmp$",  # ours (_write_json_atomic)
    r"^events\.out\.tfevents\.\d+\..+" + re.escape(EVENTS_SUFFIX) + r"$",
  )
]
_TEMP_FILES = [p for p in _OWN_FILES if "tempstate" in p.pattern or "tmp" in p.pattern]


def checkpoint_name(epoch: int) -> str:
  """``model.<epoch>``, e.g. ``model.003``."""
  return f"{PREFIX}.{epoch:03d}"


def is_own_file(name: str) -> bool:
  """Whether ``name`` (a file name in a train dir) is one the engine writes."""
  return any(p.match(name) for p in _OWN_FILES)


def check_train_dir(train_dir: Any) -> str:
  """The absolute path of ``train_dir``; ``ValueError`` if it is not usable as a train dir.

  Refused: a non-string or empty value, an existing non-directory, a filesystem root (``/``, or the
  root of any path) and the home directory: the engine writes checkpoints, ``train_state.json`` and
  events there, and ``fresh`` deletes its files there.
  """
  if not isinstance(train_dir, str) or not train_dir.strip():
    raise ValueError(f"train_dir must be a non-empty path, got {train_dir!r}")
  path = os.path.abspath(train_dir)
  real = os.path.realpath(path)
  hint = "use a directory of its own, e.g. ./train_dir/<graph>"
  if os.path.dirname(real) == real:
    raise ValueError(f"train_dir {train_dir!r} is the filesystem root {real!r}; {hint}")
  home = os.path.expanduser("~")
  if home != "~" and real == os.path.realpath(home):
    raise ValueError(f"train_dir {train_dir!r} is the home directory {real!r}; {hint}")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"train_dir {train_dir!r} exists and is not a directory")
  return path


def _write_json_atomic(path: str, obj: Any) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


@dataclasses.dataclass
class Restored:
  """What :meth:`CheckpointDir.restore` restored.

  Attributes:
    path: the checkpoint prefix, e.g. ``<train_dir>/model.002``.
    state: the content of ``train_state.json`` (``{}`` if it was missing or unreadable).
    warnings: one line per problem found on the way (a newer checkpoint that did not restore, a
      garbage state file, ...); each was also logged as a warning.
  """

  path: str
  state: Dict[str, Any]
  warnings: List[str]


class CheckpointDir:
  """Checkpoints of one model in ``train_dir``. Constructing it writes nothing.

  Args:
    train_dir: the directory (checked by :func:`check_train_dir`; created by :meth:`prepare`).
    graph_name: name of the graph module, stored in ``train_state.json`` and compared on resume.
    var_specs: :func:`returnn_rc.checkpoint_compat.variable_specs` of the saved variables; a checkpoint
      must hold exactly these (names, shapes, dtypes).
  """

  def __init__(self, train_dir: str, *, graph_name: str, var_specs: checkpoint_compat.VariableSpecs):
    self.train_dir = check_train_dir(train_dir)
    self.graph_name = graph_name
    self.var_specs = dict(var_specs)

  @property
  def state_path(self) -> str:
    return os.path.join(self.train_dir, STATE_FILE)

  # --- reading ----------------------------------------------------------------------------------

  def _names(self) -> List[str]:
    return sorted(os.listdir(self.train_dir)) if os.path.isdir(self.train_dir) else []

  def checkpoints(self) -> List[Tuple[int, str]]:
    """``(epoch, prefix)`` of each ``model.<epoch>`` whose ``.index`` file exists, oldest first."""
    found = []
    for name in self._names():
      if name.endswith(".index") and os.path.isfile(os.path.join(self.train_dir, name)):
        m = _CKPT_NAME.match(name[: -len(".index")])
        if m:
          found.append((int(m.group(1)), os.path.join(self.train_dir, name[: -len(".index")])))
    return sorted(found)

  def _has_checkpoint_files(self) -> bool:
    pattern = re.compile(r"^" + PREFIX + r"\.\d{3,}\.(index|" + _DATA + r")$")
    return any(pattern.match(n) and os.path.isfile(os.path.join(self.train_dir, n)) for n in self._names())

  def _listed(self) -> Tuple[List[str], Optional[str]]:
    """Checkpoint names listed in the state file, and a problem with the file (None if fine / absent)."""
    if not os.path.isfile(os.path.join(self.train_dir, CHECKPOINT_STATE_FILE)):
      return [], None
    state = tf.compat.v1.train.get_checkpoint_state(self.train_dir)  # None for garbage (TF logs why)
    if state is None:
      return [], "not a checkpoint state"
    names = list(state.all_model_checkpoint_paths) or (
      [state.model_checkpoint_path] if state.model_checkpoint_path else []
    )
    if not names:
      return [], "it lists no checkpoint"
    return [os.path.basename(n) for n in names], None

  def read_state(self) -> Tuple[Dict[str, Any], Optional[str]]:
    """The content of ``train_state.json`` and a problem with it (None if it is fine)."""
    if not os.path.exists(self.state_path):
      return {}, "it is missing"
    try:
      with open(self.state_path, encoding="utf-8") as f:
        state = json.load(f)
    except (OSError, ValueError) as exc:
      return {}, f"it is not valid JSON ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
      return {}, f"it is not a returnn_rc train state (got {type(state).__name__})"
    return state, None

  def restore(self, session: tf.compat.v1.Session, saver: tf.compat.v1.train.Saver) -> Optional[Restored]:
    """Restores the newest checkpoint that restores; None if the train dir holds no checkpoint at all.

    Raises:
      ValueError: the train dir holds another model's checkpoint (graph name or variables differ),
        or a checkpoint not written by the engine.
      RuntimeError: checkpoint files are present but none restores (each is named with its problem).
    """
    listed, listed_problem = self._listed()
    found = self.checkpoints()
    state_file_exists = os.path.isfile(os.path.join(self.train_dir, CHECKPOINT_STATE_FILE))
    if not found and not state_file_exists and not self._has_checkpoint_files():
      return None
    foreign = [n for n in listed if not _CKPT_NAME.match(n)]
    if foreign:
      raise ValueError(
        f"train_dir {self.train_dir!r} holds checkpoint(s) {foreign} (listed in its {CHECKPOINT_STATE_FILE!r} "
        f"file) that returnn_rc's engine did not write (its names are {PREFIX}.<epoch>); use another "
        f"train_dir"
      )
    warnings: List[str] = []
    if listed_problem:
      warnings.append(
        f"the checkpoint state file {CHECKPOINT_STATE_FILE!r} is unreadable ({listed_problem}); "
        f"the checkpoints were found by their file names"
      )
    found_names = {os.path.basename(p) for _, p in found}
    for name in listed:
      if name not in found_names:
        warnings.append(f"checkpoint {name!r} (listed in {CHECKPOINT_STATE_FILE!r}) has no .index file")
    state, state_problem = self.read_state()
    graph_problem = []
    if state_problem is None and state.get("graph") not in (None, self.graph_name):
      graph_problem = [f"graph {state.get('graph')!r} (this run: {self.graph_name!r})"]
    broken: List[str] = []
    for _, path in reversed(found):
      name = os.path.basename(path)
      try:
        stored = checkpoint_compat.reader_specs(checkpoint_compat.open_reader(path))
      except (tf.errors.OpError, ValueError) as exc:
        broken.append(f"{name} ({checkpoint_compat.describe_error(exc)})")
        continue
      problems = graph_problem + checkpoint_compat.mismatches(stored, self.var_specs)
      if problems:
        raise self._another_model(problems, name)
      try:
        with session.graph.as_default():  # the v1 Saver checks for graph mode
          saver.restore(session, path)
      except (tf.errors.OpError, ValueError) as exc:
        broken.append(f"{name} ({checkpoint_compat.describe_error(exc)})")
        continue
      warnings += [f"checkpoint {b} does not restore; skipped" for b in broken]
      if state_problem is not None:
        warnings.append(
          f"{STATE_FILE} is unusable ({state_problem}): the graph name is not checked and the "
          f"history of the epochs before is lost (it is written anew with the next checkpoint)"
        )
        state = {}
      for w in warnings:
        logging.warning("train_dir %s: %s; resuming from %s", self.train_dir, w, name)
      return Restored(path=path, state=state, warnings=warnings)
    if graph_problem:
      raise self._another_model(graph_problem, STATE_FILE)
    problems = broken + warnings
    raise RuntimeError(
      f"train_dir {self.train_dir!r} holds checkpoint files but no checkpoint restores: "
      + ("; ".join(problems) if problems else "none has an .index file")
      + ". Nothing was changed. To resume, restore the files (e.g. from a backup); to start over, pass "
      "fresh=True (--fresh: deletes only the engine's files there) or use another train_dir"
    )

  def _another_model(self, problems: List[str], source: str) -> ValueError:
    return ValueError(
      f"train_dir {self.train_dir!r} holds the checkpoint of another model: "
      + "; ".join(problems)
      + f" (found in {source}). Use another train_dir (or fresh=True / --fresh to delete the engine's files there "
      f"and start over)"
    )

  # --- writing ----------------------------------------------------------------------------------

  def prepare(self) -> None:
    """Creates the train dir and removes temporary files a crash of the engine left behind."""
    os.makedirs(self.train_dir, exist_ok=True)
    for name in self._names():
      if any(p.match(name) for p in _TEMP_FILES):
        path = os.path.join(self.train_dir, name)
        if os.path.isfile(path):
          os.remove(path)

  def recover_rotation(self, saver: tf.compat.v1.train.Saver) -> None:
    """Tells ``saver`` (``max_to_keep``) the checkpoints on disk, oldest first, so its rotation knows
    them after a restart (``Saver.recover_last_checkpoints``)."""
    saver.recover_last_checkpoints([path for _, path in self.checkpoints()])

  def repair_state_file(self, restored: Restored) -> None:
    """After a restore with warnings: TF's state file names the restored checkpoint as the latest and
    lists the checkpoints up to it (so ``tf.train.latest_checkpoint(train_dir)`` finds it, e.g. for the
    export). Written atomically by TensorFlow; no checkpoint file is touched."""
    epoch = int(_CKPT_NAME.match(os.path.basename(restored.path)).group(1))
    kept = [os.path.basename(p) for e, p in self.checkpoints() if e <= epoch]
    tf.compat.v1.train.update_checkpoint_state(
      self.train_dir, os.path.basename(restored.path), all_model_checkpoint_paths=kept
    )

  def save(
    self, session: tf.compat.v1.Session, saver: tf.compat.v1.train.Saver, *, epoch: int, history: List[Dict[str, Any]]
  ) -> str:
    """Saves the checkpoint of ``epoch`` (see the module docstring for the order); returns its prefix."""
    _write_json_atomic(
      self.state_path,
      {
        "graph": self.graph_name,
        "variables": {k: s for k, (s, _) in self.var_specs.items()},
        "epoch": epoch,
        "history": history,
      },
    )
    with session.graph.as_default():  # the v1 Saver checks for graph mode
      return saver.save(
        session, os.path.join(self.train_dir, checkpoint_name(epoch)), write_meta_graph=False, write_state=True
      )

  def delete_own_files(self) -> List[str]:
    """Deletes the engine's files (see the module docstring: exact names only); returns their names.

    Any other file (a user's ``model.py``, another tool's events, a subdirectory) is left alone.
    """
    deleted = []
    for name in self._names():
      path = os.path.join(self.train_dir, name)
      if is_own_file(name) and (os.path.isfile(path) or os.path.islink(path)):
        os.remove(path)
        deleted.append(name)
    return deleted
