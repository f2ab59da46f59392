"""The bad-input table: each user error across the API, the op, the engine and export, with the
error type and the message it gets. Every row is executed; the README summarises the table.

A row is ``(area, what, exception type, message regex, function that triggers it)``. The function
runs inside a fresh ``tf.Graph`` with a reset run context.
"""

import os
import re
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

import returnn_rc as rc
from graphs import char_lm, two_losses
from returnn_rc import engine, export, graph_module
from returnn_rc.engine import records
from returnn_rc.export import forwarding
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
  rc.init_forward_step_run_ctx(expected_outputs=expected).mark_as_output(tf.zeros([2]), "logits", dims=[rc.batch_dim])


def _expected_output_mismatch():
  expected = rc.TensorDict({"out": rc.Tensor("out", [rc.batch_dim, rc.Dim(5, name="v")], "float32")})
  rc.init_forward_step_run_ctx(expected_outputs=expected).mark_as_output(
    tf.zeros([2, 6]), "out", dims=[rc.batch_dim, rc.Dim(6, name="v6")]
  )


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


def _custom_inv_norm_ambiguous():
  _train_ctx().mark_as_loss(
    tf.zeros([3, 5, 2]),
    "ce",
    dims=[rc.batch_dim, _time_dim((2, 3, 5)), rc.Dim(2, name="f")],
    custom_inv_norm_factor=tf.ones([3, 5]),
  )


def _custom_inv_norm_negative():
  ctx = _train_ctx()
  time = _time_dim((1, 2))
  ctx.mark_as_loss(
    tf.zeros([2, 2]),
    "ce",
    dims=[rc.batch_dim, time],
    custom_inv_norm_factor=rc.Tensor(
      "n", [rc.batch_dim, time], "float32", raw_tensor=tf.constant([[1.0, 9.0], [-1.0, 1.0]])
    ),
  )
  with tf.compat.v1.Session() as sess:
    sess.run(ctx.losses["ce"].get_inv_norm_factor().raw_tensor)


def _custom_inv_norm_batch_mismatch():
  _train_ctx().mark_as_loss(
    tf.zeros([2, 3]), "ce", dims=[rc.batch_dim, _time_dim()], custom_inv_norm_factor=tf.ones([3])
  )


def _sizes_batch_mismatch_masked_static():
  ctx = _train_ctx()
  ctx.mark_as_loss(tf.zeros([3, 3]), "ce", dims=[rc.batch_dim, _time_dim((2,))], use_flatten_frames=False)
  ctx.losses["ce"].get_summed_loss()


def _sizes_batch_mismatch_masked_runtime():
  ctx = _train_ctx()
  lens = tf.compat.v1.placeholder(tf.int32, [None])
  ctx.mark_as_loss(tf.zeros([3, 3]), "ce", dims=[rc.batch_dim, rc.Dim(lens, name="time")], use_flatten_frames=False)
  with tf.compat.v1.Session() as sess:
    sess.run(ctx.losses["ce"].get_summed_loss().raw_tensor, {lens: [2]})


def _bad_loss_name():
  _train_ctx().mark_as_loss(tf.constant(1.0), "ce loss")


def _bad_output_name():
  rc.init_forward_step_run_ctx().mark_as_output(tf.constant(1.0), "out:0")


def _non_finite_scale():
  _train_ctx().mark_as_loss(tf.constant(1.0), "ce", scale=float("nan"))


def _non_bool_loss_option():
  _train_ctx().mark_as_loss(tf.constant(1.0), "ce", as_error="False")


def _string_loss():
  _train_ctx().mark_as_loss(tf.constant("x"), "ce")


def _ambiguous_expected_output_dims():
  f, g = rc.Dim(3, name="f"), rc.Dim(3, name="g")
  expected = rc.TensorDict(
    {"out": rc.Tensor("out", [rc.batch_dim, rc.Dim(3, name="e1"), rc.Dim(3, name="e2")], "float32")}
  )
  rc.init_forward_step_run_ctx(expected_outputs=expected).mark_as_output(
    rc.Tensor("x", [rc.batch_dim, f, g], "float32", raw_tensor=tf.zeros([2, 3, 3])), "out"
  )


