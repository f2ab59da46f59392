"""A minimal tour: one graph, a few train steps with dropout on, then eval with it off.

    python tools/demo.py

Builds a tiny frame-wise regression model on synthetic padded sequences, marks a ``[B,T]`` loss,
and switches the symbolic train flag per ``Session.run``; the graph is finalized before the first
run, so nothing is rebuilt between train and eval.
"""

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import graph_names

graph_names.ensure_repo_root_on_path()
import returnn_rc as rc  # noqa: E402  pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 20, "Number of train steps (>= 1).", lower_bound=1)
_DROPOUT = flags.DEFINE_float("dropout", 0.3, "Dropout probability in [0, 1) (applied only in training).")
flags.register_validator("dropout", lambda p: 0.0 <= p < 1.0, message="--dropout must be in [0, 1)")


def main(argv):
  del argv
  rng = np.random.RandomState(0)
  batch, max_time, feat = 8, 12, 16
  lens_np = rng.randint(3, max_time + 1, size=[batch]).astype(np.int32)
  x_np = rng.normal(size=[batch, max_time, feat]).astype(np.float32)
  y_np = x_np.sum(axis=-1)

  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(0)
    gs = rc.graph_state.get_graph_state()
    time_dim = rc.Dim(tf.constant(lens_np), name="time")
    feat_dim = rc.Dim(feat, name="feature")
    x = rc.Tensor("x", [rc.batch_dim, time_dim, feat_dim], "float32", raw_tensor=tf.constant(x_np))
    ctx = rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
    w1 = tf.compat.v1.get_variable("w1", [feat, 32])
    w2 = tf.compat.v1.get_variable("w2", [32, 1])
    hidden = tf.nn.relu(tf.einsum("btf,fh->bth", rc.dropout(x, _DROPOUT.value).raw_tensor, w1))  # [B,T,32]
    pred = tf.einsum("bth,ho->bt", hidden, w2)  # [B,T]
    ctx.mark_as_loss(tf.square(pred - y_np), "mse", dims=[rc.batch_dim, time_dim], use_normalized_loss=True)
    train_op = tf.compat.v1.train.AdamOptimizer(0.01).minimize(ctx.total_loss().raw_tensor, global_step=gs.step_var)
    report = rc.report_fetches(ctx.losses)
    init = tf.compat.v1.global_variables_initializer()
    graph.finalize()

  with tf.compat.v1.Session(graph=graph) as sess:
    sess.run(init)
    for _ in range(_STEPS.value):
      _, fetched = sess.run([train_op, report], feed_dict=gs.feed_dict(train=True))
    train_loss = rc.EpochAccumulator().add(fetched)["mse"]
    eval_loss = rc.EpochAccumulator().add(sess.run(report, feed_dict=gs.feed_dict(train=False)))["mse"]
    print(
      f"after {gs.get_step(sess)} steps: train mse (dropout on) = {train_loss:.4f}, "
      f"eval mse (dropout off) = {eval_loss:.4f}"
    )
  logging.info("same graph, %d ops, no rebuild", len(graph.get_operations()))


if __name__ == "__main__":
  app.run(main)
