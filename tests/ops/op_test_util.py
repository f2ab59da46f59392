"""What the op suites share: every op test runs on each implementation (the C++/CUDA kernel and the
pure-TF fallback, as tensorflow/addons' ``run_custom_and_py_ops`` does) and on each device (CPU, and
the GPU when one is present), as test classes :class:`OpTestCase` subclasses per variant.

A variant that cannot run here is skipped with the reason: the op library not built (kernel), no
GPU (``tf.config.list_physical_devices("GPU")`` empty), or the library built without CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable, Optional

import tensorflow as tf
from absl.testing import parameterized

from returnn_rc import ops as rc_ops
from returnn_rc.ops import _loader

KERNEL, FALLBACK = "kernel", "fallback"
CPU, GPU = "cpu", "gpu"
CUSTOM_OP_TYPES = ("FlattenWithSeqLenMask", "UnflattenWithSeqLenMask")


def kernel_built() -> bool:
  return os.path.exists(_loader.CORE_SO)


def kernel_has_cuda() -> bool:
  """Whether the op library was built with its CUDA kernels (``_build_info.json``)."""
  try:
    with open(_loader.BUILD_INFO, encoding="utf-8") as f:
      return bool(json.load(f).get("cuda"))
  except (OSError, ValueError):
    return False


def gpu_present() -> bool:
  return bool(tf.config.list_physical_devices("GPU"))


def unavailable_reason(impl: str, device: str) -> Optional[str]:
  """Why the variant ``(impl, device)`` cannot run here; None if it can."""
  if impl == KERNEL and not kernel_built():
    return f"op library not built ({_loader.CORE_SO}); run: {_loader.REBUILD_CMD}"
  if device == GPU:
    if not gpu_present():
      return "no GPU: tf.config.list_physical_devices('GPU') is empty"
    if impl == KERNEL and not kernel_has_cuda():
      return f"op library built without CUDA ({_loader.BUILD_INFO}: cuda false); rebuild on a CUDA machine"
  return None


@contextlib.contextmanager
def scope(impl: str, device: str):
  """Ops built meanwhile use implementation ``impl`` and are placed on ``device``."""
  impl_scope = rc_ops.fallback_scope() if impl == FALLBACK else contextlib.nullcontext()
  with impl_scope, tf.device("/GPU:0" if device == GPU else "/CPU:0"):
    yield


def session_config() -> tf.compat.v1.ConfigProto:
  """Soft placement (ops without a kernel for the device, e.g. the fallback's asserts, run on the CPU) and
  no constant folding (Grappler would run ops on constant inputs once on the CPU, never on the device)."""
  config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
  config.graph_options.rewrite_options.constant_folding = config.graph_options.rewrite_options.OFF
  return config


class OpTestCase(tf.test.TestCase, parameterized.TestCase):
  """Base of an op test class; a subclass sets :attr:`IMPL` and :attr:`DEVICE` to run every test again."""

  IMPL = KERNEL
  DEVICE = CPU

  def setUp(self):
    super().setUp()
    reason = unavailable_reason(self.IMPL, self.DEVICE)
    if reason:
      self.skipTest(f"{self.IMPL} on {self.DEVICE}: {reason}")

  def scope(self):
    """:func:`scope` of this variant."""
    return scope(self.IMPL, self.DEVICE)

  def run_graph(self, fn: Callable[[], object]):
    """Builds ``fn()`` in a fresh graph in :meth:`scope` and runs it once; returns (result, graph).

    On the GPU with the kernel, also checks that every custom op of the graph ran on the GPU.
    """
    with tf.Graph().as_default() as graph:
      with self.scope():
        fetches = fn()
      with tf.compat.v1.Session(graph=graph, config=session_config()) as sess:
        meta = tf.compat.v1.RunMetadata()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        result = sess.run(fetches, options=options, run_metadata=meta)
    self.check_placement(graph, meta)
    return result, graph

  def check_placement(self, graph: tf.Graph, meta: tf.compat.v1.RunMetadata) -> None:
    """Kernel on GPU: each executed custom-op node ran on a GPU device; the fallback: no custom op."""
    custom = {op.name for op in graph.get_operations() if op.type in CUSTOM_OP_TYPES}
    if self.IMPL == FALLBACK:
      self.assertEmpty(custom, msg="the fallback built custom ops")
      return
    if self.DEVICE != GPU:
      return
    devices = {stats.node_name: dev.device for dev in meta.step_stats.dev_stats for stats in dev.node_stats}
    ran = {name: devices[name] for name in custom if name in devices}
    self.assertTrue(ran or not custom, msg=f"no custom op of {sorted(custom)} in the run's step stats")
    for name, device in ran.items():
      self.assertIn("GPU", device.upper(), msg=f"custom op {name} ran on {device}, not on the GPU")
