"""Train / evaluate / forward a graph module in one ``tf.compat.v1`` graph and session.

One graph per model holds everything (built once, then ``graph.finalize()``-d):

- the input: one reinitializable ``tf.data`` iterator over length-bucketed padded batches
  (:mod:`returnn_rc.engine.data`) of in-memory sequences or of record files
  (``EngineConfig.train_data`` / ``dev_data``), initialised per epoch for the train split
  (order = f(seed, epoch)) or for the dev split; the model's extern data wraps ``iterator.get_next()``;
- on it, the training graph of :func:`returnn_rc.engine.train_graph.build_train_graph` (the builder
  the conformance suites and benchmarks use too): graph state, model, losses, optimizer, learning
  rate, forward outputs in the same graph, ``Saver``.

Per step one ``Session.run`` fetches the train op and ``rc.report_fetches`` (summed, inv norm per
loss), plus what ``SessionRunHook``s request (:mod:`returnn_rc.engine.hooks`); per-epoch figures
are ``Σ summed / Σ inv_norm`` (``rc.EpochAccumulator``). After each epoch's checkpoint the best
N checkpoints by a dev figure are kept apart (:mod:`returnn_rc.engine.best_checkpoints`).

Determinism: variable initialisers are seeded through the graph seed; the data order of an epoch
depends on ``(seed, epoch)``; dropout masks are stateless functions of ``(seed, op, step)``
(:func:`returnn_rc.nn.set_stateless_dropout_seed`). So a run resumed from the checkpoint of epoch
``k`` continues exactly as an uninterrupted one.

Several workers or devices (``Engine(..., distribution=...)``, :mod:`returnn_rc.engine.distributed`):
every worker builds the same global batches and trains on its part of each (every worker runs every
step; the figures are global sums); only the chief (worker 0) writes to ``train_dir`` (checkpoints,
``train_state.json``, TensorBoard events, best checkpoints, the ``fresh`` deletion); every worker
restores the same checkpoint from it (a shared directory). Every ``Session.run`` has a deadline: a
worker that died or hangs stops the others with :class:`returnn_rc.engine.distributed.WorkerLostError`
before the epoch's checkpoint is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
from absl import logging

from returnn_rc import checkpoint_compat
from returnn_rc import graph_module as _graph_module
from returnn_rc.engine import checkpoints
from returnn_rc.engine import data as _data
from returnn_rc.engine import distributed as _distributed
from returnn_rc.engine.best_checkpoints import BestCheckpoints, delete_best
from returnn_rc.engine.history import EpochResult, SummaryWriter, format_table
from returnn_rc.engine.hooks import HookRunner, SessionRunHook
from returnn_rc.engine.lr_control import check_loss_name
from returnn_rc.engine.train_graph import GlobalBatch, TrainGraphConfig, build_train_graph
from returnn_rc.reporting import EpochAccumulator


class NonFiniteLossError(RuntimeError):
  """A loss of a batch was NaN or Inf; training stopped (no checkpoint of that epoch was written)."""


@dataclasses.dataclass
class EngineConfig:
  """Options of :class:`Engine` (checked by :meth:`validate` before the engine does anything).

  Attributes:
    train_dir: checkpoints, ``train_state.json`` and TensorBoard events (not ``/``, a filesystem
      root or the home directory).
    num_epochs: train up to (and including) this epoch, >= 1.
    batch_size: maximum number of sequences per batch, >= 1.
    learning_rate: initial learning rate (Adam), finite and >= 0.
    lr_control_loss: name of the loss whose epoch figure (dev, else train) controls the rate;
      None: the first loss used by the optimizer.
    lr_decay: Newbob factor in (0, 1] when the figure did not improve by ``lr_decay_threshold``
      (relative, finite, >= 0); 1 disables the control.
    seed: graph seed, data order, dropout masks; an int in [0, 2**31).
    xla: compile the train step (model, losses, gradients) with XLA (``jit_scope``; dropout masks
      are drawn outside the clusters, so the numbers match a run without XLA).
    pad_to_bucket_boundary: pad batches to their bucket's bound (few shapes for XLA to compile).
    fresh: delete the engine's own files in ``train_dir`` first (the exact names of
      :mod:`returnn_rc.engine.checkpoints`; nothing else), instead of resuming.
    keep_checkpoints: how many epoch checkpoints to keep (>= 1; ``Saver(max_to_keep=...)``).
    log_every_secs: progress logging interval within an epoch, seconds > 0.
    max_seqs: use at most this many train sequences (dev: a tenth, at least 1), >= 1; None: all.
    save_checkpoints: write a checkpoint after each epoch.
    train_data / dev_data: a glob (or list of globs) of record files (:mod:`returnn_rc.engine.records`,
      or the graph module's own format through its ``dataset_from_files``) to stream instead of the
      in-memory lists; None: the lists passed to :class:`Engine`, else ``default_data``.
    skip_corrupt_records: skip corrupt records of the files (counted and logged) instead of refusing them.
    shuffle_buffer: sequences in the shuffle buffer of the file source.
    optimizer / weight_decay / momentum / grad_clip_global_norm / accum_grad_multiple_step /
    lr_warmup_steps / lr_schedule / lr_schedule_steps / lr_schedule_rate: the update and the
      learning-rate schedule, see :class:`returnn_rc.engine.train_graph.TrainGraphConfig`.
    keep_best_checkpoints: keep the best N checkpoints by ``best_checkpoint_loss`` in
      ``<train_dir>/best`` (0: off), besides the last ``keep_checkpoints``.
    best_checkpoint_loss: the loss whose epoch figure (dev, else train; lower is better) ranks
      checkpoints; None: the learning-rate control's loss.
  """

  train_dir: str
  num_epochs: int = 3
  batch_size: int = 32
  learning_rate: float = 1e-3
  lr_control_loss: Optional[str] = None
  lr_decay: float = 0.5
  lr_decay_threshold: float = 0.01
  seed: int = 42
  xla: bool = False
  pad_to_bucket_boundary: bool = False
  fresh: bool = False
  keep_checkpoints: int = 2
  log_every_secs: float = 20.0
  max_seqs: Optional[int] = None
  save_checkpoints: bool = True
  train_data: Optional[Union[str, Sequence[str]]] = None
  dev_data: Optional[Union[str, Sequence[str]]] = None
  skip_corrupt_records: bool = False
  shuffle_buffer: int = _data.DEFAULT_SHUFFLE_BUFFER
  optimizer: str = "adam"
  weight_decay: float = 0.0
  momentum: float = 0.9
  grad_clip_global_norm: Optional[float] = None
  accum_grad_multiple_step: int = 1
  lr_warmup_steps: int = 0
  lr_schedule: str = "constant"
  lr_schedule_steps: int = 0
  lr_schedule_rate: float = 1.0
  keep_best_checkpoints: int = 0
  best_checkpoint_loss: Optional[str] = None

  def validate(self) -> None:
    """``TypeError`` / ``ValueError`` naming the first bad option and what is expected; writes nothing."""
    checkpoints.check_train_dir(self.train_dir)
    _check_int("num_epochs", self.num_epochs, minimum=1)
    _check_int("batch_size", self.batch_size, minimum=1)
    _check_int("keep_checkpoints", self.keep_checkpoints, minimum=1)
    _check_int("seed", self.seed, minimum=0, maximum=2**31 - 1)
    if self.max_seqs is not None:
      _check_int("max_seqs", self.max_seqs, minimum=1)
    _check_number("learning_rate", self.learning_rate, "a finite float >= 0", lambda v: v >= 0)
    _check_number("lr_decay", self.lr_decay, "a float in (0, 1] (1 disables the decay)", lambda v: 0 < v <= 1)
    _check_number("lr_decay_threshold", self.lr_decay_threshold, "a finite float >= 0", lambda v: v >= 0)
    _check_number("log_every_secs", self.log_every_secs, "a finite number of seconds > 0", lambda v: v > 0)
    if self.lr_control_loss is not None and (not isinstance(self.lr_control_loss, str) or not self.lr_control_loss):
      raise ValueError(f"lr_control_loss must be None or a loss name, got {self.lr_control_loss!r}")
    for name in ("xla", "pad_to_bucket_boundary", "fresh", "save_checkpoints"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
    if not isinstance(self.skip_corrupt_records, (bool, np.bool_)):
      raise TypeError(f"skip_corrupt_records must be a bool, got {self.skip_corrupt_records!r}")
    _check_int("keep_best_checkpoints", self.keep_best_checkpoints, minimum=0)
    _check_int("shuffle_buffer", self.shuffle_buffer, minimum=1)
    if self.best_checkpoint_loss is not None and (
      not isinstance(self.best_checkpoint_loss, str) or not self.best_checkpoint_loss
    ):
      raise ValueError(f"best_checkpoint_loss must be None or a loss name, got {self.best_checkpoint_loss!r}")
    self.train_graph_config()  # checks the update and schedule options

  def train_graph_config(self) -> TrainGraphConfig:
    """The options of the training graph (:func:`returnn_rc.engine.train_graph.build_train_graph`)."""
    return TrainGraphConfig(
      seed=self.seed,
      learning_rate=self.learning_rate,
      lr_control_loss=self.lr_control_loss,
      lr_decay=self.lr_decay,
      lr_decay_threshold=self.lr_decay_threshold,
      xla=self.xla,
      max_to_keep=self.keep_checkpoints,
      optimizer=self.optimizer,
      weight_decay=self.weight_decay,
      momentum=self.momentum,
      grad_clip_global_norm=self.grad_clip_global_norm,
      accum_grad_multiple_step=self.accum_grad_multiple_step,
      lr_warmup_steps=self.lr_warmup_steps,
      lr_schedule=self.lr_schedule,
      lr_schedule_steps=self.lr_schedule_steps,
      lr_schedule_rate=self.lr_schedule_rate,
    )


def _check_int(name: str, value: Any, *, minimum: int, maximum: Optional[int] = None) -> None:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {value!r}")
  if value < minimum or (maximum is not None and value > maximum):
    want = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise ValueError(f"{name} must be an int {want}, got {value}")


def _check_number(name: str, value: Any, expected: str, ok) -> None:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be {expected}, got {value!r}")
  if not math.isfinite(value) or not ok(value):
    raise ValueError(f"{name} must be {expected}, got {value}")


class Engine:
  """Trains, evaluates and forwards one graph module. Use as a context manager (closes the session).

  Every option and the data are checked before anything is written to ``train_dir``; a checkpoint
  there is resumed (the newest one that restores, see :mod:`returnn_rc.engine.checkpoints`).

  Args:
    graph_module: a module (or object) with the functions of ``graphs/__init__.py``.
    config: :class:`EngineConfig`.
    train_data / dev_data: lists of sequences (``{name: np.ndarray}``); default:
      ``config.train_data`` / ``dev_data`` (files), else ``graph_module.default_data("train" / "dev")`` (a
      module without ``default_data`` needs ``train_data``; its dev set is then empty). ``dev_data=[]`` means
      no dev set.
    hooks: ``tf.compat.v1.train.SessionRunHook``s run at every train step
      (:mod:`returnn_rc.engine.hooks`), or a function ``TrainGraph -> list of hooks`` (called after the
      graph is built, so hooks can refer to its tensors, e.g. ``tg.learning_rate``).
    distribution: train on several workers / devices (:mod:`returnn_rc.engine.distributed`); None: one.
  Raises:
    TypeError / ValueError: a bad option, bad data, a bad graph module, another model's checkpoint.
    RuntimeError: checkpoints in ``train_dir`` of which none restores.
  """

  def __init__(
    self,
    graph_module: Any,
    config: EngineConfig,
    *,
    train_data: Optional[Sequence] = None,
    dev_data: Optional[Sequence] = None,
    hooks: Union[None, Sequence[SessionRunHook], Callable[[Any], Sequence[SessionRunHook]]] = None,
    distribution: Optional[_distributed.Distribution] = None,
  ):
    if not isinstance(config, EngineConfig):
      raise TypeError(f"config must be an EngineConfig, got {type(config).__name__}")
    config.validate()
    if distribution is not None:
      if not isinstance(distribution, _distributed.Distribution):
        raise TypeError(
          f"distribution must be a returnn_rc.engine.distributed.Distribution, got {type(distribution).__name__}"
        )
      _distributed.check_num_workers(distribution.num_replicas, config.batch_size)
    self.distribution = distribution
    #: Whether this process writes to train_dir (the chief, or a single process).
    self.is_chief = distribution is None or distribution.is_chief
    self._collective_ran = False
    _graph_module.check_graph_module(graph_module)
    self.module = graph_module
    self.config = config
    self.graph_name = _graph_module.graph_name_of(graph_module)
    self._hooks_arg = hooks
    self._hooks = HookRunner(None if callable(hooks) and not isinstance(hooks, SessionRunHook) else hooks)
    self._files: Dict[str, _data.FileData] = {}
    for split, given, patterns in (("train", train_data, config.train_data), ("dev", dev_data, config.dev_data)):
      if patterns is not None:
        if given is not None:
          raise ValueError(
            f"{split} data given twice: as a list of sequences and as files "
            f"EngineConfig.{split}_data={patterns!r}; give one"
          )
        template = _graph_module.extern_data_template(graph_module)
        self._files[split] = _data.scan_files(
          patterns,
          template,
          what=f"graph {self.graph_name!r} {split} data",
          graph_name=self.graph_name,
          skip_corrupt=config.skip_corrupt_records,
          reader=_data.dataset_hook(graph_module),
        )
    if train_data is None and "train" not in self._files:
      train_data = _graph_module.default_data(graph_module, "train")
    self._train_data = _as_list(train_data, "train_data") if train_data is not None else []
    if dev_data is None and "dev" not in self._files:
      dev_data = _graph_module.default_data(graph_module, "dev") if hasattr(graph_module, "default_data") else []
    self._dev_data = _as_list(dev_data, "dev_data") if dev_data is not None else []
    if config.max_seqs is not None:
      self._train_data = self._train_data[: config.max_seqs]
      self._dev_data = self._dev_data[: max(1, config.max_seqs // 10)]
    self.history: List[EpochResult] = []
    self._checkpoint_path: Optional[str] = None
    self._iterator_user = 0  # which loop / generator last initialised the input iterator
    self._closed = False
    self._writer = None
    self._rollback = False
    self._best: Optional[BestCheckpoints] = None
    self._build()
    if distribution is None:
      self._session = tf.compat.v1.Session(graph=self.graph)
    else:
      self._session = tf.compat.v1.Session(distribution.target, graph=self.graph, config=distribution.session_config)
    try:
      self._ckpt = checkpoints.CheckpointDir(config.train_dir, graph_name=self.graph_name, var_specs=self._var_specs)
      if config.fresh and self.is_chief:
        deleted = self._ckpt.delete_own_files()
        if deleted:
          logging.info("fresh start: deleted the engine's files in %s: %s", self._ckpt.train_dir, deleted)
        delete_best(config.train_dir)
      if config.keep_best_checkpoints and config.save_checkpoints and self.is_chief:
        self._best = BestCheckpoints(
          config.train_dir, keep=config.keep_best_checkpoints, loss_name=self.best_checkpoint_loss
        )
      restored = self._restore_or_init(fresh=config.fresh)
      if self.is_chief:
        self._ckpt.prepare()
        if restored is not None and restored.warnings:
          self._ckpt.repair_state_file(restored)
        self._ckpt.recover_rotation(self._saver)
      self._hooks.after_create_session(self._session)
      with self.graph.as_default():  # the v1 FileWriter refuses eager mode; it adds no ops
        self._writer = (
          SummaryWriter(self._ckpt.train_dir, filename_suffix=checkpoints.EVENTS_SUFFIX)
          if self.is_chief
          else _NoWriter()
        )
    except BaseException:
      self._session.close()
      self._closed = True
      raise

  # --- graph ------------------------------------------------------------------------------------

  def _build(self) -> None:
    cfg = self.config
    what = f"graph {self.graph_name!r}"
    self.graph = tf.Graph()
    with self.graph.as_default():
      template = _graph_module.extern_data_template(self.module)
      if "train" not in self._files:
        _data.check_data(template, self._train_data, what=f"{what} train data")
      if self._dev_data:
        _data.check_data(template, self._dev_data, what=f"{what} dev data")
      with tf.name_scope("data"):
        self._order_seed = tf.compat.v1.placeholder(tf.int64, (), name="epoch_order_seed")
        datasets = {}
        for split, seqs in (("train", self._train_data), ("dev", self._dev_data)):
          opts = dict(
            batch_size=cfg.batch_size,
            order_seed=self._order_seed,
            shuffle=split == "train",
            seed=cfg.seed,
            pad_to_bucket_boundary=cfg.pad_to_bucket_boundary,
          )
          if split in self._files:
            max_seqs = cfg.max_seqs if split == "train" or cfg.max_seqs is None else max(1, cfg.max_seqs // 10)
            datasets[split] = _data.make_file_dataset(
              template, self._files[split], shuffle_buffer=cfg.shuffle_buffer, max_seqs=max_seqs, **opts
            )
          elif seqs:
            datasets[split] = _data.make_dataset(template, seqs, **opts)
        train_ds = datasets["train"]
        iterator = tf.compat.v1.data.Iterator.from_structure(
          tf.compat.v1.data.get_output_types(train_ds), tf.compat.v1.data.get_output_shapes(train_ds)
        )
        self._iter_init = {split: iterator.make_initializer(ds) for split, ds in datasets.items()}
        batch = iterator.get_next()
      if self.distribution is None:
        extern_data = _data.extern_data_from_batch(template, batch)
        self.train_graph = tg = build_train_graph(self.module, extern_data, cfg.train_graph_config())
      else:
        global_batch = GlobalBatch(template=lambda: _graph_module.extern_data_template(self.module), batch=batch)
        self.train_graph = tg = build_train_graph(
          self.module, global_batch, cfg.train_graph_config(), strategy=self.distribution.strategy
        )
      self.graph_state = tg.graph_state
      self.loss_names, self.error_names = tg.loss_names, tg.error_names
      self.lr_control = tg.lr_control
      self._fetches = tg.report
      self._train_op = tg.train_op
      self._output_fetches = tg.output_fetches
      self._var_specs = checkpoint_compat.variable_specs(tg.variables)
      self._saver = tg.saver
      self._init_op = tg.init_op
      self.best_checkpoint_loss = check_loss_name(cfg.best_checkpoint_loss or tg.lr_control.loss_name, tg.loss_names)
      if callable(self._hooks_arg) and not isinstance(self._hooks_arg, SessionRunHook):
        self._hooks = HookRunner(self._hooks_arg(tg))
      self._hooks.begin()  # hooks may add ops
    self.graph.finalize()

  # --- checkpoints ------------------------------------------------------------------------------

  def _restore_or_init(self, fresh: bool = False) -> Optional[checkpoints.Restored]:
    # A non-chief worker of a fresh run does not read train_dir (the chief is deleting the engine's files).
    restored = None if fresh and not self.is_chief else self._ckpt.restore(self._session, self._saver)
    #: What was broken in train_dir when this engine resumed (also logged as warnings); empty if nothing.
    self.restore_warnings: List[str] = [] if restored is None else restored.warnings
    if restored is None:
      self._session.run(self._init_op)
      self.completed_epoch = 0
      self.history = []
      return None
    self._checkpoint_path = restored.path
    self._session.run(self.train_graph.local_init_op)  # gradient accumulators: not checkpointed
    self.completed_epoch = self.graph_state.get_epoch(self._session)
    history = restored.state.get("history", [])
    try:
      self.history = [
        EpochResult.from_json(h)
        for h in history
        if isinstance(h, Mapping) and isinstance(h.get("epoch"), int) and h["epoch"] <= self.completed_epoch
      ]
    except (TypeError, ValueError) as exc:  # a hand-edited train_state.json: the history is only for the table
      logging.warning(
        "train_dir %s: the history in %s is unreadable (%s); it starts anew",
        self._ckpt.train_dir,
        checkpoints.STATE_FILE,
        exc,
      )
      self.history = []
    logging.info(
      "resumed %s from %s: epoch %d done, step %d, learning rate %.4g",
      self.graph_name,
      restored.path,
      self.completed_epoch,
      self.step,
      self.lr_control.get(self._session),
    )
    return restored

  @property
  def num_seqs(self) -> Dict[str, int]:
    """Number of sequences per split (of files: as scanned, at most ``max_seqs`` / a tenth of it)."""
    out = {"train": len(self._train_data), "dev": len(self._dev_data)}
    for split, files in self._files.items():
      out[split] = files.num_seqs
      if self.config.max_seqs is not None:
        out[split] = min(out[split], self.config.max_seqs if split == "train" else max(1, self.config.max_seqs // 10))
    return out

  @property
  def num_skipped_records(self) -> Dict[str, int]:
    """Corrupt records skipped per split of files (``skip_corrupt_records``)."""
    return {split: files.num_skipped for split, files in self._files.items()}

  def best_checkpoint(self) -> Optional[str]:
    """Path prefix of the best kept checkpoint (``keep_best_checkpoints``), or None."""
    return self._best.best() if self._best is not None else None

  @property
  def session(self) -> tf.compat.v1.Session:
    return self._session

  @property
  def step(self) -> int:
    return self.graph_state.get_step(self._session)

  @property
  def learning_rate(self) -> float:
    return self.lr_control.get(self._session)

  def latest_checkpoint(self) -> Optional[str]:
    """The checkpoint this engine restored or last saved (a prefix, e.g. ``<train_dir>/model.003``); None if
    it has neither (a fresh start before the first save)."""
    return self._checkpoint_path

  # --- loops ------------------------------------------------------------------------------------

  def train(self, num_epochs: Optional[int] = None) -> List[EpochResult]:
    """Trains the epochs after the last completed one up to ``num_epochs`` (default: the config's);
    evaluates on dev after each, updates the learning rate, saves a checkpoint. Returns the history."""
    if num_epochs is not None:
      _check_int("num_epochs", num_epochs, minimum=1)
    self._check_open()
    last = self.config.num_epochs if num_epochs is None else num_epochs
    if self._rollback:  # a hook stopped the last call mid-epoch: back to the last complete epoch
      restored = self._restore_or_init()
      if restored is None:  # no checkpoint yet: start over, as an uninterrupted run would
        self.history = []
      self._rollback = False
    if self.completed_epoch >= last:
      logging.info(
        "%s: already trained %d epochs (asked for %d); nothing to do", self.graph_name, self.completed_epoch, last
      )
    for epoch in range(self.completed_epoch + 1, last + 1):
      result = self._train_epoch(epoch)
      if result is None:
        logging.info(
          "epoch %d: a hook requested a stop at step %d; the epoch is incomplete and not checkpointed "
          "(the latest checkpoint is of epoch %d)",
          epoch,
          self.step,
          self.completed_epoch,
        )
        self._rollback = True
        break
      if "dev" in self._iter_init:
        result.dev = self.evaluate("dev")
        self._writer.scalars("epoch_dev", result.dev, result.step)
      figures = result.dev or result.train
      new_lr = self.lr_control.update(self._session, figures[self.lr_control.loss_name])
      if new_lr is not None:
        logging.info("epoch %d: %s did not improve; learning rate -> %.4g", epoch, self.lr_control.loss_name, new_lr)
      self._writer.scalars("epoch_train", result.train, result.step)
      self._writer.scalars("epoch", {"learning_rate": result.learning_rate}, result.step)
      self._writer.flush()
      self.history.append(result)
      self.completed_epoch = epoch
      if self.config.save_checkpoints and self.is_chief:
        self._checkpoint_path = self._ckpt.save(
          self._session, self._saver, epoch=epoch, history=[h.to_json() for h in self.history]
        )
        if self._best is not None:
          self._best.update(self._checkpoint_path, epoch=epoch, figure=figures[self.best_checkpoint_loss])
      logging.info(
        "epoch %d done: %d steps in %.1fs (%.1f steps/s); train %s; dev %s",
        epoch,
        result.num_batches,
        result.seconds,
        result.steps_per_sec,
        _fmt_figures(result.train),
        _fmt_figures(result.dev),
      )
    self._hooks.end(self._session)
    return self.history

  def _train_epoch(self, epoch: int) -> Optional[EpochResult]:
    """Trains one epoch; None if a hook requested a stop."""
    sess, gs = self._session, self.graph_state
    gs.set_epoch(sess, epoch)
    self._init_iterator("train", order_seed=epoch)
    step = gs.get_step(sess)
    lr = self.lr_control.get(sess)
    acc = EpochAccumulator()
    feed = gs.feed_dict(train=True)
    batch_figures = []
    start = time.time()
    while True:
      try:
        with self._deadline(f"epoch {epoch}, step {step}"):
          (_, fetched), stop = self._hooks.run(sess, [self._train_op, self._fetches], feed, options=self._run_options())
      except tf.errors.OutOfRangeError:
        break
      self._check_finite(fetched, epoch=epoch, step=step, batch=acc.num_batches)
      figures = acc.add(fetched)
      batch_figures.append(figures)
      self._writer.scalars("train", figures, step)
      step += 1
      if stop:
        return None
      logging.log_every_n_seconds(
        logging.INFO,
        "epoch %d: step %d, %d batches, %.1f steps/s; so far %s",
        self.config.log_every_secs,
        epoch,
        step,
        acc.num_batches,
        acc.num_batches / max(time.time() - start, 1e-9),
        _fmt_figures(acc.figures()),
      )
    if not acc.num_batches:
      raise RuntimeError(f"epoch {epoch}: the train data yielded no batch")
    sess.run(self.train_graph.flush_op)  # gradients accumulated since the last update (accumulation)
    seconds = time.time() - start
    return EpochResult(
      epoch=epoch,
      step=step,
      learning_rate=lr,
      train=acc.figures(),
      dev={},
      num_batches=acc.num_batches,
      steps_per_sec=acc.num_batches / max(seconds, 1e-9),
      seconds=seconds,
      batch_figures=batch_figures,
    )

  def _check_finite(self, fetched, *, epoch: int, step: int, batch: int) -> None:
    for name, (summed, inv_norm) in fetched.items():
      if not (math.isfinite(float(summed)) and math.isfinite(float(inv_norm))):
        raise NonFiniteLossError(
          f"loss {name!r} is not finite (summed={float(summed)}, inv_norm={float(inv_norm)}) in epoch {epoch}, "
          f"step {step} (batch {batch} of the epoch); training stopped, no checkpoint written for epoch "
          f"{epoch} (latest checkpoint: {self._checkpoint_path})"
        )

  def evaluate(self, split: str = "dev") -> Dict[str, float]:
    """Figures (loss name → Σ summed / Σ inv_norm) over ``split`` with the train flag off; no train op."""
    acc = EpochAccumulator()
    for fetched in self._batches(split, self._fetches):
      acc.add(fetched)
    return acc.figures()

  def evaluate_batches(self, split: str = "dev") -> List[Dict[str, tuple]]:
    """Per batch ``{name: (summed, inv_norm)}`` over ``split`` with the train flag off."""
    return list(self._batches(split, self._fetches))

  def forward(self, split: str = "dev") -> Iterator[Dict[str, np.ndarray]]:
    """The marked outputs ``{name: [B,...], "<name>:size<axis>": [B]}`` per batch of ``split``, flag off.

    A generator: each ``next()`` runs one batch (one ``Session.run``); nothing runs before the first.
    The engine has ONE input iterator, so a generator is valid until the engine's iterator is used
    again: a ``train`` / ``evaluate`` / ``forward`` call that starts while this generator is not
    exhausted makes its next ``next()`` raise ``RuntimeError`` (never batches of another split).
    Not thread-safe (as the session loop as a whole).

    Raises:
      ValueError: ``forward_step`` marked no output, or an unknown or empty ``split`` (at the call).
    """
    if not self._output_fetches:
      raise ValueError(f"graph {self.graph_name!r}: forward_step marked no output")
    self._check_split(split)
    return self._batches(split, self._output_fetches)

  def _check_split(self, split: str) -> None:
    if split not in self._iter_init:
      raise ValueError(f"unknown or empty split {split!r}; available: {sorted(self._iter_init)}")

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError(f"the engine of graph {self.graph_name!r} is closed")

  def _init_iterator(self, split: str, *, order_seed: int) -> int:
    """(Re-)initialises the one input iterator for ``split``; returns the new user's token."""
    self._check_open()
    self._session.run(self._iter_init[split], feed_dict={self._order_seed: order_seed})
    self._iterator_user += 1
    return self._iterator_user

  def _batches(self, split: str, fetches) -> Iterator[Any]:
    """Runs ``fetches`` per batch of ``split`` with the flag off (a generator, see :meth:`forward`)."""
    self._check_split(split)
    token = self._init_iterator(split, order_seed=max(self.completed_epoch, 1))
    feed = self.graph_state.feed_dict(train=False)
    while True:
      self._check_open()
      if self._iterator_user != token:
        raise RuntimeError(
          f"the engine's input iterator was re-initialised (by train, evaluate or forward) while this iteration "
          f"over split {split!r} was not finished; start it again (e.g. call forward({split!r}) anew)"
        )
      try:
        with self._deadline(f"split {split!r}"):
          fetched = self._session.run(fetches, feed_dict=feed, options=self._run_options())
      except tf.errors.OutOfRangeError:
        return
      yield fetched

  # --- several workers ----------------------------------------------------------------------------

  def _run_options(self) -> Optional[tf.compat.v1.RunOptions]:
    """The deadline of a ``Session.run`` with collectives (None without a distribution)."""
    if self.distribution is None:
      return None
    first, self._collective_ran = not self._collective_ran, True
    return self.distribution.run_options(first=first)

  @contextlib.contextmanager
  def _deadline(self, where: str):
    """Turns a missed deadline / a cancelled collective into a ``WorkerLostError`` naming this worker."""
    if self.distribution is None:
      yield
      return
    try:
      yield
    except (
      tf.errors.DeadlineExceededError,
      tf.errors.CancelledError,
      tf.errors.AbortedError,
      tf.errors.UnavailableError,
    ) as exc:
      raise self.distribution.lost_error(
        exc, where=f"{where} (no checkpoint of this epoch written; the latest is {self._checkpoint_path})"
      ) from exc

  # --- misc -------------------------------------------------------------------------------------

  def table(self) -> str:
    """The per-epoch table of :attr:`history`."""
    return format_table(self.history, names=self.loss_names, errors=self.error_names)

  def close(self) -> None:
    """Closes the TensorBoard writer and the session (idempotent)."""
    if self._writer is not None:
      self._writer.close()
    if not self._closed:
      self._session.close()
    self._closed = True

  def __enter__(self) -> "Engine":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class _NoWriter:
  """The TensorBoard writer of a non-chief worker: writes nothing."""

  def scalars(self, *args, **kwargs) -> None:
    del args, kwargs

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _as_list(data: Any, what: str) -> list:
  if isinstance(data, (str, bytes, Mapping)) or not hasattr(data, "__iter__"):
    raise TypeError(f"{what} must be a list of dicts (one per sequence), got {type(data).__name__}")
  return list(data)


def _fmt_figures(figures: Dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4f}" for k, v in figures.items()) or "-"