def _flag_ctx_exit_in_other_thread():
  import threading  # pylint: disable=import-outside-toplevel

  cm = _train_ctx().train_flag_ctx(False)
  cm.__enter__()
  errors = []

  def exit_elsewhere():
    try:
      cm.__exit__(None, None, None)
    except RuntimeError as exc:
      errors.append(exc)

  thread = threading.Thread(target=exit_elsewhere)
  thread.start()
  thread.join()
  raise errors[0]


def _dropout_tensor_prob_out_of_range():
  _train_ctx()
  prob = tf.compat.v1.placeholder(tf.float32, [])
  y = rc.dropout(tf.ones([2]), prob)
  with tf.compat.v1.Session() as sess:
    sess.run(y, {prob: 1.0})


def _dropout_non_scalar_prob():
  _train_ctx()
  rc.dropout(tf.ones([2]), tf.constant([0.1, 0.2]))


def _negative_dropout_seed():
  rc.nn.set_stateless_dropout_seed(-1)


def _non_bool_train_feed():
  rc.graph_state.get_graph_state().feed_dict(train="False")


def _float_step():
  gs = rc.graph_state.get_graph_state()
  with tf.compat.v1.Session() as sess:
    gs.set_step(sess, 1.5)


def _tensor_name_not_str():
  rc.Tensor(None, [rc.batch_dim], "float32")


def _accumulator_malformed():
  rc.EpochAccumulator().add({"ce": 3.0})


def _btf_template():
  return rc.TensorDict({"x": rc.Tensor("x", [rc.batch_dim, rc.Dim(None, name="t"), rc.Dim(4, name="f")], "float32")})


def _pad_batch_static_size():
  graph_module.pad_batch(_btf_template(), [{"x": np.ones([2, 5])}])


def _pad_batch_missing_input():
  graph_module.pad_batch(_btf_template(), [{"y": np.ones([2, 4])}])


def _default_data_max_seqs_negative():
  graph_module.default_data(testing_graphs.make_sum_graph(), "train", max_seqs=-1)


def _extern_data_bad_name():
  module = testing_graphs.make_sum_graph()
  module.extern_data_template = lambda: rc.TensorDict({"in put": rc.Tensor("in put", [rc.batch_dim], "float32")})
  graph_module.extern_data_template(module)


def _ops_fallback_env_unrecognised():
  with mock.patch.dict(os.environ, {"RETURNN_RC_OPS_FALLBACK": "maybe"}):
    rc.ops.flatten_with_seq_len_mask(tf.zeros([2, 3]), tf.constant([1, 2]))


_TMP_ROOT = None  # set per test: a directory removed afterwards


def _tmp() -> str:
  return tempfile.mkdtemp(dir=_TMP_ROOT)


def _engine(module=None, train_dir=None, data_lengths=(2, 3), distribution=None, **config):
  config.setdefault("log_every_secs", 1e9)
  config.setdefault("num_epochs", 1)
  config.setdefault("batch_size", 2)
  return engine.Engine(
    module or testing_graphs.make_sum_graph(),
    engine.EngineConfig(train_dir=train_dir or _tmp(), **config),
    train_data=testing_graphs.sum_data(list(data_lengths)),
    dev_data=[],
    distribution=distribution,
  )


def _engine_missing_function():
  _engine(testing_graphs.make_sum_graph("broken", drop_input="forward_step"))


def _engine_unknown_graph():
  engine.load_graph_module("graphs.no_such_graph")


def _engine_unknown_lr_loss():
  _engine(lr_control_loss="ce")


def _engine_data_mismatch():
  engine.Engine(
    testing_graphs.make_sum_graph(),
    engine.EngineConfig(train_dir=_tmp()),
    train_data=[{"x": np.ones([2, 3], np.float32)}],
    dev_data=[],
  )


def _engine_other_models_train_dir():
  train_dir = _tmp()
  with _engine(testing_graphs.make_sum_graph("model_a"), train_dir) as eng:
    eng.train()
  _engine(testing_graphs.make_sum_graph("model_b"), train_dir)  # same variables, another graph


def _engine_nan_loss():
  with _engine(testing_graphs.make_sum_graph(nan_at_step=0)) as eng:
    eng.train()


