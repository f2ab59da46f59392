"""``tf.compat.v1.train.SessionRunHook``s in the engine's train loop, with ``MonitoredSession`` semantics.

Hooks (TF's own, e.g. ``LoggingTensorHook``, ``StepCounterHook``, ``ProfilerHook``,
``StopAtStepHook``, or a user's subclass) are called:

- ``begin()``: once, while the engine builds its graph (before ``graph.finalize()``): a hook may add ops;
- ``after_create_session(session, coord)``: after the variables were initialised or restored;
- ``before_run(run_context)`` / ``after_run(run_context, run_values)``: around every train step;
  the fetches, feeds and ``RunOptions`` the hooks request with ``SessionRunArgs`` are merged into
  the step's ONE ``Session.run`` (``run_values.results`` holds each hook's own fetches; with
  options, ``run_values.run_metadata`` the step's metadata);
- ``end(session)``: when :meth:`Engine.train` returns.

``run_context.request_stop()`` ends training after that step: the unfinished epoch is not recorded
and not checkpointed, so a later run resumes from the last complete epoch exactly.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

SessionRunHook = tf.compat.v1.train.SessionRunHook


def check_hooks(hooks: Optional[Sequence[Any]]) -> List[SessionRunHook]:
  """``hooks`` as a list; ``TypeError`` naming the element that is no ``SessionRunHook``."""
  if hooks is None:
    return []
  if isinstance(hooks, SessionRunHook):
    hooks = [hooks]
  out = list(hooks)
  for i, hook in enumerate(out):
    if not isinstance(hook, SessionRunHook):
      raise TypeError(f"hooks[{i}] must be a tf.compat.v1.train.SessionRunHook, got {type(hook).__name__}")
  return out


def _merge_options(options: Sequence[tf.compat.v1.RunOptions]) -> Optional[tf.compat.v1.RunOptions]:
  """One ``RunOptions`` for several hooks (as ``MonitoredSession``): the highest trace level, the
  shortest non-zero timeout, all debug tensor watches, OOM reports if any hook asks."""
  if not options:
    return None
  merged = tf.compat.v1.RunOptions()
  for opt in options:
    merged.trace_level = max(merged.trace_level, opt.trace_level)
    if opt.timeout_in_ms and (not merged.timeout_in_ms or opt.timeout_in_ms < merged.timeout_in_ms):
      merged.timeout_in_ms = opt.timeout_in_ms
    merged.debug_options.debug_tensor_watch_opts.extend(opt.debug_options.debug_tensor_watch_opts)
    merged.report_tensor_allocations_upon_oom |= opt.report_tensor_allocations_upon_oom
  return merged


class HookRunner:
  """Calls ``hooks`` around ``Session.run`` (see the module docstring)."""

  def __init__(self, hooks: Optional[Sequence[SessionRunHook]]):
    self.hooks = check_hooks(hooks)

  def begin(self) -> None:
    for hook in self.hooks:
      hook.begin()

  def after_create_session(self, session: tf.compat.v1.Session) -> None:
    coord = tf.compat.v1.train.Coordinator()
    for hook in self.hooks:
      hook.after_create_session(session, coord)

  def end(self, session: tf.compat.v1.Session) -> None:
    for hook in self.hooks:
      hook.end(session)

  def run(
    self,
    session: tf.compat.v1.Session,
    fetches: Any,
    feed_dict: Dict[Any, Any],
    options: Optional[tf.compat.v1.RunOptions] = None,
  ) -> Tuple[Any, bool]:
    """``(session.run(fetches, feed_dict) results, whether a hook requested a stop)``, with the hooks'
    requests merged into the same ``Session.run`` (and with the caller's ``options``, e.g. a deadline).
    ``RuntimeError`` if two parties feed one tensor."""
    if not self.hooks:
      return session.run(fetches, feed_dict=feed_dict, options=options), False
    context = tf.compat.v1.train.SessionRunContext(
      original_args=tf.compat.v1.train.SessionRunArgs(fetches, feed_dict), session=session
    )
    feeds = dict(feed_dict)
    hook_fetches: Dict[int, Any] = {}
    options = [options] if options is not None else []
    for i, hook in enumerate(self.hooks):
      request = hook.before_run(context)
      if request is None:
        continue
      if not isinstance(request, tf.compat.v1.train.SessionRunArgs):
        raise TypeError(
          f"{type(hook).__name__}.before_run must return a tf.compat.v1.train.SessionRunArgs or "
          f"None, got {type(request).__name__}"
        )
      if request.fetches is not None:
        hook_fetches[i] = request.fetches
      for key, value in (request.feed_dict or {}).items():
        if key in feeds:
          raise RuntimeError(f"{type(hook).__name__} feeds {key!r}, which the engine or another hook feeds already")
        feeds[key] = value
      if request.options is not None:
        options.append(request.options)
    run_options = _merge_options(options)
    run_metadata = tf.compat.v1.RunMetadata() if run_options is not None else None
    results = session.run(
      {"engine": fetches, "hooks": hook_fetches}, feed_dict=feeds, options=run_options, run_metadata=run_metadata
    )
    for i, hook in enumerate(self.hooks):
      hook.after_run(
        context,
        tf.compat.v1.train.SessionRunValues(
          results=results["hooks"].get(i), options=run_options, run_metadata=run_metadata
        ),
      )
    return results["engine"], context.stop_requested
