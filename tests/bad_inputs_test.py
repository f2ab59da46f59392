"""The bad-input table: each user error across the API, the op, the engine and export, with the
error type and the message it gets. Every row is executed; the README summarises the table.

A row is ``(area, what, exception type, message regex, function that triggers it)``. The function
runs inside a fresh ``tf.Graph`` with a reset run context.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from returnn_rc import engine, export
from tests.engine import testing_graphs


def _train_ctx():
  return rc.init_train_step_run_ctx()


def _time_dim(lens=(2, 3)):
  return rc.Dim(tf.constant(list(lens)), name="time")


def _wrong_stage_loss():
  rc.init_forward_step_run_ctx().mark_as_loss(tf.constant(1.0), "ce")


def _wrong_stage_output():
  _train_ctx().mark_as_output(tf.constant(1.0), "out")


def _duplicate_loss():
  ctx = _train_ctx()
  ctx.mark_as_loss(tf.constant(1.0), "ce")
  ctx.mark_as_loss(tf.constant(1.0), "ce")


def _raw_without_dims():
  _train_ctx().mark_as_loss(tf.zeros([2, 3]), "ce")


def _dims_count_mismatch():
  _train_ctx().mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim])


def _static_dim_mismatch():
  rc.Tensor("x", [rc.batch_dim, rc.Dim(4, name="feature")], "float32", raw_tensor=tf.zeros([2, 3]))


def _unknown_output():
  expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim], "float32")})
  rc.init_forward_step_run_ctx(expected_outputs=expected).mark_as_output(tf.zeros([2]), "logits",
                                                                         dims=[rc.batch_dim])


def _expected_output_mismatch():
  expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim, rc.Dim(5, name="v")], "float32")})
  rc.init_forward_step_run_ctx(expected_outputs=expected).mark_as_output(
      tf.zeros([2, 6]), "out", dims=[rc.batch_dim, rc.Dim(6, name="v6")])


def _outputs_incomplete():
  expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim], "float32")})
  rc.init_forward_step_run_ctx(expected_outputs=expected).check_outputs_complete()


def _total_loss_without_loss():
  _train_ctx().total_loss()


def _non_scalar_flag():
  rc.init_train_step_run_ctx(train_flag=tf.constant([True, False]))


def _non_bool_flag():
  rc.init_train_step_run_ctx(train_flag=tf.constant(1.0))


def _flag_ctx_func_not_function():
  with _train_ctx().train_flag_ctx(False, func="dropout"):
    pass


def _dynamic_dim_without_sizes():
  _train_ctx().mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, rc.Dim(None, name="time")])


def _float_seq_lens():
  rc.Dim(tf.constant([1.0, 2.0]), name="time")


def _seq_lens_out_of_range_masked():
  ctx = _train_ctx()
  ctx.mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, _time_dim((2, 4))], use_flatten_frames=False)
  with tf.compat.v1.Session() as sess:
    sess.run(ctx.losses["ce"].get_summed_loss().raw_tensor)


def _seq_lens_out_of_range_op():
  ctx = _train_ctx()
  lens = tf.compat.v1.placeholder(tf.int32, [None])
  ctx.mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, rc.Dim(lens, name="time")])
  with tf.compat.v1.Session() as sess:
    sess.run(ctx.losses["ce"].get_summed_loss().raw_tensor, {lens: [2, 4]})


def _seq_lens_out_of_range_op_static():
  ctx = _train_ctx()
  ctx.mark_as_loss(tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, _time_dim((2, 4))])
  ctx.losses["ce"].get_summed_loss()


def _dropout_prob_one():
  _train_ctx()
  rc.dropout(tf.ones([2]), 1.0)


def _epoch_zero():
  rc.init_train_step_run_ctx(epoch=0)


def _op_equal_axes():
  rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1, 2]), batch_dim_axis=1, time_dim_axis=1)


def _op_axis_out_of_range():
  rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1, 2]), time_dim_axis=3)


def _op_non_int_seq_lens():
  rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1.0, 2.0]))


def _op_batch_mismatch():
  rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1, 2, 3]))


def _op_batch_mismatch_runtime():
  lens = tf.compat.v1.placeholder(tf.int32, [None])
  packed = rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), lens)
  with tf.compat.v1.Session() as sess:
    sess.run(packed, {lens: [1, 2, 3]})


def _op_negative_seq_len_runtime():
  lens = tf.compat.v1.placeholder(tf.int32, [None])
  packed = rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), lens)
  with tf.compat.v1.Session() as sess:
    sess.run(packed, {lens: [-1, 2]})


_TMP_ROOT = None  # set per test: a directory removed afterwards


def _tmp() -> str:
  return tempfile.mkdtemp(dir=_TMP_ROOT)


def _engine(module=None, train_dir=None, data_lengths=(2, 3), **config):
  config.setdefault("num_epochs", 1)
  config.setdefault("batch_size", 2)
  return engine.Engine(module or testing_graphs.make_sum_graph(),
                       engine.EngineConfig(train_dir=train_dir or _tmp(), **config),
                       train_data=testing_graphs.sum_data(list(data_lengths)), dev_data=[])


def _engine_missing_function():
  _engine(testing_graphs.make_sum_graph("broken", drop_input="forward_step"))


def _engine_unknown_graph():
  engine.load_graph_module("graphs.no_such_graph")


def _engine_unknown_lr_loss():
  _engine(lr_control_loss="ce")


def _engine_data_mismatch():
  engine.Engine(testing_graphs.make_sum_graph(), engine.EngineConfig(train_dir=_tmp()),
                train_data=[{"x": np.ones([2, 3], np.float32)}], dev_data=[])


def _engine_other_models_train_dir():
  train_dir = _tmp()
  with _engine(testing_graphs.make_sum_graph("model_a"), train_dir) as eng:
    eng.train()
  _engine(testing_graphs.make_sum_graph("model_b"), train_dir)  # same variables, another graph


def _engine_nan_loss():
  with _engine(testing_graphs.make_sum_graph(nan_at_step=0)) as eng:
    eng.train()


def _export_no_output():
  module = testing_graphs.make_sum_graph()
  module.forward_step = lambda *, model, extern_data: None
  export.export_saved_model(module, checkpoint_path=None, export_dir=_tmp() + "/sm")


def _export_dir_not_empty():
  export_dir = _tmp()
  open(os.path.join(export_dir, "something"), "w").close()
  export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=export_dir)


def _export_checkpoint_missing():
  export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path="/nonexistent/model.001",
                            export_dir=_tmp() + "/sm")


# (area, what, exception, message regex, trigger)
BAD_INPUTS = [
    ("api", "loss marked in forward stage", RuntimeError, r"mark_as_loss\('ce'\) called in stage 'forward_step'",
     _wrong_stage_loss),
    ("api", "output marked in train stage", RuntimeError, r"mark_as_output\('out'\) called in stage 'train_step'",
     _wrong_stage_output),
    ("api", "duplicate loss name", ValueError, r"duplicate loss name 'ce'", _duplicate_loss),
    ("api", "raw tensor without dims", ValueError, r"loss 'ce': a raw tensor of shape \(2, 3\) needs dims",
     _raw_without_dims),
    ("api", "dims count != rank", ValueError, r"dims mismatch: 1 dims .* rank 2", _dims_count_mismatch),
    ("api", "static dim != shape", ValueError, r"dims mismatch at axis 1: Dim\('feature', 4\)", _static_dim_mismatch),
    ("api", "unknown output name", ValueError, r"unknown output name 'logits': expected outputs are \['out'\]",
     _unknown_output),
    ("api", "expected-output mismatch", ValueError, r"static size 6 but 5 expected", _expected_output_mismatch),
    ("api", "expected output not marked", RuntimeError, r"outputs \['out'\] were expected but not marked",
     _outputs_incomplete),
    ("api", "total_loss() with no loss", RuntimeError, r"no loss was marked", _total_loss_without_loss),
    ("api", "non-scalar train flag", ValueError, r"scalar bool tensor, got shape \(2,\)", _non_scalar_flag),
    ("api", "non-bool train flag", TypeError, r"got a float32 tensor", _non_bool_flag),
    ("api", "train_flag_ctx func not a function", TypeError, r"func must be a Python function.*got str",
     _flag_ctx_func_not_function),
    ("api", "dynamic dim without sizes", ValueError, r"dynamic dim Dim\('time', dynamic\) has no sizes",
     _dynamic_dim_without_sizes),
    ("api", "float seq_lens", TypeError, r"Dim 'time': sizes must be int32 or int64, got float32", _float_seq_lens),
    ("api", "seq_lens > T (masked path)", tf.errors.InvalidArgumentError, r"seq_lens of dim time out of range",
     _seq_lens_out_of_range_masked),
    ("api", "seq_lens > T (packed path)", tf.errors.InvalidArgumentError, r"seq_lens\[1\] = 4 is out of range",
     _seq_lens_out_of_range_op),
    ("api", "seq_lens > T (constant, packed path)", ValueError, r"seq_lens\[1\] = 4 is out of range \[0, 3\]",
     _seq_lens_out_of_range_op_static),
    ("api", "dropout probability 1", ValueError, r"drop_prob must be in \[0, 1\), got 1.0", _dropout_prob_one),
    ("api", "epoch 0", ValueError, r"epoch must be >= 1, got 0", _epoch_zero),
    ("op", "equal batch and time axes", ValueError, r"must differ, both are 1", _op_equal_axes),
    ("op", "axis out of range", ValueError, r"time_dim_axis = 3 is out of range", _op_axis_out_of_range),
    ("op", "non-int seq_lens", TypeError, r"seq_lens must be int32 or int64, got float32", _op_non_int_seq_lens),
    ("op", "batch mismatch (build time)", ValueError, r"batch mismatch", _op_batch_mismatch),
    ("op", "batch mismatch (run time)", tf.errors.InvalidArgumentError, r"batch", _op_batch_mismatch_runtime),
    ("op", "negative seq_len (run time)", tf.errors.InvalidArgumentError, r"seq_lens\[0\] = -1 is out of range",
     _op_negative_seq_len_runtime),
    ("engine", "graph module missing a function", ValueError, r"'broken' is missing function\(s\) \['forward_step'\]",
     _engine_missing_function),
    ("engine", "unknown graph name", ValueError, r"graph module 'graphs.no_such_graph' not found", _engine_unknown_graph),
    ("engine", "unknown loss name for LR control", ValueError, r"unknown loss name 'ce'; the graph's losses are \['x'\]",
     _engine_unknown_lr_loss),
    ("engine", "data does not match extern_data", ValueError, r"input 'x': rank 2 .* expects rank 1",
     _engine_data_mismatch),
    ("engine", "train_dir of another model", ValueError, r"holds the checkpoint of another model: graph 'model_a'",
     _engine_other_models_train_dir),
    ("engine", "NaN loss in a batch", engine.NonFiniteLossError, r"loss 'x' is not finite .*in epoch 1, step 0",
     _engine_nan_loss),
    ("export", "no marked output", ValueError, r"forward_step marked no output", _export_no_output),
    ("export", "export dir not empty", ValueError, r"already exists and is not empty; pass overwrite=True",
     _export_dir_not_empty),
    ("export", "checkpoint does not exist", ValueError, r"checkpoint '/nonexistent/model.001' does not exist",
     _export_checkpoint_missing),
]


class BadInputTableTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      (f"{area}_{i:02d}", exc, regex, fn) for i, (area, _, exc, regex, fn) in enumerate(BAD_INPUTS))
  def test_bad_input(self, exc, regex, fn):
    global _TMP_ROOT
    rc.reset_run_ctx()
    with tf.Graph().as_default():
      _TMP_ROOT = self.create_tempdir().full_path
      try:
        with self.assertRaisesRegex(exc, regex):
          fn()
      finally:
        _TMP_ROOT = None

  def test_table_size(self):
    self.assertGreaterEqual(len(BAD_INPUTS), 20)


if __name__ == "__main__":
  absltest.main()