def _nothing_written(train_engine):
  """Runs ``train_engine(train_dir)`` (which must raise) and checks that it wrote nothing to ``train_dir``."""
  train_dir = os.path.join(_tmp(), "train_dir")
  try:
    train_engine(train_dir)
  finally:
    if os.path.exists(train_dir):
      raise AssertionError(f"the failed run wrote {train_dir}: {os.listdir(train_dir)}")


def _files_engine(pattern):
  _nothing_written(
    lambda train_dir: engine.Engine(
      two_losses, engine.EngineConfig(train_dir=train_dir, train_data=pattern), dev_data=[]
    )
  )


def _two_losses_records():
  """A record file of two_losses' default train data (8 sequences); returns its path."""
  (path,) = records.write_shards(_tmp(), two_losses.extern_data_template(), two_losses.default_data("train", 8))
  return path


def _data_glob_matches_nothing():
  _files_engine(os.path.join(_tmp(), "nothing-*"))


def _data_empty_file():
  path = os.path.join(_tmp(), "empty.tfrecord")
  open(path, "w").close()
  _files_engine(path)


def _data_other_format():
  path = os.path.join(_tmp(), "lines.txt")
  with open(path, "w") as f:
    f.write("this is a text file, not a TFRecord file\n" * 5)
  _files_engine(path)


def _data_tfrecord_without_schema():
  path = os.path.join(_tmp(), "plain.tfrecord")
  with tf.io.TFRecordWriter(path) as w:
    w.write(
      tf.train.Example(
        features=tf.train.Features(feature={"ids": tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2, 3]))})
      ).SerializeToString()
    )
  _files_engine(path)


def _data_other_graphs_schema():
  (path,) = records.write_shards(
    _tmp(), char_lm.extern_data_template(), char_lm.default_data("dev", 4), graph_name="char_lm"
  )
  _files_engine(path)


def _data_corrupted_record():
  path = _two_losses_records()
  raw = bytearray(open(path, "rb").read())
  offset = 0
  for _ in range(2):  # to record 2 (the second sequence record)
    offset += 16 + int(np.frombuffer(bytes(raw[offset : offset + 8]), "<u8")[0])
  raw[offset + 12 + 5] ^= 0xFF
  with open(path, "wb") as f:
    f.write(bytes(raw))
  _files_engine(path)


def _option_engine(**options):
  _nothing_written(
    lambda train_dir: engine.Engine(
      testing_graphs.make_sum_graph(),
      engine.EngineConfig(train_dir=train_dir, **options),
      train_data=testing_graphs.sum_data([2, 3]),
      dev_data=[],
    )
  )


def _export_no_output():
  module = testing_graphs.make_sum_graph()
  module.forward_step = lambda *, model, extern_data: None
  export.export_saved_model(module, checkpoint_path=None, export_dir=_tmp() + "/sm")


def _export_dir_not_empty():
  export_dir = _tmp()
  open(os.path.join(export_dir, "something"), "w").close()
  export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=export_dir)


def _export_checkpoint_missing():
  export.export_saved_model(
    testing_graphs.make_sum_graph(), checkpoint_path="/nonexistent/model.001", export_dir=_tmp() + "/sm"
  )


def _distributed_port_in_use():
  import socket  # pylint: disable=import-outside-toplevel

  from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    sock.listen(1)
    address = f"localhost:{sock.getsockname()[1]}"
    distributed.multi_worker(distributed.ClusterSpec(workers=[address, "localhost:1"], index=0))


def _distributed_malformed_tf_config():
  from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

  distributed.parse_tf_config('{"cluster": {"worker": ["localhost:2222"]}, "task": {"type": "worker", "index": 1}}')


def _distributed_more_workers_than_batch():
  from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

  dist = distributed.mirrored(["/cpu:0", "/cpu:1", "/cpu:2"])
  _engine(batch_size=2, distribution=dist)


def _engine_bad_option(**option):
  def trigger():
    _engine(**option)

  return trigger


def _engine_train_dir_root():
  _engine(train_dir="/", fresh=True)


def _engine_train_dir_home():
  home = _tmp()
  with mock.patch.dict(os.environ, {"HOME": home}):
    _engine(train_dir=home, fresh=True)


