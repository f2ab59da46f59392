"""Negative control of the worker-count tests: ``graphs/two_losses.py`` with its dropout mask drawn for the
batch's shape (``rc.dropout`` without ``batch_axis``: stateless Philox over ``[B,T,H]``), so it depends on
how a batch is split over workers; runs on 1 and 2 workers then differ."""

import tensorflow as tf

import returnn_rc as rc
from graphs import two_losses
from graphs.two_losses import (  # noqa: F401
  HIDDEN,
  default_data,
  extern_data_template,
  forward_step,
  model_outputs_template,
  train_step,
)


class Model(two_losses.Model):
  def hidden(self, ids: tf.Tensor) -> tf.Tensor:
    emb = tf.nn.embedding_lookup(self.embedding, ids)
    prev = tf.pad(emb, [[0, 0], [1, 0], [0, 0]])[:, :-1]
    taps = tf.reshape(tf.concat([prev, emb], axis=-1), [-1, 2 * HIDDEN])
    h = tf.nn.relu(tf.matmul(taps, self.conv_w) + self.conv_b)
    h = tf.reshape(h, tf.concat([tf.shape(ids), [HIDDEN]], axis=0))
    return rc.dropout(h, 0.1)  # no batch_axis: the mask depends on the (part of the) batch's shape


def get_model(*, epoch, step):
  del epoch, step
  return Model()
