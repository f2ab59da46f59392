"""Trains a graph module (default: graphs/char_lm.py on Python's stdlib sources) with returnn_rc's engine.

  python tools/train.py                       # char LM, a short run (~2 min on 2 CPU cores)
  python tools/train.py --graph=two_losses --num_epochs=5
  python tools/train.py --fresh               # start over in --train_dir
  python tools/train.py --train_data='data/char_lm/train-*' --dev_data='data/char_lm/dev-*'   # record files

Prints a per-epoch table of train and dev figures (Σ summed / Σ inv_norm per loss; "(err)" marks
as_error losses); writes checkpoints, train_state.json and TensorBoard events to --train_dir.
A re-run resumes from the latest checkpoint there and trains only the missing epochs (none if
--num_epochs were already trained: it then prints the table and exits).

Several workers (returnn_rc.engine.distributed):

  python tools/train.py --graph=two_losses --num_workers=2     # 2 local worker processes, free ports
  TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}' \
    python tools/train.py --graph=two_losses                     # on each host, its own index

--num_workers=N starts N processes of this program on free localhost ports (each with its TF_CONFIG),
prints the chief's (worker 0's) table and exits non-zero if any worker fails (the others are stopped).
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

import graph_names
import tool_errors
import train_options

_GRAPH = flags.DEFINE_string(
  "graph",
  "char_lm",
  f"Graph module: a name in graphs/ ({', '.join(graph_names.available())}), a dotted module name, or a path to a "
  ".py file defining extern_data_template, default_data, get_model, train_step, forward_step.",
)
_TRAIN_DIR = flags.DEFINE_string(
  "train_dir",
  None,
  "Directory for checkpoints, train_state.json and TensorBoard events. Default: ./train_dir/<graph>. The newest "
  "checkpoint there that restores is resumed (a broken newer one is named in a warning); one of another model is "
  "an error (use another dir or --fresh). Not / or the home directory.",
)
_FRESH = flags.DEFINE_bool(
  "fresh",
  False,
  "Delete the engine's own files in --train_dir first (model.<epoch>.index/.data-*, checkpoint, "
  "train_state.json, its events files; nothing else) and train from scratch instead of resuming.",
)
_NUM_EPOCHS = flags.DEFINE_integer(
  "num_epochs", 3, "Train up to and including this epoch (counted from 1 over resumes).", lower_bound=1
)
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 32, "Maximum number of sequences per batch (batches are bucketed by length).", lower_bound=1
)
_MAX_SEQS = flags.DEFINE_integer(
  "max_seqs",
  None,
  "Use at most this many train sequences (dev: a tenth); default: "
  "the graph's default data (char_lm: 6000 train / 500 dev lines).",
  lower_bound=1,
)
_LEARNING_RATE = flags.DEFINE_float(
  "learning_rate", 1e-3, "Initial learning rate (Adam), finite and >= 0.", lower_bound=0.0
)
_LR_CONTROL_LOSS = flags.DEFINE_string(
  "lr_control_loss",
  None,
  "Exact name of the loss whose epoch figure (dev, else train) controls the learning rate (Newbob: multiplied by "
  "--lr_decay when it did not improve by 1% relative). Default: the first loss used by the optimizer "
  "(char_lm: ce).",
)
_LR_DECAY = flags.DEFINE_float(
  "lr_decay",
  0.5,
  "Learning-rate decay factor of the Newbob control, in (0, 1] (1 disables it).",
  lower_bound=0.0,
  upper_bound=1.0,
)
_SEED = flags.DEFINE_integer(
  "seed",
  42,
  "Seed of the variable initialisers, the data order per epoch and the dropout masks.",
  lower_bound=0,
  upper_bound=2**31 - 1,
)
_XLA = flags.DEFINE_bool(
  "xla",
  False,
  "Compile the train step (model, losses, gradients) with XLA (jit_scope). "
  "XLA compiles once per batch shape; see --pad_to_bucket_boundary.",
)
_PAD_TO_BUCKET_BOUNDARY = flags.DEFINE_bool(
  "pad_to_bucket_boundary",
  False,
  "Pad each batch to its length bucket's bound instead of its longest sequence: few distinct shapes (fewer XLA "
  "compilations), more padding. Changes dropout masks (their shape), not the figures' definition.",
)
_KEEP_CHECKPOINTS = flags.DEFINE_integer("keep_checkpoints", 2, "How many epoch checkpoints to keep.", lower_bound=1)
_LOG_EVERY_SECS = flags.DEFINE_float("log_every_secs", 20.0, "Progress logging interval within an epoch (seconds > 0).")
_EXPORT_DIR = flags.DEFINE_string(
  "export_dir",
  None,
  "If set, export the marked outputs of forward_step of the final checkpoint as a SavedModel here "
  "(returnn_rc.export.export_saved_model). Checked before training: it must not exist, be empty, or (with "
  "--overwrite_export) hold an earlier export.",
)
_OVERWRITE_EXPORT = flags.DEFINE_bool(
  "overwrite_export",
  False,
  "Allow --export_dir to replace an earlier export (only an export is replaced; anything else is refused).",
)
_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers",
  1,
  "Start this many local worker processes (MultiWorkerMirroredStrategy, free localhost ports); "
  "1: one process, no distribution (or the TF_CONFIG of the environment: one worker of a cluster).",
  lower_bound=1,
)
_WORKER_TIMEOUT = flags.DEFINE_float(
  "worker_timeout_secs",
  60.0,
  "Several workers: deadline of one step (a Session.run with collectives), seconds; "
  "a worker that died or hangs stops the others after it.",
)
_WORKER_STARTUP_TIMEOUT = flags.DEFINE_float(
  "worker_startup_timeout_secs", 300.0, "Several workers: deadline of the first step (all workers come up)."
)
_FAULT_FOR_TESTS = flags.DEFINE_string(
  "fault_for_tests",
  None,
  "Tests only: 'W:S:exit' or 'W:S:hang' makes worker W exit (code 3) or hang before its "
  "train step S (counted from 0 in this process).",
)
flags.adopt_module_key_flags(train_options)  # data from files, optimizer, clipping, accumulation, schedule, best-N


def _fault_hook(spec, worker_index):
  """The ``SessionRunHook`` of ``--fault_for_tests`` for this worker, or None."""
  if not spec:
    return None
  try:
    worker, step, mode = spec.split(":")
    worker, step = int(worker), int(step)
    if mode not in ("exit", "hang"):
      raise ValueError(mode)
  except ValueError:
    raise app.UsageError(f"--fault_for_tests must be 'W:S:exit' or 'W:S:hang', got {spec!r}") from None
  if worker != worker_index:
    return None
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  class Fault(tf.compat.v1.train.SessionRunHook):
    count = 0

    def before_run(self, run_context):
      if self.count == step:
        sys.stderr.write(f"fault_for_tests: worker {worker} {mode} at step {step}\n")
        sys.stderr.flush()
        if mode == "exit":
          os._exit(3)  # pylint: disable=protected-access
        time.sleep(10**6)
      self.count += 1

  return Fault()


def _launch(argv, num_workers, config_checks):
  """Runs ``num_workers`` local workers of this program; returns the exit code (0: all succeeded)."""
  from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

  config_checks()
  ports = distributed.free_ports(num_workers)
  workers = [f"localhost:{p}" for p in ports]
  grace = _WORKER_TIMEOUT.value + 30.0
  procs = []
  with tempfile.TemporaryDirectory(prefix="returnn_rc_workers_") as logdir:
    logs = []
    for i in range(num_workers):
      env = dict(os.environ, TF_CONFIG=distributed.ClusterSpec(workers=workers, index=i).tf_config())
      log = open(os.path.join(logdir, f"worker{i}.log"), "w+b")  # pylint: disable=consider-using-with
      logs.append(log)
      cmd = [sys.executable, os.path.abspath(__file__)] + argv[1:] + ["--num_workers=1"]
      procs.append(
        subprocess.Popen(
          cmd,
          env=env,
          stdout=None if i == 0 else subprocess.DEVNULL,  # pylint: disable=consider-using-with
          stderr=log,
        )
      )
    logging.info("started %d workers (pids %s) on %s", num_workers, [p.pid for p in procs], workers)
    failed, stop_at = [], None
    while any(p.poll() is None for p in procs):
      for i, p in enumerate(procs):
        if p.poll() not in (None, 0) and i not in [f for f, _ in failed]:
          code = p.returncode
          how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
          failed.append((i, f"worker {i} (pid {p.pid}, {workers[i]}) failed: {how}"))
          stop_at = stop_at or time.time() + grace
      if stop_at is not None and time.time() > stop_at:
        for i, p in enumerate(procs):
          if p.poll() is None:
            failed.append(
              (
                i,
                f"worker {i} (pid {p.pid}, {workers[i]}) still ran {grace:.0f}s after a worker "
                f"failed (it hangs?): killed",
              )
            )
            p.kill()
            p.wait()
      time.sleep(0.2)
    for i, p in enumerate(procs):
      if p.returncode not in (None, 0) and i not in [f for f, _ in failed]:
        failed.append((i, f"worker {i} (pid {p.pid}, {workers[i]}) failed: exit code {p.returncode}"))
    if failed:
      for i, msg in failed:
        logs[i].seek(0)
        tail = logs[i].read().decode("utf-8", "replace").strip().splitlines()[-3:]
        sys.stderr.write(f"{msg}; last lines of its log:\n" + "".join(f"  {line}\n" for line in tail))
      first = min(failed, key=lambda f: f[0] if procs[f[0]].returncode not in (1,) else 10**6)
      sys.stderr.write(f"distributed training failed: {first[1]}\n")
    for log in logs:
      log.close()
  return 1 if failed else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  tf.get_logger().setLevel("ERROR")  # TF's deprecation warnings of the v1 API
  try:
    module = graph_names.load(_GRAPH.value)
  except ValueError as exc:
    raise app.UsageError(str(exc)) from None
  from returnn_rc import engine  # pylint: disable=import-outside-toplevel
  from returnn_rc.export import check_export_dir, export_saved_model  # pylint: disable=import-outside-toplevel

  name = engine.graph_name_of(module)
  train_dir = _TRAIN_DIR.value or os.path.join("train_dir", name)
  config = engine.EngineConfig(
    train_dir=train_dir,
    num_epochs=_NUM_EPOCHS.value,
    batch_size=_BATCH_SIZE.value,
    learning_rate=_LEARNING_RATE.value,
    lr_control_loss=_LR_CONTROL_LOSS.value,
    lr_decay=_LR_DECAY.value,
    seed=_SEED.value,
    xla=_XLA.value,
    pad_to_bucket_boundary=_PAD_TO_BUCKET_BOUNDARY.value,
    fresh=_FRESH.value,
    keep_checkpoints=_KEEP_CHECKPOINTS.value,
    log_every_secs=_LOG_EVERY_SECS.value,
    max_seqs=_MAX_SEQS.value,
    **train_options.engine_config_kwargs(),
  )

  def config_checks():
    try:  # every check before anything is written (and before any worker starts)
      config.validate()
      if _NUM_WORKERS.value > 1:
        from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

        distributed.check_num_workers(_NUM_WORKERS.value, config.batch_size)
    except (TypeError, ValueError) as exc:
      raise app.UsageError(str(exc)) from None

  if _NUM_WORKERS.value > 1:
    if os.environ.get("TF_CONFIG"):
      raise app.UsageError("--num_workers > 1 starts local workers with their own TF_CONFIG; unset TF_CONFIG")
    sys.exit(_launch(sys.argv, _NUM_WORKERS.value, config_checks))
  distribution = None
  if os.environ.get("TF_CONFIG"):
    from returnn_rc.engine import distributed  # pylint: disable=import-outside-toplevel

    try:
      cluster = distributed.parse_tf_config()
      distributed.check_num_workers(cluster.num_workers, config.batch_size)
      distribution = distributed.multi_worker(
        cluster, timeout_secs=_WORKER_TIMEOUT.value, startup_timeout_secs=_WORKER_STARTUP_TIMEOUT.value
      )
    except ValueError as exc:
      raise app.UsageError(str(exc)) from None
  is_chief = distribution is None or distribution.is_chief
  try:  # every check before anything is written
    config.validate()
    if _EXPORT_DIR.value:
      export_dir = check_export_dir(_EXPORT_DIR.value, _OVERWRITE_EXPORT.value)
      if os.path.realpath(export_dir) == os.path.realpath(train_dir):
        raise ValueError(f"--export_dir {_EXPORT_DIR.value!r} is --train_dir; use another directory")
  except (TypeError, ValueError) as exc:
    raise app.UsageError(str(exc)) from None
  start = time.time()
  make_hooks = train_options.hooks(train_dir)
  fault = _fault_hook(_FAULT_FOR_TESTS.value, 0 if distribution is None else distribution.worker_index)
  hooks = make_hooks if fault is None else (lambda tg: list(make_hooks(tg)) + [fault])
  with tool_errors.input_errors(), engine.Engine(module, config, hooks=hooks, distribution=distribution) as eng:
    logging.info(
      "graph %s: %d train / %d dev sequences; train_dir %s; losses %s (errors %s); lr control on %r",
      name,
      eng.num_seqs["train"],
      eng.num_seqs["dev"],
      os.path.abspath(train_dir),
      eng.loss_names,
      eng.error_names,
      eng.lr_control.loss_name,
    )
    try:
      eng.train()
    except engine.WorkerLostError as exc:
      sys.exit(f"error: {exc}")
    checkpoint = eng.latest_checkpoint()
    if not is_chief:
      print(f"worker {distribution.worker_index}: done, {eng.completed_epoch} epochs")
      return
    skipped = {split: n for split, n in eng.num_skipped_records.items() if n}
    if skipped:
      print(f"skipped corrupt records: {skipped}")
    if eng.best_checkpoint():
      print(f"best checkpoint by {eng.best_checkpoint_loss}: {eng.best_checkpoint()}")
    print(f"\n{name}: per-epoch figures (Σ summed / Σ inv_norm per loss)\n{eng.table()}")
    print(
      f"wall time {time.time() - start:.1f}s; checkpoint {checkpoint}; TensorBoard: "
      f"tensorboard --logdir {os.path.abspath(train_dir)}"
    )
  if _EXPORT_DIR.value and is_chief:
    export_saved_model(
      module, checkpoint_path=checkpoint, export_dir=_EXPORT_DIR.value, overwrite=_OVERWRITE_EXPORT.value
    )
    print(f"exported SavedModel to {_EXPORT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
