"""Training options of the one train-graph builder, each against numbers: optimizers and clipping against a
numpy reference, gradient accumulation against the one-big-batch update, learning-rate schedules."""

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from graphs import two_losses
from returnn_rc import engine, graph_module
from returnn_rc.engine import TrainGraphConfig, build_train_graph
from tests.engine import testing_graphs

_B1 = two_losses.default_data("train", 3)
_B2 = two_losses.default_data("dev", 5)  # other lengths: per-batch normalisation would weight frames differently
_B3 = two_losses.default_data("train", 7)[3:]


class _Built:
  """``module``'s train graph on placeholders (static train flag False: no dropout), initialised."""

  def __init__(self, module, config: TrainGraphConfig):
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.template = graph_module.extern_data_template(module)
      self.placeholders = graph_module.make_placeholders(self.template)
      self.tg = build_train_graph(module, self.template, config)
      self.trainable = {v.op.name: v for v in tf.compat.v1.trainable_variables()}
    self.session = tf.compat.v1.Session(graph=self.graph)
    self.session.run(self.tg.init_op)

  def feed(self, seqs):
    return graph_module.feed_dict(self.placeholders, graph_module.pad_batch(self.template, seqs))

  def values(self):
    return self.session.run(self.trainable)

  def step(self, seqs):
    """One train step on ``seqs``; returns the gradients it saw (at the values before the step)."""
    _, grads = self.session.run([self.tg.train_op, self.tg.grads], self.feed(seqs))
    return grads


def _config(**kwargs):
  kwargs.setdefault("train_flag", False)
  kwargs.setdefault("seed", 7)
  kwargs.setdefault("learning_rate", 0.01)
  return TrainGraphConfig(**kwargs)


def _clip(grads, clip):
  if clip is None:
    return grads
  norm = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
  return {k: g * (clip / max(norm, clip)) for k, g in grads.items()}


class NumpyOptimizer:
  """The TF1 update rules in numpy (float64)."""

  def __init__(self, name, lr, *, weight_decay=0.0, momentum=0.9, clip=None):
    self.name, self.lr, self.wd, self.momentum, self.clip = name, lr, weight_decay, momentum, clip
    self.t = 0
    self.slots = {}

  def step(self, values, grads):
    grads = _clip({k: g.astype(np.float64) for k, g in grads.items()}, self.clip)
    self.t += 1
    out = {}
    for k, g in grads.items():
      v = values[k].astype(np.float64)
      if self.name in ("adam", "adamw"):
        m, s = self.slots.get(k, (0.0, 0.0))
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * g * g
        self.slots[k] = (m, s)
        lr_t = self.lr * np.sqrt(1 - 0.999**self.t) / (1 - 0.9**self.t)
        out[k] = v - self.lr * self.wd * v - lr_t * m / (np.sqrt(s) + 1e-8)
      else:
        a = self.momentum * self.slots.get(k, 0.0) + g
        self.slots[k] = a
        out[k] = v - self.lr * a
    return out


class OptimizerTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("adam", dict(optimizer="adam")),
    ("adamw", dict(optimizer="adamw", weight_decay=0.5)),
    ("momentum", dict(optimizer="momentum", momentum=0.7)),
    ("adam_clipped", dict(optimizer="adam", grad_clip_global_norm=0.5)),
    ("momentum_clipped", dict(optimizer="momentum", momentum=0.9, grad_clip_global_norm=0.5)),
  )
  def test_two_steps_match_numpy(self, options):
    built = _Built(two_losses, _config(**options))
    ref = NumpyOptimizer(
      options["optimizer"],
      0.01,
      weight_decay=options.get("weight_decay", 0.0),
      momentum=options.get("momentum", 0.9),
      clip=options.get("grad_clip_global_norm"),
    )
    values = built.values()
    for batch in (_B1, _B2):
      grads = built.step(batch)
      if "grad_clip_global_norm" in options:  # the clipping is active
        norm = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
        self.assertGreater(norm, 2 * options["grad_clip_global_norm"])
      expected = ref.step(values, grads)
      values = built.values()
      for k in expected:
        self.assertAllClose(values[k], expected[k], rtol=1e-5, atol=1e-7, msg=k)

  def test_weight_decay_and_clipping_change_the_update(self):
    """Controls: the options above are not no-ops (each differs from plain Adam by far more than the tolerance)."""
    results = {}
    for name, options in (
      ("adam", {}),
      ("adamw", dict(optimizer="adamw", weight_decay=0.5)),
      ("clipped", dict(grad_clip_global_norm=0.5)),
    ):
      built = _Built(two_losses, _config(**options))
      built.step(_B1)
      built.step(_B2)
      results[name] = built.values()
    for name in ("adamw", "clipped"):
      diff = max(np.max(np.abs(results[name][k] - results["adam"][k])) for k in results["adam"])
      self.assertGreater(diff, 1e-4, name)


