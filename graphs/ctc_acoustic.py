"""Acoustic model with CTC on synthetic float features: input ``[B,T,F]``, a per-sequence loss ``[B]``
normalised by the target lengths (as CTC users do) and a time-major frame loss ``[T,B]``.

Data: :mod:`graphs._synthetic_speech` (labels spoken for 2..4 frames each, features = the label's
prototype + noise). Inputs: ``"data"`` ``[B,T,F]`` float32 features, ``"classes"`` ``[B,S]`` int32
labels ``0..L-1``; ``T`` and ``S`` are two dynamic dims.

Model: padded frames zeroed (selection) → conv over time (kernel 3) with ReLU ``[B,T,H]`` →
``rc.dropout`` → dense → logits ``[T,B,L+1]`` time-major (blank last, index ``L``, as TF's CTC op and
RETURNN have it). Losses: ``"ctc"`` ``[B]`` = ``tf.compat.v1.nn.ctc_loss`` (TF's ``CTCLoss`` kernel on
the valid labels as a ``SparseTensor``) with ``custom_inv_norm_factor`` = the target lengths ``S`` (its
figure: CTC loss per label); ``"neg_entropy"`` ``[T,B]`` (time-major) = the negative entropy of the
frame posteriors, a confidence penalty (scale :data:`ENTROPY_SCALE`, the mean over frames).
Output: the frame posteriors ``[B,T,L+1]``.

Letters: ``B`` batch, ``T`` frames, ``F`` features, ``H`` hidden, ``S`` labels, ``L`` labels in the vocabulary.
"""

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc
from graphs import _synthetic_speech as speech

NUM_FEATURES = speech.NUM_FEATURES
NUM_LABELS = speech.NUM_LABELS
BLANK = NUM_LABELS  # the last class
HIDDEN = 32
KERNEL = 3
DROPOUT = 0.1
ENTROPY_SCALE = 0.01


def extern_data_template() -> rc.TensorDict:
  time_dim = rc.Dim(None, name="time")
  feature_dim = rc.Dim(NUM_FEATURES, name="feature")
  label_time_dim = rc.Dim(None, name="label_time")
  labels_dim = rc.Dim(NUM_LABELS + 1, name="labels")  # incl. the blank (last)
  return rc.TensorDict(
    {
      "data": rc.Tensor("data", [rc.batch_dim, time_dim, feature_dim], "float32", feature_dim=feature_dim),
      "classes": rc.Tensor("classes", [rc.batch_dim, label_time_dim], "int32", sparse_dim=labels_dim),
    }
  )


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  time_dim = extern_data["data"].dims[1]
  labels_dim = extern_data["classes"].sparse_dim
  return rc.TensorDict(
    {"output": rc.Tensor("output", [rc.batch_dim, time_dim, labels_dim], "float32", feature_dim=labels_dim)}
  )


def default_data(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  """``split`` ``"train"`` (256) / ``"dev"`` (64): ``{"data": [T,F] float32, "classes": [S] int32}``."""
  return [{"data": u["features"], "classes": u["labels"]} for u in speech.utterances(split, max_seqs)]


class Model:
  """Variables of the acoustic model (created in the current graph)."""

  def __init__(self):
    init = tf.compat.v1.glorot_uniform_initializer()
    zeros = tf.compat.v1.zeros_initializer()
    with tf.compat.v1.variable_scope("ctc_acoustic"):
      self.conv_w = tf.compat.v1.get_variable("conv/w", [KERNEL * NUM_FEATURES, HIDDEN], initializer=init)
      self.conv_b = tf.compat.v1.get_variable("conv/b", [HIDDEN], initializer=zeros)
      self.out_w = tf.compat.v1.get_variable("out/w", [HIDDEN, NUM_LABELS + 1], initializer=init)
      self.out_b = tf.compat.v1.get_variable("out/b", [NUM_LABELS + 1], initializer=zeros)

  def logits(self, data: rc.Tensor) -> tf.Tensor:
    """``data`` ``[B,T,F]`` → logits ``[B,T,L+1]``; frame t sees frames t-1..t+1 (zeros outside)."""
    x = tf.where(data.get_sequence_mask_broadcast(data.dims[1]), data.get_raw(), 0.0)  # padding -> 0
    time = tf.shape(x)[1]
    padded = tf.pad(x, [[0, 0], [KERNEL // 2, KERNEL // 2], [0, 0]])  # [B,T+K-1,F]
    taps = tf.concat([padded[:, k : k + time] for k in range(KERNEL)], axis=-1)  # [B,T,K*F]
    h = tf.nn.relu(_dense(taps, self.conv_w) + self.conv_b)  # [B,T,H]
    h = rc.dropout(h, DROPOUT, batch_axis=0)  # masks by global sequence index
    return _dense(h, self.out_w) + self.out_b


def _dense(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
  """``x`` ``[B,T,I]`` @ ``w`` ``[I,O]`` → ``[B,T,O]``."""
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w)
  return tf.reshape(y, tf.concat([shape[:-1], [w.shape[1]]], axis=0))


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, classes = extern_data["data"], extern_data["classes"]
  time_dim, label_time_dim = data.dims[1], classes.dims[1]
  logits = tf.transpose(model.logits(data), [1, 0, 2])  # [T,B,L+1] time-major
  valid = tf.where(classes.get_sequence_mask_broadcast(label_time_dim))  # [N,2] (b, s) of the valid labels
  labels = tf.SparseTensor(valid, tf.gather_nd(classes.get_raw(), valid), tf.shape(classes.get_raw(), tf.int64))
  ctc = tf.compat.v1.nn.ctc_loss(labels, logits, time_dim.get_dyn_size(), time_major=True)  # [B]
  log_probs = tf.nn.log_softmax(logits)  # [T,B,L+1]
  neg_entropy = tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)  # [T,B]
  label_lens = tf.cast(label_time_dim.get_dyn_size(), tf.float32)  # [B]
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(
    rc.Tensor("ctc", [rc.batch_dim], "float32", raw_tensor=ctc),
    "ctc",
    custom_inv_norm_factor=rc.Tensor("label_lens", [rc.batch_dim], "float32", raw_tensor=label_lens),
  )
  ctx.mark_as_loss(
    rc.Tensor("neg_entropy", [time_dim, rc.batch_dim], "float32", raw_tensor=neg_entropy),
    "neg_entropy",
    scale=ENTROPY_SCALE,
    use_normalized_loss=True,
  )


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  data = extern_data["data"]
  labels_dim = extern_data["classes"].sparse_dim  # static; the "classes" input itself is not used
  probs = tf.nn.softmax(model.logits(data))  # [B,T,L+1]
  rc.get_run_ctx().mark_as_default_output(
    rc.Tensor("output", [rc.batch_dim, data.dims[1], labels_dim], "float32", raw_tensor=probs, feature_dim=labels_dim)
  )
