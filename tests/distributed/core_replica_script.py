"""Run by ``core_replica_test.py`` in a subprocess (logical devices must be set before TF initialises them).

Builds a two_losses-style train step (summed, normalised, error, custom_inv_norm_factor and unflattened
losses, dropout on) once on the whole batch without a strategy and once under a ``MirroredStrategy`` over
two logical CPU devices, the batch split in two (padded otherwise), with the cross-replica reduction and
without it (the negative control), and writes the figures and gradients as JSON to argv[1].
"""

import json
import sys

import numpy as np
import tensorflow as tf

B, T, E, H, K, V = 5, 9, 6, 8, 4, 11
LENS = np.array([9, 4, 6, 2, 7], np.int32)
SPLIT = 2  # replica 0: sequences [0, 2), replica 1: [2, 5)
STEP = 7


def _weights():
  rng = np.random.RandomState(0)
  return {
    "emb": rng.randn(V, E).astype(np.float32),
    "w": (rng.randn(2 * E, H) * 0.5).astype(np.float32),
    "tag": rng.randn(H, K).astype(np.float32),
    "tok": rng.randn(H, V).astype(np.float32),
  }


def _data():
  rng = np.random.RandomState(1)
  ids = rng.randint(0, V, size=(B, T)).astype(np.int32)
  tags = rng.randint(0, K, size=(B, T)).astype(np.int32)
  weights = rng.uniform(0.5, 2.0, size=(B,)).astype(np.float32)
  return ids, tags, weights


def _pad(x, length, fill_rng):
  """``x`` [b,t] padded (or cut: only padding is cut) to ``length`` with random ids."""
  out = fill_rng.randint(0, min(K, V), size=(x.shape[0], length)).astype(x.dtype)
  n = min(length, x.shape[1])
  out[:, :n] = x[:, :n]
  return out


def train_step(rc, weights, ids, tags, lens, seq_weights):
  """Marks 5 losses; returns nothing (the context holds them)."""
  w = {k: tf.identity(tf.constant(v), name=k) for k, v in weights.items()}
  time = rc.Dim(tf.constant(lens), name="time")
  dims = [rc.batch_dim, time]
  ids_t, tags_t = tf.constant(ids), tf.constant(tags)
  emb = tf.nn.embedding_lookup(w["emb"], ids_t)  # [B,T,E]
  prev = tf.pad(emb, [[0, 0], [1, 0], [0, 0]])[:, :-1]
  h = tf.nn.relu(tf.einsum("bte,eh->bth", tf.concat([prev, emb], -1), w["w"]))
  h = rc.Tensor("h", dims + [rc.Dim(H, name="hidden")], "float32", raw_tensor=h)
  h = rc.dropout(h, 0.3).get_raw()
  tag_logits = tf.einsum("bth,hk->btk", h, w["tag"])
  tok_logits = tf.einsum("bth,hv->btv", h, w["tok"])
  tag_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tags_t, logits=tag_logits)
  aux_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids_t, logits=tok_logits)
  tag_err = tf.cast(tf.not_equal(tf.argmax(tag_logits, -1, output_type=tf.int32), tags_t), tf.float32)
  mask = tf.sequence_mask(lens, tf.shape(ids_t)[1])
  seq_score = tf.reduce_sum(tf.where(mask, tf.reduce_logsumexp(tag_logits, -1), 0.0), axis=1)  # [B]
  ctx = rc.get_run_ctx()
  ctx.mark_as_loss(rc.Tensor("tag_ce", dims, "float32", raw_tensor=tag_ce), "tag_ce")
  ctx.mark_as_loss(
    rc.Tensor("aux_ce", dims, "float32", raw_tensor=aux_ce), "aux_ce", scale=0.5, use_normalized_loss=True
  )
  ctx.mark_as_loss(rc.Tensor("tag_err", dims, "float32", raw_tensor=tag_err), "tag_err", as_error=True)
  ctx.mark_as_loss(
    rc.Tensor("seq", [rc.batch_dim], "float32", raw_tensor=seq_score),
    "seq",
    use_normalized_loss=True,
    custom_inv_norm_factor=tf.constant(seq_weights),
  )
  ctx.mark_as_loss(
    rc.Tensor("aux_nf", dims, "float32", raw_tensor=aux_ce * 0.25),
    "aux_nf",
    use_normalized_loss=True,
    use_flatten_frames=False,
  )
  return w