def _engine_no_checkpoint_restores():
  train_dir = _tmp()
  with _engine(train_dir=train_dir) as eng:
    eng.train()
  with open(os.path.join(train_dir, "model.001.index"), "r+b") as f:
    f.truncate(5)
  _engine(train_dir=train_dir)


def _engine_train_zero_epochs():
  with _engine() as eng:
    eng.train(num_epochs=0)


def _engine_forward_interleaved():
  with _engine() as eng:
    batches = eng.forward("train")
    next(batches)
    eng.evaluate("train")
    next(batches)


def _engine_no_default_data():
  engine.Engine(testing_graphs.make_sum_graph("no_data"), engine.EngineConfig(train_dir=_tmp()))


def _export_overwrite_not_an_export():
  export_dir = _tmp()
  open(os.path.join(export_dir, "model.py"), "w").close()
  export.export_saved_model(
    testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=export_dir, overwrite=True
  )


def _export_current_directory():
  cwd = _tmp()
  open(os.path.join(cwd, "model.py"), "w").close()
  with mock.patch("os.getcwd", return_value=cwd):
    export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=cwd, overwrite=True)


def _export_epoch_zero():
  export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=_tmp() + "/sm", epoch=0)


def _serving_size_above_padded_length():
  export_dir = _tmp() + "/sm"
  export.export_saved_model(testing_graphs.make_sum_graph(), checkpoint_path=None, export_dir=export_dir)
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as sess:  # plain TF's loader, as a serving user runs it
    sig = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir).signature_def["serving_default"]
    tensor = lambda info: graph.get_tensor_by_name(info.name)
    sess.run(
      {k: tensor(v) for k, v in sig.outputs.items()},
      {tensor(sig.inputs["x"]): np.zeros([2, 3], np.float32), tensor(sig.inputs["x:size1"]): [4, 1]},
    )


def _forward_npz(sizes):
  def trigger():
    inputs = export.build_forward_graph(testing_graphs.make_sum_graph()).description["inputs"]
    path = _tmp() + "/in.npz"
    np.savez(path, **{"x": np.zeros([2, 3], np.float32), "x:size1": np.asarray(sizes)})
    forwarding.read_sequences_npz(path, inputs)

  return trigger


def _forward_output_not_npz():
  forwarding.write_outputs_npz(_tmp() + "/out", [], {})


