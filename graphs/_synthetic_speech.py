"""Synthetic "speech" shared by the float-feature goldens (not a graph module itself: ``_`` prefix).

An utterance is a label sequence of :data:`MIN_LABELS`..:data:`MAX_LABELS` labels over the ids
``0..NUM_LABELS-1``; each label is "spoken" for 2..4 frames, with
0..2 silence frames before, between and after the labels. A frame's features ``[F]`` are the
label's prototype (a fixed random unit-variance vector per label) plus Gaussian noise of
:data:`NOISE` standard deviation; silence frames are noise only. Everything is seeded per split, so
the data is deterministic.

Letters: ``T`` frames, ``F`` features (:data:`NUM_FEATURES`), ``S`` labels.
"""

from typing import Dict, List, Optional

import numpy as np

NUM_FEATURES = 8
NUM_LABELS = 6
MIN_LABELS, MAX_LABELS = 1, 6
NOISE = 0.5
SILENCE = NUM_LABELS  # the row of the silence "prototype" (zeros)
SIZES = {"train": 256, "dev": 64}
_SEEDS = {"train": 21, "dev": 22}
_PROTOTYPE_SEED = 20


def prototypes() -> np.ndarray:
  """``[NUM_LABELS+1, F]`` float32: row ``l`` is the prototype of label ``l``; the last row (silence) is zeros."""
  rng = np.random.default_rng(_PROTOTYPE_SEED)
  protos = rng.standard_normal([NUM_LABELS + 1, NUM_FEATURES]).astype(np.float32)
  protos[NUM_LABELS] = 0.0
  return protos


def utterances(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  """Up to ``max_seqs`` utterances of ``split`` (``"train"``: 256, ``"dev"``: 64):
  ``{"features": [T,F] float32, "labels": [S] int32 in 0..NUM_LABELS-1}``."""
  if split not in SIZES:
    raise ValueError(f"split must be one of {list(SIZES)}, got {split!r}")
  rng = np.random.default_rng(_SEEDS[split])
  protos = prototypes()
  out = []
  for _ in range(SIZES[split] if max_seqs is None else min(max_seqs, SIZES[split])):
    labels = rng.integers(0, NUM_LABELS, size=int(rng.integers(MIN_LABELS, MAX_LABELS + 1))).astype(np.int32)
    frames = [SILENCE] * int(rng.integers(0, 3))
    for label in labels:
      frames += [int(label)] * int(rng.integers(2, 5)) + [SILENCE] * int(rng.integers(0, 3))
    frame_labels = np.asarray(frames, np.int64)
    noise = rng.standard_normal([len(frames), NUM_FEATURES]).astype(np.float32) * NOISE
    out.append({"features": protos[frame_labels] + noise, "labels": labels})
  return out
