"""Character language model on Python's own standard-library sources (the default graph).

Data: the lines of the top-level ``*.py`` files of the running Python's stdlib
(``sysconfig.get_paths()["stdlib"]``), read at run time in sorted file order; a line is one sequence
when it is non-empty, at most :data:`MAX_LINE_LEN` chars and printable ASCII. Every 20th line is
held out as the dev split. A sequence is ``[BOS, c_1 .. c_L, EOS]`` (``L+2`` ids).

Model: embedding ``[B,T,E]`` → residual causal dilated conv stack with ReLU and ``rc.dropout``
``[B,T,C]`` → logits ``[B,T,V]``. ``train_step`` shifts inside: inputs ``data[:, :-1]``, targets
``data[:, 1:]`` (new time dim ``T-1``); losses: ``"ce"`` ``[B,T-1]`` and ``"fer"`` (as_error).
``forward_step`` marks the next-char distribution ``[B,T,V]`` as the default output.

Letters: ``B`` batch, ``T`` time (chars incl. BOS/EOS), ``E`` embedding, ``C`` channels, ``V`` vocab.
"""

import functools
import os
import sysconfig
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc

MAX_LINE_LEN = 80
BOS_EOS = 0
_FIRST_CHAR, _LAST_CHAR = 32, 126  # printable ASCII, ids 1..95
VOCAB_SIZE = 1 + _LAST_CHAR - _FIRST_CHAR + 1  # 96
DEV_EVERY = 20
DEFAULT_MAX_TRAIN_SEQS = 6000
DEFAULT_MAX_DEV_SEQS = 500

EMBED_DIM = 64
CHANNELS = 128
KERNEL = 3
DILATIONS = (1, 2, 4, 8)
DROPOUT = 0.1  # tests may patch this


def extern_data_template() -> rc.TensorDict:
  time_dim = rc.Dim(None, name="time")
  vocab_dim = rc.Dim(VOCAB_SIZE, name="vocab")
  return rc.TensorDict({"data": rc.Tensor("data", [rc.batch_dim, time_dim], "int32", sparse_dim=vocab_dim)})


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  data = extern_data["data"]
  time_dim = data.dims[1]
  return rc.TensorDict(
    {"output": rc.Tensor("output", [rc.batch_dim, time_dim, data.sparse_dim], "float32", feature_dim=data.sparse_dim)}
  )


def encode(line: str) -> np.ndarray:
  """``[L+2]`` int32 ids: BOS, the chars, EOS."""
  ids = [BOS_EOS] + [ord(c) - _FIRST_CHAR + 1 for c in line] + [BOS_EOS]
  return np.asarray(ids, np.int32)


def decode(ids) -> str:
  return "".join(chr(int(i) - 1 + _FIRST_CHAR) for i in ids if int(i) != BOS_EOS)


def _usable(line: str) -> bool:
  return 0 < len(line) <= MAX_LINE_LEN and all(_FIRST_CHAR <= ord(c) <= _LAST_CHAR for c in line)


@functools.lru_cache(maxsize=1)
def stdlib_lines() -> List[str]:
  """The usable lines of the stdlib's top-level ``*.py`` files, in sorted file order."""
  folder = sysconfig.get_paths()["stdlib"] or os.path.dirname(os.__file__)
  lines = []
  for fname in sorted(os.listdir(folder)):
    if not fname.endswith(".py"):
      continue
    with open(os.path.join(folder, fname), encoding="utf-8", errors="replace") as f:
      lines.extend(line.rstrip() for line in f if _usable(line.rstrip()))
  if not lines:
    raise RuntimeError(f"no usable lines found in the stdlib folder {folder!r}")
  return lines


