"""Sequence classifier: a sequence-level loss ``[B]`` with ``custom_inv_norm_factor``.

Data (synthetic, seeded): token sequences over :data:`VOCAB_SIZE` tokens of length 3..20; the class
of a sequence is the most frequent of the tokens ``0 .. NUM_CLASSES-1`` in it (ties: the smallest).
Model: embedding ``[B,T,E]`` → masked mean over time ``[B,E]`` → ReLU layer → logits ``[B,K]``.
Losses: ``"ce"`` = CE ``[B]`` × seq length with ``custom_inv_norm_factor`` = seq lengths, so its
figure is the length-weighted mean CE; ``"err"`` ``[B]`` (as_error). Output: class probs ``[B,K]``.

Letters: ``B`` batch, ``T`` time, ``E`` embedding, ``K`` classes.
"""

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc

VOCAB_SIZE = 8
NUM_CLASSES = 4
HIDDEN = 32
_SIZES = {"train": 256, "dev": 64}
_SEEDS = {"train": 1, "dev": 2}


def extern_data_template() -> rc.TensorDict:
  time_dim = rc.Dim(None, name="time")
  vocab_dim = rc.Dim(VOCAB_SIZE, name="vocab")
  classes_dim = rc.Dim(NUM_CLASSES, name="classes")
  return rc.TensorDict(
    {
      "data": rc.Tensor("data", [rc.batch_dim, time_dim], "int32", sparse_dim=vocab_dim),
      "classes": rc.Tensor("classes", [rc.batch_dim], "int32", sparse_dim=classes_dim),
    }
  )


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  classes_dim = extern_data["classes"].sparse_dim
  return rc.TensorDict({"output": rc.Tensor("output", [rc.batch_dim, classes_dim], "float32", feature_dim=classes_dim)})


def default_data(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  if split not in _SIZES:
    raise ValueError(f"split must be one of {list(_SIZES)}, got {split!r}")
  rng = np.random.default_rng(_SEEDS[split])
  seqs = []
  for _ in range(_SIZES[split] if max_seqs is None else max_seqs):
    tokens = rng.integers(0, VOCAB_SIZE, size=int(rng.integers(3, 21))).astype(np.int32)
    counts = np.bincount(tokens, minlength=VOCAB_SIZE)[:NUM_CLASSES]
    seqs.append({"data": tokens, "classes": np.int32(np.argmax(counts))})
  return seqs


class Model:
  def __init__(self):
    init = tf.compat.v1.glorot_uniform_initializer()
    with tf.compat.v1.variable_scope("seq_classifier"):
      self.embedding = tf.compat.v1.get_variable("embedding", [VOCAB_SIZE, HIDDEN], initializer=init)
      self.hidden_w = tf.compat.v1.get_variable("hidden/w", [HIDDEN, HIDDEN], initializer=init)
      self.hidden_b = tf.compat.v1.get_variable("hidden/b", [HIDDEN], initializer=tf.compat.v1.zeros_initializer())
      self.out_w = tf.compat.v1.get_variable("out/w", [HIDDEN, NUM_CLASSES], initializer=init)
      self.out_b = tf.compat.v1.get_variable("out/b", [NUM_CLASSES], initializer=tf.compat.v1.zeros_initializer())

  def logits(self, data: rc.Tensor) -> tf.Tensor:
    """``data`` ``[B,T]`` → logits ``[B,K]``."""
    ids = data.get_raw()
    lens = data.dims[1].get_dyn_size()  # [B]
    mask = tf.cast(tf.sequence_mask(lens, maxlen=tf.shape(ids)[1]), tf.float32)[:, :, None]  # [B,T,1]
    emb = tf.nn.embedding_lookup(self.embedding, tf.where(mask[:, :, 0] > 0, ids, 0))  # [B,T,E], padding -> id 0
    mean = tf.reduce_sum(emb * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)  # [B,E]
    hidden = tf.nn.relu(tf.matmul(mean, self.hidden_w) + self.hidden_b)
    hidden = rc.dropout(hidden, 0.1, batch_axis=0)  # masks by global sequence index
    return tf.matmul(hidden, self.out_w) + self.out_b  # [B,K]


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, classes = extern_data["data"], extern_data["classes"]
  logits = model.logits(data)
  labels = classes.get_raw()
  lens = tf.cast(data.dims[1].get_dyn_size(), tf.float32)  # [B]
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)  # [B]
  err = tf.cast(tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(
    rc.Tensor("ce", [rc.batch_dim], "float32", raw_tensor=ce * lens),
    "ce",
    custom_inv_norm_factor=rc.Tensor("lens", [rc.batch_dim], "float32", raw_tensor=lens),
  )
  ctx.mark_as_loss(rc.Tensor("err", [rc.batch_dim], "float32", raw_tensor=err), "err", as_error=True)


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  classes_dim = extern_data["classes"].sparse_dim
  probs = tf.nn.softmax(model.logits(extern_data["data"]))
  rc.get_run_ctx().mark_as_default_output(
    rc.Tensor("output", [rc.batch_dim, classes_dim], "float32", raw_tensor=probs, feature_dim=classes_dim)
  )
