"""Tests of RunCtx: stages, train flag, step/epoch, marking losses and outputs, thread isolation."""

import asyncio
import threading

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc


def helper_func():
  return None


def other_func():
  return None


class StageTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_implicit_init(self):
    ctx = rc.get_run_ctx()
    self.assertEqual(ctx.stage, "init")
    self.assertIs(ctx.train_flag, False)
    self.assertEqual(ctx.step, 0)
    self.assertEqual(ctx.epoch, 1)

  def test_train_default_true_forward_false(self):
    self.assertIs(rc.init_train_step_run_ctx().train_flag, True)
    self.assertIs(rc.get_run_ctx().stage, "train_step")
    ctx = rc.init_forward_step_run_ctx(step=5, epoch=3)
    self.assertIs(ctx.train_flag, False)
    self.assertEqual((ctx.stage, ctx.step, ctx.epoch), ("forward_step", 5, 3))
    self.assertIs(rc.get_run_ctx(), ctx)

  def test_reset(self):
    rc.init_train_step_run_ctx(train_flag=True)
    rc.reset_run_ctx()
    self.assertEqual(rc.get_run_ctx().stage, "init")
    self.assertIs(rc.get_run_ctx().train_flag, False)

  def test_bad_stage_and_values(self):
    with self.assertRaisesRegex(ValueError, "stage must be one of"):
      rc.RunCtx(stage="training")
    with self.assertRaisesRegex(ValueError, "step must be >= 0, got -1"):
      rc.init_train_step_run_ctx(step=-1)
    with self.assertRaisesRegex(ValueError, "epoch must be >= 1, got 0"):
      rc.init_train_step_run_ctx(epoch=0)
    with self.assertRaisesRegex(TypeError, "step must be an int"):
      rc.init_train_step_run_ctx(step=1.5)

  def test_thread_isolation(self):
    rc.init_train_step_run_ctx()
    seen = {}
    barrier = threading.Barrier(2)

    def worker(i):
      seen[i, "start"] = rc.get_run_ctx().stage
      if i == 0:
        rc.init_forward_step_run_ctx()
      else:
        rc.init_train_step_run_ctx(train_flag=False)
      barrier.wait()
      seen[i, "end"] = (rc.get_run_ctx().stage, rc.get_run_ctx().train_flag)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.assertEqual(seen[0, "start"], "init")
    self.assertEqual(seen[1, "start"], "init")
    self.assertEqual(seen[0, "end"], ("forward_step", False))
    self.assertEqual(seen[1, "end"], ("train_step", False))
    self.assertEqual(rc.get_run_ctx().stage, "train_step")


