"""The absl flags of tools/train.py for data from files and the training options, as ``EngineConfig`` fields.

Kept apart from ``tools/train.py``'s own flags so that other tools can share them; ``train.py`` adopts
them as key flags (they show in its ``--help``).
"""

from absl import flags

_TRAIN_DATA = flags.DEFINE_string(
  "train_data",
  None,
  "Glob of record files to train on (tools/make_dataset.py), streamed through tf.data; "
  "default: the graph's default_data('train') in memory.",
)
_DEV_DATA = flags.DEFINE_string(
  "dev_data", None, "Glob of record files to evaluate after each epoch; default: the graph's default_data('dev')."
)
_SKIP_CORRUPT = flags.DEFINE_bool(
  "skip_corrupt_records",
  False,
  "Skip corrupt records in --train_data/--dev_data (counted and logged) instead of refusing the files before training.",
)
_SHUFFLE_BUFFER = flags.DEFINE_integer(
  "shuffle_buffer", 10000, "Sequences in the shuffle buffer of --train_data (the memory bound of the file source)."
)
_OPTIMIZER = flags.DEFINE_string(
  "optimizer",
  "adam",
  "adam | adamw (Adam with decoupled weight decay, see --weight_decay) | momentum (SGD with momentum, see --momentum).",
)
_WEIGHT_DECAY = flags.DEFINE_float(
  "weight_decay", 0.0, "Decoupled weight decay of --optimizer=adamw: var -= lr * weight_decay * var per update."
)
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "Momentum of --optimizer=momentum, in [0, 1).")
_CLIP = flags.DEFINE_float(
  "grad_clip_global_norm", None, "Clip the gradient of each update to this global norm (> 0); default: no clipping."
)
_ACCUM = flags.DEFINE_integer(
  "accum_grad_multiple_step",
  1,
  "k: update once per k batches with the gradient of the k batches taken as one "
  "batch (normalised losses divided by their inverse norm summed over the k batches).",
)
_WARMUP = flags.DEFINE_integer(
  "lr_warmup_steps", 0, "Linear learning-rate warm-up over this many steps (batches); 0: none."
)
_SCHEDULE = flags.DEFINE_string(
  "lr_schedule",
  "constant",
  "Learning-rate schedule of the global step, multiplying the Newbob rate: constant | "
  "exponential (rate^(step/steps)) | step (rate^floor(step/steps)) | inverse_sqrt (sqrt(steps/max(step+1,steps))).",
)
_SCHEDULE_STEPS = flags.DEFINE_integer(
  "lr_schedule_steps", 0, "Step scale of --lr_schedule (decay steps; the pivot of inverse_sqrt)."
)
_SCHEDULE_RATE = flags.DEFINE_float(
  "lr_schedule_rate", 1.0, "Decay factor per --lr_schedule_steps of the exponential and step schedules."
)
_KEEP_BEST = flags.DEFINE_integer(
  "keep_best_checkpoints",
  0,
  "Keep the best N checkpoints by the dev figure of --best_checkpoint_loss in "
  "<train_dir>/best (hard links), besides the last ones; 0: off.",
)
_BEST_LOSS = flags.DEFINE_string(
  "best_checkpoint_loss",
  None,
  "Loss whose epoch figure (dev, else train; lower is better) ranks checkpoints for "
  "--keep_best_checkpoints; default: the learning-rate control's loss.",
)
_PROFILE_EVERY = flags.DEFINE_integer(
  "profile_every_n_steps",
  0,
  "Run TF's ProfilerHook: a Chrome trace (timeline-<step>.json) of every N-th train "
  "step into <train_dir>/profile; 0: off.",
)


def engine_config_kwargs():
  """The ``EngineConfig`` fields set by these flags."""
  return dict(
    train_data=_TRAIN_DATA.value,
    dev_data=_DEV_DATA.value,
    skip_corrupt_records=_SKIP_CORRUPT.value,
    shuffle_buffer=_SHUFFLE_BUFFER.value,
    optimizer=_OPTIMIZER.value,
    weight_decay=_WEIGHT_DECAY.value,
    momentum=_MOMENTUM.value,
    grad_clip_global_norm=_CLIP.value,
    accum_grad_multiple_step=_ACCUM.value,
    lr_warmup_steps=_WARMUP.value,
    lr_schedule=_SCHEDULE.value,
    lr_schedule_steps=_SCHEDULE_STEPS.value,
    lr_schedule_rate=_SCHEDULE_RATE.value,
    keep_best_checkpoints=_KEEP_BEST.value,
    best_checkpoint_loss=_BEST_LOSS.value,
  )


def hooks(train_dir):
  """The ``SessionRunHook``s these flags ask for (``--profile_every_n_steps``), as the function of the
  train graph that ``Engine(hooks=...)`` calls inside the graph (TF's hooks need graph mode)."""
  if _PROFILE_EVERY.value < 0:
    raise ValueError(f"--profile_every_n_steps must be >= 0, got {_PROFILE_EVERY.value}")
  every = _PROFILE_EVERY.value

  def make(train_graph):
    del train_graph
    if not every:
      return []
    import os  # pylint: disable=import-outside-toplevel

    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return [tf.compat.v1.train.ProfilerHook(save_steps=every, output_dir=os.path.join(train_dir, "profile"))]

  return make
