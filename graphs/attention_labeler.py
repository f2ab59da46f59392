"""Attention labeler on synthetic float features: a decoder over the label sequence attends to the
frames; a loss with two dynamic dims ``[B,S,T]`` (guided attention) and an output with two.

Data: :mod:`graphs._synthetic_speech`. Inputs: ``"data"`` ``[B,T,F]`` float32 features,
``"classes"`` ``[B,S]`` int32 labels ``0..L-1`` (two dynamic dims ``T`` and ``S``).

Model (teacher forcing, no recurrence): encoder: padded frames zeroed (selection) → dense with ReLU
``[B,T,H]`` → ``rc.dropout``. Decoder queries ``[B,S,H]``: the embedding of the previous label (BOS
first). Attention weights ``[B,S,T]``: softmax over the valid frames (padded ones excluded by
selection) of ``q·k/sqrt(H)`` minus a learned location penalty ``(p_s - p_t)^2`` (``p`` the relative
positions ``(i+0.5)/len`` in each sequence). Logits ``[B,S,L]`` from the context ``[B,S,H]`` and the
query.

Losses: ``"ce"`` ``[B,S]``; ``"guided_att"`` ``[B,S,T]`` = ``A * (1 - exp(-(p_s - p_t)^2 / (2 g^2)))``,
the guided attention loss of Tachibana et al. (2018) (mean over the valid ``(s,t)`` pairs, scale
:data:`GUIDED_SCALE`); ``"err"`` ``[B,S]`` (as_error). Outputs: ``"output"`` label posteriors ``[B,S,L]``
(default) and ``"attention"`` ``[B,S,T]``.

Letters: ``B`` batch, ``T`` frames, ``F`` features, ``H`` hidden, ``S`` labels, ``L`` labels in the vocabulary.
"""

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc
from graphs import _synthetic_speech as speech

NUM_FEATURES = speech.NUM_FEATURES
NUM_LABELS = speech.NUM_LABELS
BOS = NUM_LABELS  # the extra embedding row of the "previous label" of s=0
HIDDEN = 32
DROPOUT = 0.1
GUIDED_WIDTH = 0.2  # g
GUIDED_SCALE = 1.0
_MASKED_ENERGY = -1e9


def extern_data_template() -> rc.TensorDict:
  time_dim = rc.Dim(None, name="time")
  feature_dim = rc.Dim(NUM_FEATURES, name="feature")
  label_time_dim = rc.Dim(None, name="label_time")
  labels_dim = rc.Dim(NUM_LABELS, name="labels")
  return rc.TensorDict(
    {
      "data": rc.Tensor("data", [rc.batch_dim, time_dim, feature_dim], "float32", feature_dim=feature_dim),
      "classes": rc.Tensor("classes", [rc.batch_dim, label_time_dim], "int32", sparse_dim=labels_dim),
    }
  )


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  time_dim = extern_data["data"].dims[1]
  label_time_dim, labels_dim = extern_data["classes"].dims[1], extern_data["classes"].sparse_dim
  return rc.TensorDict(
    {
      "output": rc.Tensor("output", [rc.batch_dim, label_time_dim, labels_dim], "float32", feature_dim=labels_dim),
      "attention": rc.Tensor("attention", [rc.batch_dim, label_time_dim, time_dim], "float32"),
    }
  )


