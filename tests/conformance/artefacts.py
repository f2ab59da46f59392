"""The committed golden artefacts: what :mod:`tests.conformance.generate_artefacts` writes and
``artefacts_test.py`` restores.

Per golden, ``tests/conformance/artefacts/<name>/`` holds:

- ``model.index`` / ``model.data-00000-of-00001``: a checkpoint of everything the engine's ``Saver``
  stores (model, Adam slots, learning-rate variables, graph state), after :data:`TRAIN_STEPS` train
  steps of the engine's train graph (:func:`goldens.build`) on :func:`train_batch`;
- ``dims.json``: the dims description of a SavedModel exported from that checkpoint, without the
  fields that name the machine (:data:`VOLATILE_DIMS_KEYS`);
- ``figures.json``: :func:`figures` of the restored graph: the dev figures (summed, inv norm per
  loss, train flag off), the total loss, a fingerprint of the gradients and of the forward outputs,
  and the dev figures after one more train step.

Goldens whose default sizes would make the checkpoint large are built smaller for their artefacts
(:data:`SMALL_SIZES`, module constants patched while building); their variable names are the same at
every size.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Mapping
from unittest import mock

import numpy as np
import tensorflow as tf

from tests.conformance import goldens

ARTEFACTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artefacts")
CHECKPOINT = "model"
CHECKPOINT_FILES = ("model.index", "model.data-00000-of-00001")
DIMS_JSON = "dims.json"
FIGURES_JSON = "figures.json"
GENERATE_CMD = "python -m tests.conformance.generate_artefacts"
TRAIN_STEPS = 3
#: Fields of the dims description that name the machine or the run, not the format.
VOLATILE_DIMS_KEYS = ("checkpoint", "tensorflow_version")
#: golden → module constants patched while its artefacts are made and restored (checkpoint size).
SMALL_SIZES: Dict[str, Dict[str, Any]] = {"char_lm": {"EMBED_DIM": 8, "CHANNELS": 16}}


def golden_dir(name: str) -> str:
  return os.path.join(ARTEFACTS_DIR, name)


def checkpoint_path(name: str) -> str:
  return os.path.join(golden_dir(name), CHECKPOINT)


def sizes(name: str) -> contextlib.AbstractContextManager:
  """Patches the constants of :data:`SMALL_SIZES` of golden ``name`` meanwhile (nothing for the others)."""
  overrides = SMALL_SIZES.get(name)
  return mock.patch.multiple(goldens.module(name), **overrides) if overrides else contextlib.nullcontext()


def train_batch(built: goldens.Built) -> Dict[str, np.ndarray]:
  """The fixed train batch: the first :data:`goldens.NUM_SEQS` train sequences, padded."""
  return built.pad(goldens.data(built.name, "train"))


def dev_batch(built: goldens.Built) -> Dict[str, np.ndarray]:
  """The fixed dev batch: the first :data:`goldens.NUM_SEQS` dev sequences, padded."""
  return built.pad(goldens.data(built.name, "dev"))


def output_fingerprint(built: goldens.Built, outputs: Mapping[str, np.ndarray]) -> Dict[str, list]:
  """Output name → per sequence, the sum of squares of its valid elements (float64)."""
  out = {}
  for name, (batch_axis, dyn) in built.output_dims.items():
    lens = {axis: outputs[key] for axis, key in dyn.items()}
    num_seqs = outputs[name].shape[batch_axis]
    out[name] = [
      float(np.sum(np.square(goldens.per_seq(outputs[name], batch_axis, lens, b), dtype=np.float64)))
      for b in range(num_seqs)
    ]
  return out


def figures(built: goldens.Built, sess: tf.compat.v1.Session) -> Dict[str, Any]:
  """The figures of ``figures.json``, on :func:`dev_batch` with the train flag off: ``"dev"``: loss →
  [summed, inv_norm]; ``"total"``: the total loss (scales and normalisation); ``"grads"``: variable → the
  sum of squares of its gradient; ``"outputs"``: :func:`output_fingerprint`; then one train step on
  :func:`train_batch` (Adam, slots as restored) and ``"dev_after_step"``: loss → [summed, inv_norm]."""
  dev_feed = built.feed(dev_batch(built), train=False)

  def dev():
    return {k: [float(s), float(n)] for k, (s, n) in sess.run(built.report, dev_feed).items()}

  total, grads, outputs = sess.run([built.total_loss, built.grads, built.outputs], dev_feed)
  result = {
    "dev": dev(),
    "total": float(total),
    "grads": {k: float(np.sum(np.square(g, dtype=np.float64))) for k, g in grads.items()},
    "outputs": output_fingerprint(built, outputs),
  }
  sess.run(built.train_op, built.feed(train_batch(built), train=True))
  result["dev_after_step"] = dev()
  return result


def stable_dims(desc: Mapping[str, Any]) -> Dict[str, Any]:
  """The dims description without :data:`VOLATILE_DIMS_KEYS`, as plain JSON values."""
  return json.loads(json.dumps({k: v for k, v in desc.items() if k not in VOLATILE_DIMS_KEYS}))


def read_json(name: str, file_name: str) -> Any:
  with open(os.path.join(golden_dir(name), file_name), encoding="utf-8") as f:
    return json.load(f)


def write_json(path: str, value: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