# (area, what, exception, message regex, trigger)
BAD_INPUTS = [
  (
    "api",
    "loss marked in forward stage",
    RuntimeError,
    r"mark_as_loss\('ce'\) called in stage 'forward_step'",
    _wrong_stage_loss,
  ),
  (
    "api",
    "output marked in train stage",
    RuntimeError,
    r"mark_as_output\('out'\) called in stage 'train_step'",
    _wrong_stage_output,
  ),
  ("api", "duplicate loss name", ValueError, r"duplicate loss name 'ce'", _duplicate_loss),
  (
    "api",
    "raw tensor without dims",
    ValueError,
    r"loss 'ce': a raw tensor of shape \(2, 3\) needs dims",
    _raw_without_dims,
  ),
  ("api", "dims count != rank", ValueError, r"dims mismatch: 1 dims .* rank 2", _dims_count_mismatch),
  ("api", "static dim != shape", ValueError, r"dims mismatch at axis 1: Dim\('feature', 4\)", _static_dim_mismatch),
  (
    "api",
    "unknown output name",
    ValueError,
    r"unknown output name 'logits': expected outputs are \['out'\]",
    _unknown_output,
  ),
  ("api", "expected-output mismatch", ValueError, r"static size 6 but 5 expected", _expected_output_mismatch),
  (
    "api",
    "expected output not marked",
    RuntimeError,
    r"outputs \['out'\] were expected but not marked",
    _outputs_incomplete,
  ),
  ("api", "total_loss() with no loss", RuntimeError, r"no loss was marked", _total_loss_without_loss),
  ("api", "non-scalar train flag", ValueError, r"scalar bool tensor, got shape \(2,\)", _non_scalar_flag),
  ("api", "non-bool train flag", TypeError, r"got a float32 tensor", _non_bool_flag),
  (
    "api",
    "train_flag_ctx func not a function",
    TypeError,
    r"func must be a Python function.*got str",
    _flag_ctx_func_not_function,
  ),
  (
    "api",
    "dynamic dim without sizes",
    ValueError,
    r"dynamic dim Dim\('time', dynamic\) has no sizes",
    _dynamic_dim_without_sizes,
  ),
  ("api", "float seq_lens", TypeError, r"Dim 'time': sizes must be int32 or int64, got float32", _float_seq_lens),
  (
    "api",
    "seq_lens > T (masked path)",
    tf.errors.InvalidArgumentError,
    r"seq_lens of dim time out of range",
    _seq_lens_out_of_range_masked,
  ),
  (
    "api",
    "seq_lens > T (packed path)",
    tf.errors.InvalidArgumentError,
    r"seq_lens\[1\] = 4 is out of range",
    _seq_lens_out_of_range_op,
  ),
  (
    "api",
    "seq_lens > T (constant, packed path)",
    ValueError,
    r"seq_lens\[1\] = 4 is out of range \[0, 3\]",
    _seq_lens_out_of_range_op_static,
  ),
  ("api", "dropout probability 1", ValueError, r"drop_prob must be in \[0, 1\), got 1.0", _dropout_prob_one),
  ("api", "epoch 0", ValueError, r"epoch must be >= 1, got 0", _epoch_zero),
  (
    "api",
    "custom_inv_norm_factor of ambiguous raw shape",
    ValueError,
    r"custom_inv_norm_factor: a raw tensor of shape \(3, 5\) is ambiguous",
    _custom_inv_norm_ambiguous,
  ),
  (
    "api",
    "custom_inv_norm_factor < 0 in a valid frame",
    tf.errors.InvalidArgumentError,
    r"custom_inv_norm_factor of loss ce must be finite and >= 0",
    _custom_inv_norm_negative,
  ),
  (
    "api",
    "custom_inv_norm_factor of another batch size",
    ValueError,
    r"custom_inv_norm_factor has batch size 3, but the loss has batch size 2",
    _custom_inv_norm_batch_mismatch,
  ),
  (
    "api",
    "sizes of another batch size (masked path)",
    ValueError,
    r"the sizes of dim time have batch size 1, but the tensor has batch size 3",
    _sizes_batch_mismatch_masked_static,
  ),
  (
    "api",
    "sizes of another batch size (masked path, run time)",
    tf.errors.InvalidArgumentError,
    r"batch size mismatch: the sizes of dim time",
    _sizes_batch_mismatch_masked_runtime,
  ),
  ("api", "invalid loss name", ValueError, r"loss name 'ce loss' is not a valid name", _bad_loss_name),
  ("api", "invalid output name", ValueError, r"output name 'out:0' is not a valid signature key", _bad_output_name),
  ("api", "non-finite loss scale", ValueError, r"loss 'ce': scale must be finite, got nan", _non_finite_scale),
  ("api", "non-bool loss option", TypeError, r"loss 'ce': as_error must be a bool, got str", _non_bool_loss_option),
  ("api", "string loss", TypeError, r"loss 'ce' must be a float, int or bool tensor, got dtype string", _string_loss),
  (
    "api",
    "ambiguous expected-output dims",
    ValueError,
    r"cannot match expected dim Dim\('e1', 3\).*pass dims",
    _ambiguous_expected_output_dims,
  ),
  (
    "api",
    "train_flag_ctx exited in another thread",
    RuntimeError,
    r"exited in another thread or asyncio task",
    _flag_ctx_exit_in_other_thread,
  ),
  (
    "api",
    "tensor drop_prob outside [0, 1) (run time)",
    tf.errors.InvalidArgumentError,
    r"drop_prob is out of range: it must be in \[0, 1\)",
    _dropout_tensor_prob_out_of_range,
  ),
  (
    "api",
    "non-scalar tensor drop_prob",
    ValueError,
    r"a tensor drop_prob must be a scalar, got shape \(2,\)",
    _dropout_non_scalar_prob,
  ),
  ("api", "negative dropout seed", ValueError, r"seed must be in \[0, 2\*\*63\), got -1", _negative_dropout_seed),
  ("api", "non-bool train flag feed", TypeError, r"train must be a bool, got str", _non_bool_train_feed),
  ("api", "float step", TypeError, r"step must be an int, got float", _float_step),
  (
    "api",
    "tensor name not a str",
    TypeError,
    r"Tensor name must be a non-empty str, got NoneType",
    _tensor_name_not_str,
  ),
  (
    "api",
    "malformed batch for EpochAccumulator",
    TypeError,
    r"loss 'ce' must be a pair of numbers",
    _accumulator_malformed,
  ),
  (
    "api",
    "sequence of another static size",
    ValueError,
    r"input 'x': sequence 0 has size 5 at axis 1 .* expected the static size 4",
    _pad_batch_static_size,
  ),
  ("api", "sequence lacking an input", ValueError, r"sequence 0 lacks input\(s\) \['x'\]", _pad_batch_missing_input),
  (
    "api",
    "max_seqs < 1",
    ValueError,
    r"max_seqs must be >= 1 \(or None for all\), got -1",
    _default_data_max_seqs_negative,
  ),
  (
    "api",
    "invalid extern-data name",
    ValueError,
    r"extern-data input name 'in put' is not a valid signature key",
    _extern_data_bad_name,
  ),
  ("op", "equal batch and time axes", ValueError, r"must differ, both are 1", _op_equal_axes),
  ("op", "axis out of range", ValueError, r"time_dim_axis = 3 is out of range", _op_axis_out_of_range),
  ("op", "non-int seq_lens", TypeError, r"seq_lens must be int32 or int64, got float32", _op_non_int_seq_lens),
  ("op", "batch mismatch (build time)", ValueError, r"batch mismatch", _op_batch_mismatch),
  ("op", "batch mismatch (run time)", tf.errors.InvalidArgumentError, r"batch", _op_batch_mismatch_runtime),
  (
    "op",
    "negative seq_len (run time)",
    tf.errors.InvalidArgumentError,
    r"seq_lens\[0\] = -1 is out of range",
    _op_negative_seq_len_runtime,
  ),
  (
    "op",
    "RETURNN_RC_OPS_FALLBACK not a boolean",
    ValueError,
    r"RETURNN_RC_OPS_FALLBACK='maybe' is not a boolean",
    _ops_fallback_env_unrecognised,
  ),
  (
    "engine",
    "graph module missing a function",
    ValueError,
    r"'broken' is missing function\(s\) \['forward_step'\]",
    _engine_missing_function,
  ),
  ("engine", "unknown graph name", ValueError, r"graph module 'graphs.no_such_graph' not found", _engine_unknown_graph),
  (
    "engine",
    "unknown loss name for LR control",
    ValueError,
    r"unknown loss name 'ce'; the graph's losses are \['x'\]",
    _engine_unknown_lr_loss,
  ),
  (
    "engine",
    "data does not match extern_data",
    ValueError,
    r"input 'x': rank 2 .* expects rank 1",
    _engine_data_mismatch,
  ),
  (
    "engine",
    "train_dir of another model",
    ValueError,
    r"holds the checkpoint of another model: graph 'model_a'",
    _engine_other_models_train_dir,
  ),
  (
    "engine",
    "NaN loss in a batch",
    engine.NonFiniteLossError,
    r"loss 'x' is not finite .*in epoch 1, step 0",
    _engine_nan_loss,
  ),
  (
    "data",
    "file glob matches nothing",
    ValueError,
    r"train data: no file matches '.*/nothing-\*'",
    _data_glob_matches_nothing,
  ),
  ("data", "empty record file", ValueError, r"record file '.*/empty.tfrecord' is empty \(0 bytes\)", _data_empty_file),
  (
    "data",
    "file of another format",
    ValueError,
    r"record file '.*/lines.txt' is not a TFRecord file of returnn_rc "
    r"records",
    _data_other_format,
  ),
  (
    "data",
    "TFRecord file without schema record",
    ValueError,
    r"'.*/plain.tfrecord' is a TFRecord file but its first "
    r"record is not a returnn_rc schema record",
    _data_tfrecord_without_schema,
  ),
  (
    "data",
    "file of another graph's schema",
    ValueError,
    r"\(written for graph 'char_lm'\) holds \{data: int32 \[T\] "
    r"sparse 96\}, but graph 'two_losses' expects \{data: int32 \[T\] sparse 10; tags: .*input 'tags' missing",
    _data_other_graphs_schema,
  ),
  (
    "data",
    "corrupted record",
    ValueError,
    r"record file '.*/data-00000-of-00001.tfrecord' has corrupt records: "
    r"record 2 \(unreadable: corrupted record at \d+",
    _data_corrupted_record,
  ),
  (
    "engine",
    "gradient accumulation k < 1",
    ValueError,
    r"accum_grad_multiple_step \(k\) must be an int >= 1, got 0",
    lambda: _option_engine(accum_grad_multiple_step=0),
  ),
  (
    "engine",
    "clip norm <= 0",
    ValueError,
    r"grad_clip_global_norm must be a finite float > 0 \(or None: no "
    r"clipping\), got 0.0",
    lambda: _option_engine(grad_clip_global_norm=0.0),
  ),
  (
    "engine",
    "unknown optimizer",
    ValueError,
    r"unknown optimizer 'sgdd'; expected one of \['adam', 'adamw', "
    r"'momentum'\]",
    lambda: _option_engine(optimizer="sgdd"),
  ),
  (
    "engine",
    "unknown learning-rate schedule",
    ValueError,
    r"unknown learning-rate schedule 'cosine'",
    lambda: _option_engine(lr_schedule="cosine"),
  ),
  ("export", "no marked output", ValueError, r"forward_step marked no output", _export_no_output),
  (
    "export",
    "export dir not empty",
    ValueError,
    r"already exists and is not empty; pass overwrite=True",
    _export_dir_not_empty,
  ),
  (
    "export",
    "checkpoint does not exist",
    ValueError,
    r"checkpoint '/nonexistent/model.001' does not exist",
    _export_checkpoint_missing,
  ),
  ("engine", "batch_size 0", ValueError, r"batch_size must be an int >= 1, got 0", _engine_bad_option(batch_size=0)),
  ("engine", "num_epochs 0", ValueError, r"num_epochs must be an int >= 1, got 0", _engine_bad_option(num_epochs=0)),
  (
    "engine",
    "learning rate NaN",
    ValueError,
    r"learning_rate must be a finite float >= 0, got nan",
    _engine_bad_option(learning_rate=float("nan")),
  ),
  (
    "engine",
    "learning rate < 0",
    ValueError,
    r"learning_rate must be a finite float >= 0, got -0.1",
    _engine_bad_option(learning_rate=-0.1),
  ),
  (
    "engine",
    "lr_decay outside (0, 1]",
    ValueError,
    r"lr_decay must be a float in \(0, 1\]",
    _engine_bad_option(lr_decay=0.0),
  ),
  (
    "engine",
    "keep_checkpoints 0",
    ValueError,
    r"keep_checkpoints must be an int >= 1, got 0",
    _engine_bad_option(keep_checkpoints=0),
  ),
  (
    "engine",
    "log_every_secs 0",
    ValueError,
    r"log_every_secs must be a finite number of seconds > 0, got 0",
    _engine_bad_option(log_every_secs=0),
  ),
  (
    "engine",
    "negative seed",
    ValueError,
    r"seed must be an int in \[0, 2147483647\], got -1",
    _engine_bad_option(seed=-1),
  ),
  ("engine", "train_dir is /", ValueError, r"train_dir '/' is the filesystem root", _engine_train_dir_root),
  (
    "engine",
    "train_dir is the home directory",
    ValueError,
    r"train_dir '.*' is the home directory",
    _engine_train_dir_home,
  ),
  (
    "engine",
    "no checkpoint in train_dir restores",
    RuntimeError,
    r"holds checkpoint files but no checkpoint restores: model.001 \(.*\)\. Nothing was changed",
    _engine_no_checkpoint_restores,
  ),
  ("engine", "train(num_epochs=0)", ValueError, r"num_epochs must be an int >= 1, got 0", _engine_train_zero_epochs),
  (
    "engine",
    "forward generator used after the iterator was re-initialised",
    RuntimeError,
    r"input iterator was re-initialised .* while this iteration over split 'train' was not finished",
    _engine_forward_interleaved,
  ),
  (
    "engine",
    "no data and no default_data",
    ValueError,
    r"'no_data' has no default_data\(split\) function; pass "
    r"the data explicitly",
    _engine_no_default_data,
  ),
  (
    "export",
    "overwrite of a directory that is not an export",
    ValueError,
    r"is not an earlier returnn_rc export \(unexpected: \['model.py'.*nothing was deleted",
    _export_overwrite_not_an_export,
  ),
  (
    "export",
    "export_dir is the current directory",
    ValueError,
    r"is the current directory or one above it",
    _export_current_directory,
  ),
  ("export", "epoch 0", ValueError, r"epoch must be an int in \[1, 2\*\*63\), got 0", _export_epoch_zero),
  (
    "export",
    "SavedModel size input > padded length (run time)",
    tf.errors.InvalidArgumentError,
    r"size input x:size1 must be <= the padded length of input x at axis 1",
    _serving_size_above_padded_length,
  ),
  (
    "export",
    "forward input sizes > padded length",
    ValueError,
    r"sizes 'x:size1': sequence 0 has size 4, outside \[0, 3\]",
    _forward_npz([4, 1]),
  ),
  (
    "export",
    "forward input sizes negative",
    ValueError,
    r"sizes 'x:size1': sequence 1 has size -1",
    _forward_npz([3, -1]),
  ),
  (
    "export",
    "forward input sizes float",
    ValueError,
    r"sizes 'x:size1' must be integers, got dtype float64",
    _forward_npz([3.0, 1.0]),
  ),
  (
    "export",
    "forward input sizes: wrong count",
    ValueError,
    r"sizes 'x:size1' must have shape \[2\] \(one per sequence of 'x'\), got shape \[3\]",
    _forward_npz([3, 1, 1]),
  ),
  (
    "export",
    "forward output file not .npz",
    ValueError,
    r"output file must be a path ending with '.npz'",
    _forward_output_not_npz,
  ),
  (
    "workers",
    "worker port in use",
    ValueError,
    r"worker address 'localhost:\d+': port \d+ is in use",
    _distributed_port_in_use,
  ),
  (
    "workers",
    "malformed TF_CONFIG",
    ValueError,
    r"TF_CONFIG: task.index must be an int in \[0, 1\) \(the number "
    r"of workers\), got 1",
    _distributed_malformed_tf_config,
  ),
  (
    "workers",
    "more workers than batch_size",
    ValueError,
    r"3 workers \(replicas\) but batch_size=2: every replica "
    r"needs at least one sequence",
    _distributed_more_workers_than_batch,
  ),
]