def default_data(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  """``split`` ``"train"`` (256) / ``"dev"`` (64): ``{"data": [T,F] float32, "classes": [S] int32}``."""
  return [{"data": u["features"], "classes": u["labels"]} for u in speech.utterances(split, max_seqs)]


class Model:
  """Variables of the attention labeler (created in the current graph)."""

  def __init__(self):
    init = tf.compat.v1.glorot_uniform_initializer()
    zeros = tf.compat.v1.zeros_initializer()
    with tf.compat.v1.variable_scope("attention_labeler"):
      self.enc_w = tf.compat.v1.get_variable("enc/w", [NUM_FEATURES, HIDDEN], initializer=init)
      self.enc_b = tf.compat.v1.get_variable("enc/b", [HIDDEN], initializer=zeros)
      self.embedding = tf.compat.v1.get_variable("embedding", [NUM_LABELS + 1, HIDDEN], initializer=init)
      self.location = tf.compat.v1.get_variable("location", [], initializer=tf.compat.v1.constant_initializer(1.0))
      self.out_w = tf.compat.v1.get_variable("out/w", [2 * HIDDEN, NUM_LABELS], initializer=init)
      self.out_b = tf.compat.v1.get_variable("out/b", [NUM_LABELS], initializer=zeros)

  def __call__(self, data: rc.Tensor, classes: rc.Tensor):
    """Returns (logits ``[B,S,L]``, attention weights ``[B,S,T]``, location distances ``(p_s-p_t)^2`` ``[B,S,T]``)."""
    time_dim, label_time_dim = data.dims[1], classes.dims[1]
    x = tf.where(data.get_sequence_mask_broadcast(time_dim), data.get_raw(), 0.0)  # [B,T,F], padding -> 0
    enc = rc.dropout(tf.nn.relu(_dense(x, self.enc_w) + self.enc_b), DROPOUT, batch_axis=0)  # [B,T,H], by seq index
    labels = _valid_labels(classes)  # [B,S]
    prev = tf.concat([tf.fill([tf.shape(labels)[0], 1], BOS), labels[:, :-1]], axis=1)  # [B,S]
    query = tf.nn.embedding_lookup(self.embedding, prev)  # [B,S,H]
    dist = tf.square(
      _rel_positions(label_time_dim, tf.shape(labels)[1])[:, :, None]
      - _rel_positions(time_dim, tf.shape(x)[1])[:, None, :]
    )  # [B,S,T]
    energies = tf.matmul(query, enc, transpose_b=True) / np.sqrt(HIDDEN) - tf.nn.softplus(self.location) * 10.0 * dist
    frame_valid = tf.sequence_mask(time_dim.get_dyn_size(), tf.shape(x)[1])[:, None, :]  # [B,1,T]
    att = tf.nn.softmax(tf.where(frame_valid, energies, _MASKED_ENERGY), axis=-1)  # [B,S,T]
    context = tf.matmul(att, enc)  # [B,S,H]
    logits = _dense(tf.concat([context, query], axis=-1), self.out_w) + self.out_b  # [B,S,L]
    return logits, att, dist


def _valid_labels(classes: rc.Tensor) -> tf.Tensor:
  """``[B,S]`` labels with the padded positions set to 0 (garbage there must not reach a lookup)."""
  return tf.where(classes.get_sequence_mask_broadcast(classes.dims[1]), classes.get_raw(), 0)


def _rel_positions(dim: rc.Dim, size: tf.Tensor) -> tf.Tensor:
  """``[B,N]`` relative positions ``(i+0.5)/len`` of the N (padded) positions of ``dim`` per sequence."""
  lens = tf.cast(tf.maximum(dim.get_dyn_size(), 1), tf.float32)  # [B]
  return (tf.cast(tf.range(size), tf.float32)[None, :] + 0.5) / lens[:, None]


def _dense(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
  """``x`` ``[B,N,I]`` @ ``w`` ``[I,O]`` → ``[B,N,O]``."""
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w)
  return tf.reshape(y, tf.concat([shape[:-1], [w.shape[1]]], axis=0))


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, classes = extern_data["data"], extern_data["classes"]
  time_dim, label_time_dim = data.dims[1], classes.dims[1]
  logits, att, dist = model(data, classes)
  labels = _valid_labels(classes)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)  # [B,S]
  err = tf.cast(tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)  # [B,S]
  guided = att * (1.0 - tf.exp(-dist / (2.0 * GUIDED_WIDTH**2)))  # [B,S,T]
  dims = [rc.batch_dim, label_time_dim]
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(rc.Tensor("ce", dims, "float32", raw_tensor=ce), "ce")
  ctx.mark_as_loss(
    rc.Tensor("guided_att", dims + [time_dim], "float32", raw_tensor=guided),
    "guided_att",
    scale=GUIDED_SCALE,
    use_normalized_loss=True,
  )
  ctx.mark_as_loss(rc.Tensor("err", dims, "float32", raw_tensor=err), "err", as_error=True)


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  data, classes = extern_data["data"], extern_data["classes"]
  time_dim, label_time_dim, labels_dim = data.dims[1], classes.dims[1], classes.sparse_dim
  logits, att, _ = model(data, classes)
  ctx = rc.get_run_ctx()
  ctx.mark_as_default_output(
    rc.Tensor(
      "output",
      [rc.batch_dim, label_time_dim, labels_dim],
      "float32",
      raw_tensor=tf.nn.softmax(logits),
      feature_dim=labels_dim,
    )
  )
  ctx.mark_as_output(
    rc.Tensor("attention", [rc.batch_dim, label_time_dim, time_dim], "float32", raw_tensor=att), "attention"
  )