def figures(rc, ctx, w):
  """(figures: name -> [summed, inv_norm, mean], total, grads of the total: name -> array) as tensors."""
  ctx.reduce_losses()
  figs = {
    name: [loss.get_summed_loss().get_raw(), loss.get_inv_norm_factor().get_raw(), loss.get_mean_loss().get_raw()]
    for name, loss in ctx.losses.items()
  }
  total = ctx.total_loss().get_raw()
  names = sorted(w)
  grads = dict(zip(names, tf.gradients(total, [w[k] for k in names])))
  grads = {k: tf.convert_to_tensor(g) for k, g in grads.items()}  # the embedding's IndexedSlices: dense
  return figs, total, grads


def single():
  import returnn_rc as rc  # pylint: disable=import-outside-toplevel

  ids, tags, seq_weights = _data()
  g = tf.Graph()
  with g.as_default():
    with rc.init_train_step_run_ctx(train_flag=True, step=tf.constant(STEP, tf.int64)) as ctx:
      w = train_step(rc, _weights(), ids, tags, LENS, seq_weights)
      fetches = figures(rc, ctx, w)
    with tf.compat.v1.Session(graph=g) as sess:
      figs, total, grads = sess.run(fetches)
  return {
    "figures": {k: [float(x) for x in v] for k, v in figs.items()},
    "total": float(total),
    "grads": {k: v.tolist() for k, v in grads.items()},
    "num_replicas": ctx.num_replicas,
  }


def mirrored(cross_replica):
  import returnn_rc as rc  # pylint: disable=import-outside-toplevel

  ids, tags, seq_weights = _data()
  fill = np.random.RandomState(2)
  parts = [(0, SPLIT, T + 2), (SPLIT, B, int(LENS[SPLIT:].max()))]  # other padded lengths than the full batch
  shards = [(_pad(ids[a:b], t, fill), _pad(tags[a:b], t, fill), LENS[a:b], seq_weights[a:b], a) for a, b, t in parts]
  g = tf.Graph()
  calls = []
  with g.as_default():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    original = strategy.extended.batch_reduce_to

    def counting_batch_reduce_to(reduce_op, value_destination_pairs, options=None):
      before = len(g.get_operations())
      out = original(reduce_op, value_destination_pairs, options)
      calls.append({"values": len(value_destination_pairs), "ops": [op.type for op in g.get_operations()[before:]]})
      return out

    strategy.extended.batch_reduce_to = counting_batch_reduce_to
    contexts = []

    def fn():
      rid = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
      s_ids, s_tags, s_lens, s_w, offset = shards[int(rid)]
      with rc.init_train_step_run_ctx(
        train_flag=True, step=tf.constant(STEP, tf.int64), global_seq_offset=offset, cross_replica=cross_replica
      ) as ctx:
        contexts.append(ctx)
        w = train_step(rc, _weights(), s_ids, s_tags, s_lens, s_w)
        return figures(rc, ctx, w)

    with strategy.scope():
      out = strategy.extended.call_for_each_replica(tf.autograph.experimental.do_not_convert(fn))  # plain graph code
    per_replica = [
      tf.nest.map_structure(lambda v, i=i: strategy.experimental_local_results(v)[i], out, expand_composites=False)
      for i in range(2)
    ]
    with tf.compat.v1.Session(graph=g) as sess:
      results = sess.run(per_replica)
  reps = [
    {
      "figures": {k: [float(x) for x in v] for k, v in figs.items()},
      "total": float(total),
      "grads": {k: v.tolist() for k, v in grads.items()},
    }
    for figs, total, grads in results
  ]
  return {
    "replicas": reps,
    "collective_calls": calls,
    "num_replicas": [c.num_replicas for c in contexts],
    "marked_after_reduction_error": _mark_after_reduction(rc, strategy) if cross_replica else None,
  }


def _mark_after_reduction(rc, strategy):
  """The error of marking a loss after the reduction (inside a replica context)."""
  g = tf.Graph()
  errors = []
  with g.as_default():

    def fn():
      with rc.init_train_step_run_ctx(train_flag=True) as ctx:
        ctx.mark_as_loss(tf.constant([1.0, 2.0]), "a", dims=[rc.Dim(2, name="f")])
        ctx.losses["a"].get_summed_loss()  # triggers the reduction
        try:
          ctx.mark_as_loss(tf.constant([1.0]), "b", dims=[rc.Dim(1, name="g")])
        except RuntimeError as exc:
          errors.append(str(exc))

    s = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with s.scope():
      s.extended.call_for_each_replica(tf.autograph.experimental.do_not_convert(fn))
  return errors


def main():
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
  tf.compat.v1.disable_eager_execution()
  result = {"single": single(), "mirrored": mirrored(True), "local": mirrored(False)}
  with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(result, f)


if __name__ == "__main__":
  main()
