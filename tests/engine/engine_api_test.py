"""Engine API: options checked before anything is written, forward as a lazy generator, the graph-module
contract's optional parts (``model_outputs_template()`` without argument, no ``default_data``), logging."""

import inspect
import math
import os
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import engine
from tests.engine import testing_graphs

_LENGTHS = [1, 2, 3, 5, 8, 13]


def _engine(train_dir, module=None, **kwargs):
  kwargs.setdefault("num_epochs", 1)
  kwargs.setdefault("batch_size", 2)
  data = testing_graphs.sum_data(_LENGTHS)
  return engine.Engine(
    module or testing_graphs.make_sum_graph(),
    engine.EngineConfig(train_dir=train_dir, **kwargs),
    train_data=data,
    dev_data=data,
  )


# (option, bad value, exception, message regex)
_BAD_OPTIONS = [
  ("num_epochs", 0, ValueError, r"num_epochs must be an int >= 1, got 0"),
  ("num_epochs", 2.0, TypeError, r"num_epochs must be an int, got 2.0"),
  ("batch_size", 0, ValueError, r"batch_size must be an int >= 1, got 0"),
  ("batch_size", -3, ValueError, r"batch_size must be an int >= 1, got -3"),
  ("keep_checkpoints", 0, ValueError, r"keep_checkpoints must be an int >= 1, got 0"),
  ("seed", -1, ValueError, r"seed must be an int in \[0, 2147483647\], got -1"),
  ("seed", 2**40, ValueError, r"seed must be an int in \[0, 2147483647\]"),
  ("max_seqs", 0, ValueError, r"max_seqs must be an int >= 1, got 0"),
  ("learning_rate", -0.1, ValueError, r"learning_rate must be a finite float >= 0, got -0.1"),
  ("learning_rate", math.nan, ValueError, r"learning_rate must be a finite float >= 0, got nan"),
  ("learning_rate", math.inf, ValueError, r"learning_rate must be a finite float >= 0, got inf"),
  ("learning_rate", "0.1", TypeError, r"learning_rate must be a finite float >= 0, got '0.1'"),
  ("lr_decay", 0.0, ValueError, r"lr_decay must be a float in \(0, 1\] \(1 disables the decay\), got 0.0"),
  ("lr_decay", 1.5, ValueError, r"lr_decay must be a float in \(0, 1\]"),
  ("lr_decay_threshold", -0.5, ValueError, r"lr_decay_threshold must be a finite float >= 0, got -0.5"),
  ("log_every_secs", 0, ValueError, r"log_every_secs must be a finite number of seconds > 0, got 0"),
  ("log_every_secs", -1.0, ValueError, r"log_every_secs must be a finite number of seconds > 0, got -1.0"),
  ("lr_control_loss", "", ValueError, r"lr_control_loss must be None or a loss name, got ''"),
  ("xla", "yes", TypeError, r"xla must be a bool, got 'yes'"),
  ("fresh", 1, TypeError, r"fresh must be a bool, got 1"),
  ("train_dir", "", ValueError, r"train_dir must be a non-empty path, got ''"),
]


class OptionsTest(parameterized.TestCase):
  @parameterized.parameters(*_BAD_OPTIONS)
  def test_bad_option_before_anything_is_written(self, option, value, exc, regex):
    parent = self.create_tempdir().full_path
    train_dir = os.path.join(parent, "train")
    kwargs = {option: value}
    if option == "train_dir":
      train_dir = value
      kwargs = {}
    with mock.patch.object(engine.Engine, "_build", side_effect=AssertionError("built before the checks")):
      with self.assertRaisesRegex(exc, regex):
        _engine(train_dir, **kwargs)
    self.assertEqual(os.listdir(parent), [])  # not even the train dir was created

  def test_bad_option_leaves_an_existing_train_dir_alone(self):
    train_dir = self.create_tempdir().full_path
    with _engine(train_dir) as eng:
      eng.train()
    before = sorted(os.listdir(train_dir))
    with self.assertRaisesRegex(ValueError, r"batch_size must be an int >= 1"):
      _engine(train_dir, fresh=True, batch_size=0)
    self.assertEqual(sorted(os.listdir(train_dir)), before)

  def test_train_num_epochs_checked(self):
    with _engine(self.create_tempdir().full_path) as eng:
      with self.assertRaisesRegex(ValueError, r"num_epochs must be an int >= 1, got 0"):
        eng.train(num_epochs=0)
      self.assertEqual(eng.completed_epoch, 0)

  def test_closed_engine(self):
    eng = _engine(self.create_tempdir().full_path)
    eng.close()
    eng.close()  # idempotent
    with self.assertRaisesRegex(RuntimeError, r"the engine of graph 'sum_graph' is closed"):
      eng.train()
    with self.assertRaisesRegex(RuntimeError, r"is closed"):
      eng.evaluate("dev")