class GradAccumulationTest(tf.test.TestCase, parameterized.TestCase):
  """k batches accumulated = one batch made of the k batches (two_losses: tag_ce summed, aux_ce normalised)."""

  @parameterized.named_parameters(
    ("momentum", "momentum", None), ("momentum_clipped", "momentum", 0.5), ("adamw", "adamw", None)
  )
  def test_equals_one_big_batch(self, optimizer, clip):
    options = dict(
      optimizer=optimizer,
      grad_clip_global_norm=clip,
      weight_decay=0.1 if optimizer == "adamw" else 0.0,
      learning_rate=0.5 if optimizer == "momentum" else 0.01,
    )
    accumulated = _Built(two_losses, _config(accum_grad_multiple_step=2, **options))
    big = _Built(two_losses, _config(**options))
    initial = big.values()
    for k, v in accumulated.values().items():
      self.assertAllEqual(v, initial[k])
    accumulated.step(_B1)
    for k, v in accumulated.values().items():  # nothing applied after the first batch
      self.assertAllEqual(v, initial[k])
    accumulated.step(_B2)
    big.step(_B1 + _B2)
    got, want = accumulated.values(), big.values()
    for k in want:
      self.assertAllClose(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
      self.assertGreater(np.max(np.abs(want[k] - initial[k])), 1e-4, k)  # an update happened
    self.assertEqual(accumulated.session.run(accumulated.tg.graph_state.step), 2)  # the step counts batches

  def test_per_batch_normalisation_would_differ(self):
    """Negative control (returnn#1379): summing per-batch normalised gradients is not the big-batch gradient."""
    built = _Built(two_losses, _config())
    g1 = built.session.run(built.tg.grads, built.feed(_B1))
    g2 = built.session.run(built.tg.grads, built.feed(_B2))
    g12 = built.session.run(built.tg.grads, built.feed(_B1 + _B2))
    rel = max(np.max(np.abs(g1[k] + g2[k] - g12[k])) / np.max(np.abs(g12[k])) for k in g12)
    self.assertGreater(rel, 1e-2)

  def test_flush_applies_a_partial_group(self):
    """k=2 over three batches + flush = the big batch of the first two, then the third alone (SGD momentum)."""
    accumulated = _Built(two_losses, _config(optimizer="momentum", accum_grad_multiple_step=2))
    big = _Built(two_losses, _config(optimizer="momentum"))
    for batch in (_B1, _B2, _B3):
      accumulated.step(batch)
    before_flush = accumulated.values()
    accumulated.session.run(accumulated.tg.flush_op)
    big.step(_B1 + _B2)
    for k, v in big.values().items():
      self.assertAllClose(before_flush[k], v, rtol=1e-5, atol=1e-6, msg=k)
    big.step(_B3)
    got, want = accumulated.values(), big.values()
    for k in want:
      self.assertAllClose(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
      self.assertGreater(np.max(np.abs(want[k] - before_flush[k])), 1e-5, k)
    accumulated.session.run(accumulated.tg.flush_op)  # nothing pending: a no-op
    for k, v in accumulated.values().items():
      self.assertAllEqual(v, got[k])

  def test_engine_accumulates_like_a_bigger_batch(self):
    """Through the engine (equal lengths: one bucket): batch 2 with k=2 = batch 4, incl. the flush at epoch end."""
    seqs = testing_graphs.sum_data([3] * 6)
    finals = []
    for batch_size, k in ((2, 2), (4, 1)):
      cfg = engine.EngineConfig(
        train_dir=self.create_tempdir().full_path,
        num_epochs=2,
        batch_size=batch_size,
        accum_grad_multiple_step=k,
        optimizer="momentum",
        learning_rate=0.01,
        save_checkpoints=False,
        log_every_secs=1e9,
      )
      with engine.Engine(testing_graphs.make_sum_graph(), cfg, train_data=seqs, dev_data=[]) as eng:
        eng.train()
        (w,) = [v for v in eng.train_graph.variables if v.op.name == "w"]
        finals.append(eng.session.run(w))
    self.assertAllClose(finals[0], finals[1], rtol=1e-6)
    self.assertNotAllClose(finals[0], 1.0)


class LearningRateScheduleTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    ("constant_warmup", dict(lr_warmup_steps=4), lambda s: min(1, (s + 1) / 4)),
    (
      "exponential",
      dict(lr_schedule="exponential", lr_schedule_steps=3, lr_schedule_rate=0.5),
      lambda s: 0.5 ** (s / 3),
    ),
    (
      "step_warmup",
      dict(lr_schedule="step", lr_schedule_steps=3, lr_schedule_rate=0.5, lr_warmup_steps=2),
      lambda s: min(1, (s + 1) / 2) * 0.5 ** (s // 3),
    ),
    (
      "inverse_sqrt",
      dict(lr_schedule="inverse_sqrt", lr_schedule_steps=4, lr_warmup_steps=4),
      lambda s: min(1, (s + 1) / 4) * np.sqrt(4 / max(s + 1, 4)),
    ),
  )
  def test_rate_per_step_and_newbob(self, options, factor):
    built = _Built(testing_graphs.make_sum_graph(), _config(learning_rate=0.2, **options))
    gs, sess = built.tg.graph_state, built.session
    for newbob in (0.2, 0.1):
      for s in (0, 1, 2, 3, 5, 8, 20, 100):
        gs.set_step(sess, s)
        self.assertAllClose(sess.run(built.tg.learning_rate), newbob * factor(s), rtol=1e-6, msg=s)
      built.tg.lr_control.update(sess, 1.0)  # first figure: no decay
      built.tg.lr_control.update(sess, 2.0)  # worse: Newbob halves the rate; the schedule multiplies it

  def test_the_optimizer_uses_the_scheduled_rate(self):
    """SGD (momentum 0): the update at step s is lr(s) * grad."""
    built = _Built(
      testing_graphs.make_sum_graph(), _config(optimizer="momentum", momentum=0.0, learning_rate=0.2, lr_warmup_steps=4)
    )
    seqs = testing_graphs.sum_data([2, 3])
    for s in range(3):
      before = built.values()["w"]
      grads = built.step(seqs)
      self.assertAllClose(built.values()["w"], before - 0.2 * min(1, (s + 1) / 4) * grads["w"], rtol=1e-6)


class OptionErrorsTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ("unknown_optimizer", dict(optimizer="adagrad"), r"unknown optimizer 'adagrad'; expected one of \['adam', "),
    ("k0", dict(accum_grad_multiple_step=0), r"accum_grad_multiple_step \(k\) must be an int >= 1, got 0"),
    ("clip0", dict(grad_clip_global_norm=0.0), r"grad_clip_global_norm must be a finite float > 0"),
    ("clip_negative", dict(grad_clip_global_norm=-1.0), r"grad_clip_global_norm must be a finite float > 0"),
    (
      "decay_without_adamw",
      dict(weight_decay=0.1),
      r"weight_decay=0.1 is decoupled weight decay of optimizer "
      r"'adamw'",
    ),
    ("momentum_1", dict(optimizer="momentum", momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    ("unknown_schedule", dict(lr_schedule="cosine"), r"unknown learning-rate schedule 'cosine'"),
    (
      "schedule_without_steps",
      dict(lr_schedule="exponential", lr_schedule_rate=0.5),
      r"lr_schedule 'exponential' needs lr_schedule_steps >= 1, got 0",
    ),
    ("negative_warmup", dict(lr_warmup_steps=-1), r"lr_warmup_steps must be an int >= 0, got -1"),
  )
  def test_bad_option(self, options, regex):
    with self.assertRaisesRegex(ValueError, regex):
      TrainGraphConfig(**options)


if __name__ == "__main__":
  absltest.main()