class ScopedRunCtxTest(absltest.TestCase):
  """init_*_run_ctx(...) keep RETURNN's plain-call behaviour; the returned RunCtx is also a context manager
  restoring, on exit, the context that was current before the call."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_plain_call_sets_and_keeps_the_context(self):
    ctx = rc.init_train_step_run_ctx(train_flag=False, step=3)
    self.assertIs(rc.get_run_ctx(), ctx)
    self.assertEqual((ctx.stage, ctx.step), ("train_step", 3))
    self.assertIs(rc.init_forward_step_run_ctx(), rc.get_run_ctx())  # the next plain call replaces it

  def test_nested_with_restores_the_outer_context(self):
    outer = rc.init_train_step_run_ctx(step=1)
    with rc.init_train_step_run_ctx(step=2) as inner:
      self.assertIs(rc.get_run_ctx(), inner)
      with rc.init_forward_step_run_ctx() as innermost:
        self.assertIs(rc.get_run_ctx(), innermost)
      self.assertIs(rc.get_run_ctx(), inner)
    self.assertIs(rc.get_run_ctx(), outer)  # control: a plain call would have replaced `outer` for good
    self.assertEqual(rc.get_run_ctx().step, 1)

  def test_exception_restores_the_outer_context(self):
    outer = rc.init_forward_step_run_ctx()
    with self.assertRaisesRegex(ZeroDivisionError, "division"):
      with rc.init_train_step_run_ctx():
        1 / 0  # noqa: B018
    self.assertIs(rc.get_run_ctx(), outer)

  def test_entered_twice_and_out_of_order_are_errors(self):
    ctx = rc.init_train_step_run_ctx()
    with ctx:
      with self.assertRaisesRegex(RuntimeError, "already entered"):
        ctx.__enter__()
    outer = rc.init_forward_step_run_ctx()
    first = rc.init_train_step_run_ctx().__enter__()
    rc.init_train_step_run_ctx().__enter__()  # a second, entered after `first`
    with self.assertRaisesRegex(RuntimeError, "exited out of order"):
      first.__exit__(None, None, None)
    self.assertIs(rc.get_run_ctx(), outer)  # what was current before `first`


class TrainFlagTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_global_override(self):
    ctx = rc.init_train_step_run_ctx()
    with ctx.train_flag_ctx(False):
      self.assertIs(ctx.train_flag, False)
      self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)
    self.assertIs(ctx.train_flag, True)

  def test_func_override_survives_nested_global(self):
    ctx = rc.init_train_step_run_ctx()
    with ctx.train_flag_ctx(False, func=helper_func):
      self.assertIs(ctx.train_flag, True)
      self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)
      self.assertIs(ctx.is_train_flag_enabled(func=other_func), True)
      with ctx.train_flag_ctx(True):
        self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)
        with ctx.train_flag_ctx(True, func=helper_func):
          self.assertIs(ctx.is_train_flag_enabled(func=helper_func), True)
        self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)
    self.assertIs(ctx.is_train_flag_enabled(func=helper_func), True)

  def test_func_list_and_method(self):
    ctx = rc.init_train_step_run_ctx()

    class Module:
      def call(self):
        return None

    m = Module()
    with ctx.train_flag_ctx(False, func=[helper_func, m.call]):
      self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)
      self.assertIs(ctx.is_train_flag_enabled(func=Module().call), False)
      self.assertIs(ctx.is_train_flag_enabled(func=other_func), True)

  @parameterized.parameters(len, "dropout", 3)
  def test_func_must_be_function(self, bad):
    ctx = rc.init_train_step_run_ctx()
    with self.assertRaisesRegex(TypeError, "func must be a Python function"):
      with ctx.train_flag_ctx(False, func=bad):
        pass

  def test_tensor_flags(self):
    with tf.Graph().as_default():
      ph = tf.compat.v1.placeholder_with_default(False, [])
      ctx = rc.init_train_step_run_ctx(train_flag=ph)
      self.assertIs(ctx.train_flag, ph)
      var = tf.compat.v1.Variable(True, trainable=False)
      ctx = rc.init_train_step_run_ctx(train_flag=var)
      self.assertIsInstance(ctx.train_flag, tf.Tensor)
      with ctx.train_flag_ctx(tf.constant(False)):
        self.assertIsInstance(ctx.train_flag, tf.Tensor)

  def test_bad_flags(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "scalar bool tensor, got shape"):
        rc.init_train_step_run_ctx(train_flag=tf.constant([True, False]))
      with self.assertRaisesRegex(TypeError, "got a int32 tensor"):
        rc.init_train_step_run_ctx(train_flag=tf.constant(1))
      with self.assertRaisesRegex(TypeError, "Python bool or a scalar bool tf.Tensor, got int"):
        rc.init_train_step_run_ctx(train_flag=1)
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(TypeError, "got str"):
        with ctx.train_flag_ctx("yes"):
          pass

  def test_step_epoch_tensors(self):
    with tf.Graph().as_default():
      gs = rc.graph_state.get_graph_state()
      rc.init_train_step_run_ctx(train_flag=gs.train_flag, step=gs.step, epoch=gs.epoch)
      step = rc.get_run_ctx_step()
      epoch = rc.get_run_ctx().get_epoch_tensor()
      self.assertEqual((step.dims, step.dtype), ((), "int64"))
      with self.cached_session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        gs.set_step(sess, 7)
        gs.set_epoch(sess, 3)
        self.assertEqual(sess.run([step.raw_tensor, epoch.raw_tensor]), [7, 3])
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx(step=4, epoch=2)
      with self.cached_session() as sess:
        self.assertEqual(sess.run(rc.get_run_ctx_step().raw_tensor), 4)


class MarkAsLossTest(tf.test.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_wrong_stage(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(RuntimeError, r"mark_as_loss\('ce'\) called in stage 'init'"):
        rc.get_run_ctx().mark_as_loss(tf.constant(1.0), "ce")
      rc.init_forward_step_run_ctx()
      with self.assertRaisesRegex(RuntimeError, "stage 'forward_step'"):
        rc.get_run_ctx().mark_as_loss(tf.constant(1.0), "ce")

  def test_duplicate_name(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      ctx.mark_as_loss(tf.constant(1.0), "ce")
      with self.assertRaisesRegex(ValueError, "duplicate loss name 'ce'"):
        ctx.mark_as_loss(tf.constant(2.0), "ce")

  def test_raw_without_dims(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(ValueError, r"loss 'ce': a raw tensor of shape \(2, 3\) needs dims"):
        ctx.mark_as_loss(tf.zeros([2, 3]), "ce")
      with self.assertRaisesRegex(ValueError, "loss 'ce': .*dims mismatch"):
        ctx.mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim])

  def test_dynamic_dim_without_sizes(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      t = rc.Dim(None, name="time")
      with self.assertRaisesRegex(ValueError, "loss 'ce': dynamic dim Dim\\('time', dynamic\\) has no sizes"):
        ctx.mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, t])

  def test_fields(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      ctx.mark_as_loss(tf.constant([1, 2]), "err", dims=[rc.batch_dim], as_error=True, scale=0.5)
      loss = ctx.losses["err"]
      self.assertIsInstance(loss, rc.Loss)
      self.assertEqual(
        (loss.name, loss.scale, loss.as_error, loss.use_normalized_loss, loss.use_flatten_frames),
        ("err", 0.5, True, False, True),
      )
      self.assertEqual(loss.loss.dtype, "float32")  # int loss is cast
      with self.assertRaisesRegex(TypeError, "scale must be a Python float"):
        ctx.mark_as_loss(tf.constant(1.0), "x", scale="1")

  def test_total_loss_errors(self):
    with tf.Graph().as_default():
      ctx = rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(RuntimeError, "no loss was marked"):
        ctx.total_loss()
      ctx.mark_as_loss(tf.constant(1.0), "err", as_error=True)
      ctx.mark_as_loss(tf.constant(1.0), "zero", scale=0.0)
      with self.assertRaisesRegex(RuntimeError, r"\['err', 'zero'\] are as_error or have scale 0"):
        ctx.total_loss()
      rc.init_forward_step_run_ctx()
      with self.assertRaisesRegex(RuntimeError, "total_loss\\(\\) called in stage 'forward_step'"):
        rc.get_run_ctx().total_loss()


class MarkAsOutputTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def test_wrong_stage(self):
    with tf.Graph().as_default():
      rc.init_train_step_run_ctx()
      with self.assertRaisesRegex(RuntimeError, r"mark_as_output\('out'\) called in stage 'train_step'"):
        rc.get_run_ctx().mark_as_output(tf.constant(1.0), "out")

  def test_default_order_btf(self):
    with tf.Graph().as_default():
      ctx = rc.init_forward_step_run_ctx()
      t = rc.Dim(tf.constant([2, 3]), name="t")
      f = rc.Dim(4, name="f")
      raw = tf.reshape(tf.range(24.0), [4, 3, 2])
      ctx.mark_as_output(rc.Tensor("x", [f, t, rc.batch_dim], "float32", raw_tensor=raw), "out")
      out = ctx.outputs["out"]
      self.assertEqual(out.dims, (rc.batch_dim, t, f))
      self.assertEqual(out.name, "out")
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(out.raw_tensor), np.transpose(np.arange(24.0).reshape(4, 3, 2), [2, 1, 0]))

  def test_default_output_and_shape(self):
    with tf.Graph().as_default():
      ctx = rc.init_forward_step_run_ctx()
      f = rc.Dim(4, name="f")
      x = rc.Tensor("x", [rc.batch_dim, f], "float32", raw_tensor=tf.zeros([2, 4]))
      ctx.mark_as_default_output(x, shape=[f, rc.batch_dim])
      self.assertEqual(ctx.outputs["output"].dims, (f, rc.batch_dim))

  def test_ambiguous_needs_dims(self):
    with tf.Graph().as_default():
      ctx = rc.init_forward_step_run_ctx()
      f, g = rc.Dim(4, name="f"), rc.Dim(5, name="g")
      x = rc.Tensor("x", [rc.batch_dim, f, g], "float32", raw_tensor=tf.zeros([2, 4, 5]))
      with self.assertRaisesRegex(ValueError, r"cannot infer the order.*pass dims"):
        ctx.mark_as_output(x, "out")
      ctx.mark_as_output(x, "out", dims=[rc.batch_dim, g, f])
      self.assertEqual(ctx.outputs["out"].dims, (rc.batch_dim, g, f))
      with self.assertRaisesRegex(ValueError, "duplicate output name 'out'"):
        ctx.mark_as_output(x, "out", dims=[rc.batch_dim, g, f])
      with self.assertRaisesRegex(ValueError, "dims mismatch"):
        ctx.mark_as_output(x, "out2", dims=[rc.batch_dim, g])

  def test_raw_needs_dims(self):
    with tf.Graph().as_default():
      ctx = rc.init_forward_step_run_ctx()
      with self.assertRaisesRegex(ValueError, "output 'out': a raw tensor of shape .* needs dims"):
        ctx.mark_as_output(tf.zeros([2, 3]), "out")

  def _expected(self, **kwargs):
    t = rc.Dim(None, name="t_expected")
    v = rc.Dim(kwargs.pop("v", 5), name="v")
    dims = kwargs.pop("dims", None) or [rc.batch_dim, t, v]
    return rc.TensorDict({"out": rc.Tensor("out", dims, kwargs.pop("dtype", "float32"), **kwargs)})

  def _mark(self, expected, raw_dtype=tf.float32, sparse_dim=None):
    t = rc.Dim(tf.constant([1, 2]), name="t")
    v = rc.Dim(5, name="v")
    ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
    x = rc.Tensor(
      "x", [rc.batch_dim, t, v], raw_dtype.name, raw_tensor=tf.zeros([2, 2, 5], raw_dtype), sparse_dim=sparse_dim
    )
    ctx.mark_as_output(x, "out")
    return ctx

  def test_expected_ok_and_complete(self):
    with tf.Graph().as_default():
      ctx = self._mark(self._expected())
      ctx.check_outputs_complete()

  def test_expected_mismatches(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, "static size 5 but 6 expected"):
        self._mark(self._expected(v=6))
      with self.assertRaisesRegex(ValueError, "dtype float32 but int32 expected"):
        self._mark(self._expected(dtype="int32"))
      with self.assertRaisesRegex(ValueError, "3 dims but 2 expected"):
        self._mark(self._expected(dims=[rc.batch_dim, rc.Dim(None, name="t2")]))
      with self.assertRaisesRegex(ValueError, "dynamic vs static"):
        self._mark(self._expected(dims=[rc.batch_dim, rc.Dim(2, name="t2"), rc.Dim(5, name="v2")]))
      with self.assertRaisesRegex(ValueError, "sparse_dim None but"):
        self._mark(self._expected(sparse_dim=rc.Dim(7, name="classes")))
      with self.assertRaisesRegex(ValueError, "sparse_dim size 8 but 7 expected"):
        self._mark(self._expected(sparse_dim=rc.Dim(7, name="classes")), sparse_dim=rc.Dim(8, name="c"))

  def test_unknown_and_missing(self):
    with tf.Graph().as_default():
      expected = self._expected()
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      with self.assertRaisesRegex(ValueError, r"unknown output name 'foo': expected outputs are \['out'\]"):
        ctx.mark_as_output(tf.constant(1.0), "foo")
      with self.assertRaisesRegex(RuntimeError, r"outputs \['out'\] were expected but not marked"):
        ctx.check_outputs_complete()


class TrainFlagOutOfOrderTest(tf.test.TestCase, parameterized.TestCase):
  """Overrides are records, removed on exit: the flag is that of the latest override still active."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _read(self, ctx, per_func):
    return ctx.is_train_flag_enabled(func=helper_func) if per_func else ctx.train_flag

  def _override(self, ctx, flag, per_func):
    return ctx.train_flag_ctx(flag, func=helper_func) if per_func else ctx.train_flag_ctx(flag)

  @parameterized.parameters(False, True)
  def test_explicit_out_of_order_exit(self, per_func):
    ctx = rc.init_train_step_run_ctx(train_flag=True)
    first, second = self._override(ctx, False, per_func), self._override(ctx, True, per_func)
    first.__enter__()
    second.__enter__()
    self.assertIs(self._read(ctx, per_func), True)
    first.__exit__(None, None, None)  # out of order: `second` is still active
    self.assertIs(self._read(ctx, per_func), True)
    self.assertIs(ctx.is_train_flag_enabled(func=other_func), True)
    second.__exit__(None, None, None)
    self.assertIs(self._read(ctx, per_func), True)  # the base flag (a stack of old values gives False)
    third = self._override(ctx, False, per_func)
    fourth = self._override(ctx, False, per_func)
    third.__enter__()
    fourth.__enter__()
    third.__exit__(None, None, None)
    self.assertIs(self._read(ctx, per_func), False)  # `fourth` still active
    fourth.__exit__(None, None, None)
    self.assertIs(self._read(ctx, per_func), True)

  def test_out_of_order_mixed_global_and_func(self):
    ctx = rc.init_train_step_run_ctx(train_flag=True)
    func_off, global_off = ctx.train_flag_ctx(False, func=helper_func), ctx.train_flag_ctx(False)
    func_off.__enter__()
    global_off.__enter__()
    func_off.__exit__(None, None, None)
    self.assertIs(ctx.is_train_flag_enabled(func=helper_func), False)  # the global override still holds
    global_off.__exit__(None, None, None)
    self.assertIs(ctx.is_train_flag_enabled(func=helper_func), True)
    self.assertIs(ctx.train_flag, True)

  @parameterized.parameters(False, True)
  def test_asyncio_tasks_holding_overrides_across_await(self, per_func):
    ctx = rc.init_train_step_run_ctx(train_flag=True)
    seen = {}

    async def task(name, flag, entered, release):
      with self._override(ctx, flag, per_func):
        entered.set()
        await release.wait()
        seen[name] = self._read(ctx, per_func)  # its own override, whatever the other task did

    async def main():
      a_in, b_in, a_go, b_go = (asyncio.Event() for _ in range(4))
      task_a = asyncio.ensure_future(task("a", False, a_in, a_go))
      await a_in.wait()
      task_b = asyncio.ensure_future(task("b", True, b_in, b_go))
      await b_in.wait()
      seen["main, both active"] = self._read(ctx, per_func)
      a_go.set()  # a exits first, while b still holds its override
      await task_a
      seen["main, after a"] = self._read(ctx, per_func)
      b_go.set()
      await task_b

    asyncio.run(main())
    self.assertEqual(seen, {"a": False, "b": True, "main, both active": True, "main, after a": True})
    self.assertIs(self._read(ctx, per_func), True)  # a stack of old values would leave False

  def test_exit_in_another_thread_is_an_error(self):
    ctx = rc.init_train_step_run_ctx(train_flag=True)
    cm = ctx.train_flag_ctx(False)
    cm.__enter__()
    errors = []

    def exit_elsewhere():
      try:
        cm.__exit__(None, None, None)
      except RuntimeError as exc:
        errors.append(str(exc))

    thread = threading.Thread(target=exit_elsewhere)
    thread.start()
    thread.join()
    self.assertLen(errors, 1)
    self.assertIn("exited in another thread or asyncio task", errors[0])
    self.assertIs(ctx.train_flag, True)  # the override has ended, also here

  def test_task_sees_overrides_of_its_creator_until_they_exit(self):
    ctx = rc.init_train_step_run_ctx(train_flag=True)
    seen = []

    async def child(release):
      seen.append(ctx.train_flag)
      await release.wait()
      seen.append(ctx.train_flag)

    async def main():
      release = asyncio.Event()
      with ctx.train_flag_ctx(False):
        task = asyncio.ensure_future(child(release))
        await asyncio.sleep(0)
      release.set()
      await task

    asyncio.run(main())
    self.assertEqual(seen, [False, True])


