"""A tiny graph module (contract of ``graphs/__init__.py``) for the export tests.

Inputs: ``data`` ``[B,T,F=3]`` float32, ``classes`` ``[B,T]`` int32 (sparse, V=5), sharing ``T``.
Outputs of ``forward_step``:
  - ``logits`` ``[B,T,V]`` float32 (dropout on the graph's own train flag: must be off in exports);
  - ``labels`` ``[B,T]`` int32, sparse V;
  - ``pooled`` ``[B,F]`` float32, mean over the valid frames;
  - ``strided`` ``[B,T2]`` float32, every second frame (a new dynamic dim ``T2 = ceil(T/2)``).
``classes`` is not used by ``forward_step`` (so it is no signature input).
"""

import numpy as np
import tensorflow as tf

import returnn_rc as rc

FEATURES = 3
VOCAB = 5


class Model:
  """Weights ``w`` ``[F,V]`` and bias ``b`` ``[V]``."""

  def __init__(self):
    with tf.compat.v1.variable_scope("tiny"):
      self.w = tf.compat.v1.get_variable("w", [FEATURES, VOCAB], initializer=tf.compat.v1.random_normal_initializer())
      self.b = tf.compat.v1.get_variable("b", [VOCAB], initializer=tf.compat.v1.random_normal_initializer())


def extern_data_template() -> rc.TensorDict:
  time = rc.Dim(None, name="time")
  feat = rc.Dim(FEATURES, name="feature")
  vocab = rc.Dim(VOCAB, name="vocab")
  return rc.TensorDict(
    [
      rc.Tensor("data", [rc.batch_dim, time, feat], "float32", feature_dim=feat),
      rc.Tensor("classes", [rc.batch_dim, time], "int32", sparse_dim=vocab),
    ]
  )


def model_outputs_template(extern_data: rc.TensorDict) -> rc.TensorDict:
  data = extern_data["data"]
  time, feat = data.dims[1], data.dims[2]
  vocab = extern_data["classes"].sparse_dim
  return rc.TensorDict(
    [
      rc.Tensor("logits", [rc.batch_dim, time, vocab], "float32"),
      rc.Tensor("labels", [rc.batch_dim, time], "int32", sparse_dim=vocab),
      rc.Tensor("pooled", [rc.batch_dim, feat], "float32"),
      rc.Tensor("strided", [rc.batch_dim, rc.Dim(None, name="time2")], "float32"),
    ]
  )


def default_data(split: str):
  rng = np.random.RandomState({"train": 1, "dev": 2}[split])
  seqs = []
  for n in (4, 1, 7, 3, 5):
    seqs.append(
      {"data": rng.randn(n, FEATURES).astype(np.float32), "classes": rng.randint(0, VOCAB, size=(n,)).astype(np.int32)}
    )
  return seqs


def get_model(*, epoch, step):
  del epoch, step
  return Model()


def _logits(model: Model, data: rc.Tensor) -> tf.Tensor:
  return tf.einsum("btf,fv->btv", data.get_raw(), model.w) + model.b  # [B,T,V]


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, classes = extern_data["data"], extern_data["classes"]
  time = data.dims[1]
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes.get_raw(), logits=_logits(model, data))
  rc.get_run_ctx().mark_as_loss(ce, "ce", dims=[rc.batch_dim, time])


def forward_step(*, model: Model, extern_data: rc.TensorDict):
  ctx = rc.get_run_ctx()
  data = extern_data["data"]
  time, feat = data.dims[1], data.dims[2]
  vocab = extern_data["classes"].sparse_dim
  logits = _logits(model, data)
  # Reads the graph's symbolic train flag directly: the export must freeze it to False.
  with ctx.train_flag_ctx(rc.graph_state.get_graph_state().train_flag):
    logits = rc.dropout(logits, 0.5)
  ctx.mark_as_output(rc.Tensor("logits", [rc.batch_dim, time, vocab], "float32", raw_tensor=logits), "logits")
  labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
  ctx.mark_as_output(rc.Tensor("labels", [rc.batch_dim, time], "int32", raw_tensor=labels, sparse_dim=vocab), "labels")
  mask = tf.sequence_mask(time.get_dyn_size(), maxlen=tf.shape(data.get_raw())[1])  # [B,T]
  summed = tf.reduce_sum(tf.where(mask[:, :, None], data.get_raw(), 0.0), axis=1)  # [B,F]
  pooled = summed / tf.maximum(tf.cast(time.get_dyn_size(), tf.float32), 1.0)[:, None]
  ctx.mark_as_output(rc.Tensor("pooled", [rc.batch_dim, feat], "float32", raw_tensor=pooled), "pooled")
  time2 = rc.Dim(None, name="time2")
  time2.dyn_size = (time.get_dyn_size() + 1) // 2
  strided = logits[:, ::2, 0]  # [B,T2]
  ctx.mark_as_output(rc.Tensor("strided", [rc.batch_dim, time2], "float32", raw_tensor=strided), "strided")