class BadInputTableTest(tf.test.TestCase, parameterized.TestCase):
  @parameterized.named_parameters(
    (f"{area}_{i:02d}", exc, regex, fn) for i, (area, _, exc, regex, fn) in enumerate(BAD_INPUTS)
  )
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

  def test_readme_table_is_this_table(self):
    with open(os.path.join(_REPO_ROOT, "README.md"), encoding="utf-8") as f:
      readme = f.read()
    section = readme.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    table = {(area, what, exc.__name__) for area, what, exc, _, _ in BAD_INPUTS}
    self.assertLen(table, len(BAD_INPUTS), "two rows of BAD_INPUTS have the same area, description and error")
    self.assertEqual(_readme_rows(section), table)
    # Control: the parser sees a row that is missing from the README and one that is added.
    first_row = next(line for line in section.splitlines() if _README_ROW.match(line))
    self.assertLen(_readme_rows(section.replace(first_row + "\n", "")), len(table) - 1)
    self.assertLen(_readme_rows(section + "\n| api | new | `ValueError` | x |"), len(table) + 1)


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_README_ROW = re.compile(r"^\| (\w+) \| (.+?) \| `(\w+)` \| .* \|$")


def _readme_rows(section: str) -> set:
  """(area, bad input, error class name) of each row of the README's bad-input table."""
  return {m.groups() for m in map(_README_ROW.match, section.splitlines()) if m}


if __name__ == "__main__":
  absltest.main()