class MarkAsOutputExpectedOrderTest(tf.test.TestCase, parameterized.TestCase):
  """dims=None with an expected output: the expected output's dims give the order (as in RETURNN)."""

  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  def _btf(self):
    t = rc.Dim(tf.constant([2, 3]), name="t")
    f = rc.Dim(4, name="f")
    x_np = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    return t, f, x_np, rc.Tensor("x", [rc.batch_dim, t, f], "float32", raw_tensor=tf.constant(x_np))

  @parameterized.named_parameters(("same_dims", True), ("other_dim_objects", False))
  def test_bft_expected_btf_given(self, same_dims):
    with tf.Graph().as_default():
      t, f, x_np, x = self._btf()
      exp_t = t if same_dims else rc.Dim(None, name="t_expected")
      exp_f = f if same_dims else rc.Dim(4, name="f_expected")
      expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim, exp_f, exp_t], "float32")})
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      ctx.mark_as_output(x, "out")  # was: "axis 1: ... (dynamic vs static)"
      out = ctx.outputs["out"]
      self.assertEqual(out.dims, (rc.batch_dim, f, t))
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(out.raw_tensor), np.transpose(x_np, [0, 2, 1]))

  def test_identity_resolves_equal_sizes(self):
    with tf.Graph().as_default():
      f, g = rc.Dim(3, name="f"), rc.Dim(3, name="g")
      x_np = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
      x = rc.Tensor("x", [rc.batch_dim, f, g], "float32", raw_tensor=tf.constant(x_np))
      expected = rc.TensorDict({"out": rc.Tensor("out", [g, rc.batch_dim, f], "float32")})
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      ctx.mark_as_output(x, "out")
      self.assertEqual(ctx.outputs["out"].dims, (g, rc.batch_dim, f))
      with self.cached_session() as sess:
        self.assertAllEqual(sess.run(ctx.outputs["out"].raw_tensor), np.transpose(x_np, [2, 0, 1]))

  def test_ambiguous_match(self):
    with tf.Graph().as_default():
      f, g = rc.Dim(3, name="f"), rc.Dim(3, name="g")
      x = rc.Tensor("x", [rc.batch_dim, f, g], "float32", raw_tensor=tf.zeros([2, 3, 3]))
      expected = rc.TensorDict(
        {"out": rc.Tensor("out", [rc.batch_dim, rc.Dim(3, name="e1"), rc.Dim(3, name="e2")], "float32")}
      )
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      with self.assertRaisesRegex(ValueError, r"cannot match expected dim Dim\('e1', 3\).*all fit; pass dims"):
        ctx.mark_as_output(x, "out")
      ctx.mark_as_output(x, "out", dims=[rc.batch_dim, g, f])
      self.assertEqual(ctx.outputs["out"].dims, (rc.batch_dim, g, f))

  def test_raw_tensor_gets_expected_dims(self):
    with tf.Graph().as_default():
      t, f, x_np, _ = self._btf()
      expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim, t, f], "float32")})
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      ctx.mark_as_output(tf.constant(x_np), "out")  # raw, no dims: the expected dims as they are
      self.assertEqual(ctx.outputs["out"].dims, (rc.batch_dim, t, f))

  def test_mismatch_still_named(self):
    with tf.Graph().as_default():
      _, _, _, x = self._btf()
      expected = rc.TensorDict(
        {"out": rc.Tensor("out", [rc.batch_dim, rc.Dim(5, name="f5"), rc.Dim(None, name="t")], "float32")}
      )
      ctx = rc.init_forward_step_run_ctx(expected_outputs=expected)
      with self.assertRaisesRegex(ValueError, r"mark_as_output\('out'\): axis 1: .* \(dynamic vs static\)"):
        ctx.mark_as_output(x, "out")


class NamesTest(tf.test.TestCase, parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rc.reset_run_ctx()

  @parameterized.parameters("my out", "a/b", "x:y", "1st")
  def test_output_names_checked_at_mark_time(self, name):
    with tf.Graph().as_default():
      ctx = rc.init_forward_step_run_ctx()
      with self.assertRaisesRegex(ValueError, f"output name {name!r} is not a valid signature key"):
        ctx.mark_as_output(tf.constant(1.0), name)

  def test_expected_output_names_checked(self):
    expected = rc.TensorDict({"my out": rc.Tensor("x", [rc.batch_dim], "float32")})
    with self.assertRaisesRegex(ValueError, "expected output name 'my out' is not a valid signature key"):
      rc.init_forward_step_run_ctx(expected_outputs=expected)


if __name__ == "__main__":
  absltest.main()
