"""Frame-wise tagger with two losses of different scales.

Data (synthetic, seeded): token sequences over :data:`VOCAB_SIZE` tokens of length 2..16, and tags
``(data[t] + data[t-1]) % NUM_TAGS`` (``data[-1] = 0``) sharing the time dim of ``"data"``.
Model: embedding ``[B,T,E]`` → causal conv (kernel 2) with ReLU and ``rc.dropout`` ``[B,T,H]`` →
tag logits ``[B,T,K]`` and token logits ``[B,T,V]``.
Losses: ``"tag_ce"`` ``[B,T]`` scale 1.0 (summed); ``"aux_ce"`` ``[B,T]`` token reconstruction,
scale 0.3 with ``use_normalized_loss``; ``"tag_err"`` ``[B,T]`` (as_error).
Output: tag probabilities ``[B,T,K]``.

Letters: ``B`` batch, ``T`` time, ``E``/``H`` features, ``K`` tags, ``V`` vocab.
"""

from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

import returnn_rc as rc

VOCAB_SIZE = 10
NUM_TAGS = 3
HIDDEN = 32
AUX_SCALE = 0.3
_SIZES = {"train": 256, "dev": 64}
_SEEDS = {"train": 11, "dev": 12}


def extern_data_template() -> rc.TensorDict:
  time_dim = rc.Dim(None, name="time")
  vocab_dim = rc.Dim(VOCAB_SIZE, name="vocab")
  tags_dim = rc.Dim(NUM_TAGS, name="tags")
  return rc.TensorDict(
    {
      "data": rc.Tensor("data", [rc.batch_dim, time_dim], "int32", sparse_dim=vocab_dim),
      "tags": rc.Tensor("tags", [rc.batch_dim, time_dim], "int32", sparse_dim=tags_dim),
    }
  )


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  tags = extern_data["tags"]
  return rc.TensorDict(
    {
      "output": rc.Tensor(
        "output", [rc.batch_dim, tags.dims[1], tags.sparse_dim], "float32", feature_dim=tags.sparse_dim
      )
    }
  )


def default_data(split: str, max_seqs: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
  if split not in _SIZES:
    raise ValueError(f"split must be one of {list(_SIZES)}, got {split!r}")
  rng = np.random.default_rng(_SEEDS[split])
  seqs = []
  for _ in range(_SIZES[split] if max_seqs is None else max_seqs):
    tokens = rng.integers(0, VOCAB_SIZE, size=int(rng.integers(2, 17))).astype(np.int32)
    prev = np.concatenate([[0], tokens[:-1]])
    seqs.append({"data": tokens, "tags": ((tokens + prev) % NUM_TAGS).astype(np.int32)})
  return seqs


class Model:
  def __init__(self):
    init = tf.compat.v1.glorot_uniform_initializer()
    with tf.compat.v1.variable_scope("two_losses"):
      self.embedding = tf.compat.v1.get_variable("embedding", [VOCAB_SIZE, HIDDEN], initializer=init)
      self.conv_w = tf.compat.v1.get_variable("conv/w", [2 * HIDDEN, HIDDEN], initializer=init)
      self.conv_b = tf.compat.v1.get_variable("conv/b", [HIDDEN], initializer=tf.compat.v1.zeros_initializer())
      self.tag_w = tf.compat.v1.get_variable("tag/w", [HIDDEN, NUM_TAGS], initializer=init)
      self.tok_w = tf.compat.v1.get_variable("tok/w", [HIDDEN, VOCAB_SIZE], initializer=init)

  def hidden(self, ids: tf.Tensor) -> tf.Tensor:
    """``ids`` ``[B,T]`` → ``[B,T,H]`` (causal: position t sees ids t-1 and t)."""
    emb = tf.nn.embedding_lookup(self.embedding, ids)  # [B,T,E]
    prev = tf.pad(emb, [[0, 0], [1, 0], [0, 0]])[:, :-1]  # [B,T,E]
    taps = tf.reshape(tf.concat([prev, emb], axis=-1), [-1, 2 * HIDDEN])
    h = tf.nn.relu(tf.matmul(taps, self.conv_w) + self.conv_b)
    h = tf.reshape(h, tf.concat([tf.shape(ids), [HIDDEN]], axis=0))
    return rc.dropout(h, 0.1, batch_axis=0)  # masks by global sequence index: the same on any split

  @staticmethod
  def project(h: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    out = tf.matmul(tf.reshape(h, [-1, HIDDEN]), w)
    return tf.reshape(out, tf.concat([tf.shape(h)[:2], [w.shape[1]]], axis=0))


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def _valid_ids(x: rc.Tensor) -> tf.Tensor:
  """``[B,T]`` int ids with the padded frames set to 0 (garbage there must not reach a lookup)."""
  return tf.where(x.get_sequence_mask_broadcast(x.dims[1]), x.get_raw(), 0)


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, tags = extern_data["data"], extern_data["tags"]
  dims = [rc.batch_dim, data.dims[1]]
  ids, tag_ids = _valid_ids(data), _valid_ids(tags)  # [B,T]
  h = model.hidden(ids)
  tag_logits = model.project(h, model.tag_w)  # [B,T,K]
  tok_logits = model.project(h, model.tok_w)  # [B,T,V]
  tag_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tag_ids, logits=tag_logits)
  aux_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=tok_logits)
  tag_err = tf.cast(tf.not_equal(tf.argmax(tag_logits, -1, output_type=tf.int32), tag_ids), tf.float32)
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(rc.Tensor("tag_ce", dims, "float32", raw_tensor=tag_ce), "tag_ce", scale=1.0)
  ctx.mark_as_loss(
    rc.Tensor("aux_ce", dims, "float32", raw_tensor=aux_ce), "aux_ce", scale=AUX_SCALE, use_normalized_loss=True
  )
  ctx.mark_as_loss(rc.Tensor("tag_err", dims, "float32", raw_tensor=tag_err), "tag_err", as_error=True)


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  data = extern_data["data"]
  tags_dim = extern_data["tags"].sparse_dim  # static; the "tags" input itself is not used
  probs = tf.nn.softmax(model.project(model.hidden(_valid_ids(data)), model.tag_w))  # [B,T,K]
  rc.get_run_ctx().mark_as_default_output(
    rc.Tensor("output", [rc.batch_dim, data.dims[1], tags_dim], "float32", raw_tensor=probs, feature_dim=tags_dim)
  )
