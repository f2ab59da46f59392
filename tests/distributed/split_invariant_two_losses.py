"""``graphs/two_losses.py`` with its dropout on an ``rc.Tensor`` ``[B,T,H]`` (the batch dim known), so that the
masks are functions of the global sequence index and the same however a batch is split over workers.

``graphs/two_losses.py`` applies ``rc.dropout`` to a raw ``[B,T,H]`` tensor, whose masks depend on the
batch's shape: a run on several workers then differs from one on one worker (the distributed tests use
that as their negative control).
"""

import tensorflow as tf

import returnn_rc as rc
from graphs import two_losses
from graphs.two_losses import (AUX_SCALE, HIDDEN, Model, default_data, extern_data_template,  # noqa: F401
                               forward_step, get_model, model_outputs_template)

_HIDDEN_DIM = rc.Dim(HIDDEN, name="hidden")
_DROP_PROB = 0.1


def _hidden(model: Model, data: rc.Tensor) -> tf.Tensor:
  """``[B,T,H]`` of ``model.hidden`` without its raw-tensor dropout, then dropout on an ``rc.Tensor``."""
  ids = two_losses._valid_ids(data)  # pylint: disable=protected-access
  emb = tf.nn.embedding_lookup(model.embedding, ids)
  prev = tf.pad(emb, [[0, 0], [1, 0], [0, 0]])[:, :-1]
  taps = tf.reshape(tf.concat([prev, emb], axis=-1), [-1, 2 * HIDDEN])
  h = tf.nn.relu(tf.matmul(taps, model.conv_w) + model.conv_b)
  h = tf.reshape(h, tf.concat([tf.shape(ids), [HIDDEN]], axis=0))
  h_t = rc.Tensor("h", [rc.batch_dim, data.dims[1], _HIDDEN_DIM], "float32", raw_tensor=h)
  return rc.dropout(h_t, _DROP_PROB).get_raw() if _DROP_PROB else h


def train_step(*, model: Model, extern_data: rc.TensorDict):
  data, tags = extern_data["data"], extern_data["tags"]
  dims = [rc.batch_dim, data.dims[1]]
  ids, tag_ids = two_losses._valid_ids(data), two_losses._valid_ids(tags)  # pylint: disable=protected-access
  h = _hidden(model, data)
  tag_logits = model.project(h, model.tag_w)
  tok_logits = model.project(h, model.tok_w)
  tag_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tag_ids, logits=tag_logits)
  aux_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=tok_logits)
  tag_err = tf.cast(tf.not_equal(tf.argmax(tag_logits, -1, output_type=tf.int32), tag_ids), tf.float32)
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(rc.Tensor("tag_ce", dims, "float32", raw_tensor=tag_ce), "tag_ce", scale=1.0)
  ctx.mark_as_loss(rc.Tensor("aux_ce", dims, "float32", raw_tensor=aux_ce), "aux_ce", scale=AUX_SCALE,
                   use_normalized_loss=True)
  ctx.mark_as_loss(rc.Tensor("tag_err", dims, "float32", raw_tensor=tag_err), "tag_err", as_error=True)