def default_data(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  """``split`` ``"train"`` / ``"dev"``: up to ``max_seqs`` sequences (default 6000 / 500)."""
  if split not in ("train", "dev"):
    raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
  if max_seqs is None:
    max_seqs = DEFAULT_MAX_TRAIN_SEQS if split == "train" else DEFAULT_MAX_DEV_SEQS
  lines = stdlib_lines()
  dev = split == "dev"
  picked = [line for i, line in enumerate(lines) if (i % DEV_EVERY == DEV_EVERY - 1) == dev]
  if not dev:  # spread the train subset over all files instead of taking the first ones
    stride = max(1, len(picked) // max_seqs)
    picked = picked[::stride]
  return [{"data": encode(line)} for line in picked[:max_seqs]]


class Model:
  """Variables of the char LM (created in the current graph)."""

  def __init__(self):
    init = tf.compat.v1.glorot_uniform_initializer()
    self.dropout = DROPOUT
    with tf.compat.v1.variable_scope("char_lm"):
      self.embedding = tf.compat.v1.get_variable("embedding", [VOCAB_SIZE, EMBED_DIM], initializer=init)
      self.proj = tf.compat.v1.get_variable("proj", [EMBED_DIM, CHANNELS], initializer=init)
      self.convs = []
      for i, _ in enumerate(DILATIONS):
        w = tf.compat.v1.get_variable(f"conv{i}/w", [KERNEL, CHANNELS, CHANNELS], initializer=init)
        b = tf.compat.v1.get_variable(f"conv{i}/b", [CHANNELS], initializer=tf.compat.v1.zeros_initializer())
        self.convs.append((w, b))
      self.out_w = tf.compat.v1.get_variable("out/w", [CHANNELS, VOCAB_SIZE], initializer=init)
      self.out_b = tf.compat.v1.get_variable("out/b", [VOCAB_SIZE], initializer=tf.compat.v1.zeros_initializer())

  def logits(self, ids: tf.Tensor) -> tf.Tensor:
    """``ids`` ``[B,T]`` int32 → logits ``[B,T,V]``; position t sees ids ``<= t`` only (causal)."""
    h = _dense(tf.nn.embedding_lookup(self.embedding, ids), self.proj)  # [B,T,C]
    time = tf.shape(h)[1]
    for (w, b), dilation in zip(self.convs, DILATIONS):
      # Causal dilated conv as one matmul: [h[t-(K-1)d], .., h[t-d], h[t]] @ w, zeros before t=0.
      padded = tf.pad(h, [[0, 0], [(KERNEL - 1) * dilation, 0], [0, 0]])  # [B,T+(K-1)d,C]
      taps = tf.concat([padded[:, k * dilation : k * dilation + time] for k in range(KERNEL)], axis=-1)  # [B,T,K*C]
      c = tf.nn.relu(_dense(taps, tf.reshape(w, [KERNEL * CHANNELS, CHANNELS])) + b)  # [B,T,C]
      h = h + rc.dropout(c, self.dropout, batch_axis=0)  # masks by global sequence index
    return _dense(h, self.out_w) + self.out_b


def _dense(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
  """``x`` ``[B,T,I]`` @ ``w`` ``[I,O]`` → ``[B,T,O]`` as one 2-D matmul (faster than a batched one)."""
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w)
  return tf.reshape(y, tf.concat([shape[:-1], [w.shape[1]]], axis=0))


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data = extern_data["data"]
  time_dim = data.dims[1]
  raw = tf.where(data.get_sequence_mask_broadcast(time_dim), data.get_raw(), BOS_EOS)  # [B,T], padding -> BOS_EOS
  inputs, targets = raw[:, :-1], raw[:, 1:]  # [B,T-1]
  shifted = rc.Dim(time_dim.get_dyn_size() - 1, name="time-1")
  logits = model.logits(inputs)  # [B,T-1,V]
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)  # [B,T-1]
  frame_err = tf.cast(tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets), tf.float32)
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(rc.Tensor("ce", [rc.batch_dim, shifted], "float32", raw_tensor=ce), "ce")
  ctx.mark_as_loss(rc.Tensor("fer", [rc.batch_dim, shifted], "float32", raw_tensor=frame_err), "fer", as_error=True)


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  data = extern_data["data"]
  probs = tf.nn.softmax(model.logits(tf.where(data.get_sequence_mask_broadcast(data.dims[1]), data.get_raw(), BOS_EOS)))
  rc.get_run_ctx().mark_as_default_output(
    rc.Tensor(
      "output", [rc.batch_dim, data.dims[1], data.sparse_dim], "float32", raw_tensor=probs, feature_dim=data.sparse_dim
    )
  )