class ForwardGeneratorTest(absltest.TestCase):
  def test_lazy_one_run_per_batch(self):
    with _engine(self.create_tempdir().full_path) as eng:
      expected = sum(1 for _ in eng.forward("dev"))
      self.assertGreater(expected, 1)
      with mock.patch.object(eng.session, "run", wraps=eng.session.run) as run:
        gen = eng.forward("dev")
        self.assertTrue(inspect.isgenerator(gen))
        self.assertEqual(run.call_count, 0)  # nothing runs before the first next()
        first = next(gen)
        self.assertEqual(run.call_count, 2)  # iterator initialisation + one batch
        next(gen)
        self.assertEqual(run.call_count, 3)  # one Session.run per batch
      self.assertEqual(1 + 1 + sum(1 for _ in gen), expected)
      self.assertIn("output:size1", first)

  def test_interleaving_is_an_error_not_wrong_batches(self):
    with _engine(self.create_tempdir().full_path) as eng:
      gen = eng.forward("dev")
      next(gen)
      eng.evaluate("dev")  # re-initialises the one input iterator
      with self.assertRaisesRegex(
        RuntimeError,
        r"input iterator was re-initialised .* while this iteration over "
        r"split 'dev' was not finished",
      ):
        next(gen)
      # a new generator is fine, and two in a row each see the whole split
      self.assertEqual(sum(len(b["output:size1"]) for b in eng.forward("dev")), len(_LENGTHS))
      self.assertEqual(sum(len(b["output:size1"]) for b in eng.forward("dev")), len(_LENGTHS))

  def test_errors_at_the_call(self):
    with _engine(self.create_tempdir().full_path) as eng:
      with self.assertRaisesRegex(ValueError, r"unknown or empty split 'test'; available: \['dev', 'train'\]"):
        eng.forward("test")


def _static_output_graph(name):
  """The sum graph, but forward marks a ``[B,F]`` output (F static) and ``model_outputs_template()``
  takes no argument (as RETURNN allows)."""
  module = testing_graphs.make_sum_graph(name)
  feat = rc.Dim(2, name="feat")

  def forward_step(*, model, extern_data):
    x = extern_data["x"]
    total = tf.reduce_sum(x.get_raw(), axis=1, keepdims=True) * model  # [B,1]
    rc.get_run_ctx().mark_as_output(tf.concat([total, total * 2.0], axis=1), "pooled", dims=[rc.batch_dim, feat])

  def model_outputs_template():
    return rc.TensorDict({"pooled": rc.Tensor("pooled", [rc.batch_dim, feat], "float32")})

  module.forward_step = forward_step
  module.model_outputs_template = model_outputs_template
  return module


class GraphModuleContractTest(absltest.TestCase):
  def test_model_outputs_template_without_argument(self):
    module = _static_output_graph("no_arg_template")
    with _engine(self.create_tempdir().full_path, module) as eng:
      history = eng.train()
      batches = list(eng.forward("dev"))
    self.assertLen(history, 1)
    got = np.concatenate([b["pooled"] for b in batches])
    self.assertEqual(got.shape, (len(_LENGTHS), 2))
    np.testing.assert_allclose(got[:, 1], 2 * got[:, 0], rtol=1e-6)

  def test_template_mismatch_is_refused(self):
    module = _static_output_graph("bad_template")
    module.model_outputs_template = lambda: rc.TensorDict(
      {"pooled": rc.Tensor("pooled", [rc.batch_dim, rc.Dim(3, name="feat3")], "float32")}
    )
    with self.assertRaisesRegex(ValueError, r"mark_as_output\('pooled'\): axis 1: static size 2 but 3 expected"):
      _engine(self.create_tempdir().full_path, module)

  def test_no_default_data_needs_data(self):
    module = testing_graphs.make_sum_graph("no_data")
    self.assertFalse(hasattr(module, "default_data"))
    train_dir = os.path.join(self.create_tempdir().full_path, "train")
    with self.assertRaisesRegex(
      ValueError,
      r"graph module 'no_data' has no default_data\(split\) function; pass "
      r"the data explicitly \(e.g. train_data=..., or --train_data=<files>\)",
    ):
      engine.Engine(module, engine.EngineConfig(train_dir=train_dir))
    self.assertFalse(os.path.exists(train_dir))
    # with train data given, no dev set is needed
    with engine.Engine(
      module,
      engine.EngineConfig(train_dir=train_dir, num_epochs=1, batch_size=2),
      train_data=testing_graphs.sum_data(_LENGTHS),
    ) as eng:
      self.assertEqual(eng.num_seqs, {"train": len(_LENGTHS), "dev": 0})
      (result,) = eng.train()
      self.assertEqual(result.dev, {})

  def test_data_must_be_a_list_of_dicts(self):
    with self.assertRaisesRegex(TypeError, r"train_data must be a list of dicts \(one per sequence\), got dict"):
      engine.Engine(
        testing_graphs.make_sum_graph(),
        engine.EngineConfig(train_dir=self.create_tempdir().full_path),
        train_data={"x": np.ones([3], np.float32)},
      )


class ProgressLoggingTest(absltest.TestCase):
  def test_progress_is_throttled(self):
    def progress_lines(log_every_secs):
      with _engine(self.create_tempdir().full_path, log_every_secs=log_every_secs) as eng:
        with self.assertLogs(level="INFO") as logs:
          (result,) = eng.train()
      return [line for line in logs.output if "epoch 1: step" in line], result.num_batches

    lines, num_batches = progress_lines(1e-6)
    self.assertGreater(num_batches, 2)
    self.assertLen(lines, num_batches)  # every step, when the interval is tiny
    lines, _ = progress_lines(1e9)
    self.assertLessEqual(len(lines), 1)  # at most the first, when it is huge


if __name__ == "__main__":
  absltest.main()
