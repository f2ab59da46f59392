"""Training on several workers (processes, hosts) or several devices of one process, on TensorFlow's own
distribution runtime in graph mode.

- Several workers: ``tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy`` (collective
  all-reduce), between-graph: one process per worker, each with ``TF_CONFIG``
  (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``), a
  ``tf.distribute.Server`` started here (graph mode: the strategy does not start one) and a
  ``Session(server.target)``. Worker 0 is the chief.
- Several devices of one process: ``tf.compat.v1.distribute.MirroredStrategy`` over them (e.g. two
  logical CPU devices, ``ConfigProto(device_count={"CPU": 2})``).

Semantics (see :func:`returnn_rc.engine.train_graph.build_train_graph`): every worker builds the same
global batches (same order, same seed) and takes its contiguous part of each (:func:`returnn_rc.engine.
data.split_global_batch`; parts may be empty); every replica runs every step. The variables are plain
variables, one full copy per worker, initialised identically (graph seed) or restored from the same
checkpoint; every replica applies the same all-reduced update, so they stay equal and their names are
those of a single-worker run (checkpoints are interchangeable between 1 and N workers).

Faults: every ``Session.run`` of a worker has a deadline (``timeout_secs``; the first run of a
session, which waits for all workers to come up, gets ``startup_timeout_secs``). A worker that died
or hangs makes the collectives of the others stop at the deadline: :class:`WorkerLostError` names this
worker, the step and the peers that no longer accept connections.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

#: Default deadline of a ``Session.run`` of a worker (a step, an evaluation batch), seconds.
DEFAULT_TIMEOUT_SECS = 60.0
#: Default deadline of the first ``Session.run`` of a worker's session (all workers come up), seconds.
DEFAULT_STARTUP_TIMEOUT_SECS = 300.0


class WorkerLostError(RuntimeError):
  """A collective did not complete in time: another worker died or hangs. Training stopped; no checkpoint
  of the running epoch was written."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  """A checked ``TF_CONFIG``: the workers' addresses and this process's index (0: the chief)."""

  workers: List[str]
  index: int

  @property
  def num_workers(self) -> int:
    return len(self.workers)

  @property
  def is_chief(self) -> bool:
    return self.index == 0

  def tf_config(self) -> str:
    """The ``TF_CONFIG`` JSON of this worker."""
    return json.dumps({"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}})


def parse_tf_config(text: Optional[str] = None) -> ClusterSpec:
  """Checks ``TF_CONFIG`` (default: the environment's) and returns its :class:`ClusterSpec`.

  Raises:
    ValueError: not JSON, no ``cluster.worker`` list of ``"host:port"`` strings, a job other than
      ``worker`` (no ``chief`` / ``ps`` / ``evaluator``: worker 0 is the chief), a task that is not
      ``{"type": "worker", "index": i}`` with ``0 <= i < len(workers)``, duplicate addresses.
  """
  if text is None:
    text = os.environ.get("TF_CONFIG", "")
  what = "TF_CONFIG"
  try:
    cfg = json.loads(text)
  except ValueError as exc:
    raise ValueError(
      f"{what} is not valid JSON ({exc}): {text[:200]!r}; expected "
      '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
    ) from None
  if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict):
    raise ValueError(f"{what} must be a JSON object with a 'cluster' object, got {text[:200]!r}")
  cluster, task = cfg["cluster"], cfg.get("task")
  other = sorted(set(cluster) - {"worker"})
  if other:
    raise ValueError(f"{what}: cluster jobs {other} are not supported; only 'worker' (worker 0 is the chief)")
  workers = cluster.get("worker")
  if not isinstance(workers, list) or not workers or not all(isinstance(w, str) for w in workers):
    raise ValueError(f"{what}: cluster.worker must be a non-empty list of 'host:port' strings, got {workers!r}")
  for w in workers:
    host, _, port = w.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"{what}: worker address {w!r} is not 'host:port' with a port in [1, 65535]")
  if len(set(workers)) != len(workers):
    raise ValueError(f"{what}: duplicate worker addresses in {workers}")
  if not isinstance(task, dict) or task.get("type") != "worker":
    raise ValueError(f"{what}: task must be {{'type': 'worker', 'index': i}}, got {task!r}")
  index = task.get("index")
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
    raise ValueError(f"{what}: task.index must be an int in [0, {len(workers)}) (the number of workers), got {index!r}")
  return ClusterSpec(workers=list(workers), index=index)


def check_port_free(address: str) -> None:
  """``ValueError`` if this process cannot listen on ``address``'s port (in use by another process)."""
  port = int(address.rpartition(":")[2])
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      sock.bind(("", port))
    except OSError as exc:
      raise ValueError(
        f"worker address {address!r}: port {port} is in use ({exc.strerror}); choose a free port "
        f"(tools/train.py --num_workers=N picks free ones)"
      ) from None


def free_ports(n: int) -> List[int]:
  """``n`` distinct ports that are free now on localhost (bound to port 0, then released)."""
  socks, ports = [], []
  try:
    for _ in range(n):
      sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      sock.bind(("localhost", 0))
      socks.append(sock)
      ports.append(sock.getsockname()[1])
  finally:
    for sock in socks:
      sock.close()
  return ports


def unreachable_peers(cluster: ClusterSpec, *, timeout: float = 1.0) -> List[str]:
  """``"worker i (host:port)"`` of the peers that do not accept a TCP connection (a dead process)."""
  out = []
  for i, address in enumerate(cluster.workers):
    if i == cluster.index:
      continue
    host, _, port = address.rpartition(":")
    try:
      with socket.create_connection((host, int(port)), timeout=timeout):
        pass
    except OSError:
      out.append(f"worker {i} ({address})")
  return out


def check_num_workers(num_replicas: int, batch_size: int) -> None:
  """``ValueError`` if there are more replicas than sequences in a batch (a replica would never get data)."""
  if num_replicas > batch_size:
    raise ValueError(
      f"{num_replicas} workers (replicas) but batch_size={batch_size}: every replica needs at least "
      f"one sequence of a full batch; use batch_size >= {num_replicas} or fewer workers"
    )


@dataclasses.dataclass
class Distribution:
  """How the engine runs: the strategy, the session target and config, this worker, the deadlines.

  Attributes:
    strategy: a ``tf.distribute`` strategy (built in graph mode).
    target: the session target (``server.target``; ``""`` in one process).
    session_config: the ``ConfigProto`` of the session (``strategy.update_config_proto``).
    worker_index / num_workers: this worker and the number of workers (1 for ``MirroredStrategy``).
    cluster: the checked ``TF_CONFIG`` (None in one process).
    timeout_secs / startup_timeout_secs: deadlines of a ``Session.run`` (see the module docstring).
    server: the ``tf.distribute.Server`` (kept alive with this object).
  """

  strategy: Any
  target: str = ""
  session_config: Optional[tf.compat.v1.ConfigProto] = None
  worker_index: int = 0
  num_workers: int = 1
  cluster: Optional[ClusterSpec] = None
  timeout_secs: float = DEFAULT_TIMEOUT_SECS
  startup_timeout_secs: float = DEFAULT_STARTUP_TIMEOUT_SECS
  server: Any = None

  @property
  def is_chief(self) -> bool:
    return self.worker_index == 0

  @property
  def num_replicas(self) -> int:
    return int(self.strategy.num_replicas_in_sync)

  def run_options(self, *, first: bool) -> tf.compat.v1.RunOptions:
    secs = max(self.startup_timeout_secs, self.timeout_secs) if first else self.timeout_secs
    return tf.compat.v1.RunOptions(timeout_in_ms=int(secs * 1000))

  def describe(self) -> str:
    if self.cluster is None:
      return f"{self.num_replicas} replicas in one process"
    return f"worker {self.worker_index} of {self.num_workers} ({self.cluster.workers[self.worker_index]})"

  def lost_error(self, exc: Exception, *, where: str) -> WorkerLostError:
    """The :class:`WorkerLostError` for ``exc`` (a deadline or a cancelled collective) at ``where``."""
    dead = unreachable_peers(self.cluster) if self.cluster is not None else []
    peers = f"unreachable: {', '.join(dead)}" if dead else "every peer still accepts connections (one hangs?)"
    return WorkerLostError(
      f"{self.describe()}: {where}: a collective did not complete within {self.timeout_secs:g}s "
      f"({type(exc).__name__}): another worker died or hangs ({peers}); training stopped"
    )


def _check_timeouts(timeout_secs: float, startup_timeout_secs: float) -> None:
  for name, value in (("timeout_secs", timeout_secs), ("startup_timeout_secs", startup_timeout_secs)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e7:
      raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")


def multi_worker(
  cluster: Optional[ClusterSpec] = None,
  *,
  timeout_secs: float = DEFAULT_TIMEOUT_SECS,
  startup_timeout_secs: float = DEFAULT_STARTUP_TIMEOUT_SECS,
) -> Distribution:
  """Starts this worker's server and its ``MultiWorkerMirroredStrategy`` (graph mode).

  Args:
    cluster: the checked ``TF_CONFIG`` (default: :func:`parse_tf_config` of the environment).
  Raises:
    ValueError: a malformed ``TF_CONFIG``, this worker's port in use, a bad timeout.
  """
  _check_timeouts(timeout_secs, startup_timeout_secs)
  if cluster is None:
    cluster = parse_tf_config()
  check_port_free(cluster.workers[cluster.index])
  os.environ["TF_CONFIG"] = cluster.tf_config()  # what the strategy's resolver reads
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  # Built in graph mode (no server of its own), in a graph of its own: what it adds at construction (an
  # ordering token variable, used only by eager collectives) stays out of the model's graph and checkpoints.
  with tf.Graph().as_default():
    strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  config = strategy.update_config_proto(tf.compat.v1.ConfigProto())
  # TF's multi-worker tests: a cluster may hang without enough inter-op threads.
  config.inter_op_parallelism_threads = max(config.inter_op_parallelism_threads, cluster.num_workers + 1)
  try:
    server = tf.distribute.Server(
      tf.train.ClusterSpec({"worker": cluster.workers}),
      job_name="worker",
      task_index=cluster.index,
      protocol="grpc",
      config=config,
      start=True,
    )
  except tf.errors.UnknownError as exc:  # the port was taken between the check and the start
    raise ValueError(
      f"worker address {cluster.workers[cluster.index]!r}: could not start the server ({exc.message})"
    ) from None
  return Distribution(
    strategy=strategy,
    target=server.target,
    session_config=config,
    worker_index=cluster.index,
    num_workers=cluster.num_workers,
    cluster=cluster,
    timeout_secs=timeout_secs,
    startup_timeout_secs=startup_timeout_secs,
    server=server,
  )


def mirrored(devices: Sequence[str], *, session_config: Optional[tf.compat.v1.ConfigProto] = None) -> Distribution:
  """``MirroredStrategy`` over ``devices`` of this process (e.g. ``["/cpu:0", "/cpu:1"]`` with
  ``session_config=ConfigProto(device_count={"CPU": 2})``)."""
  devices = list(devices)
  if not devices:
    raise ValueError("mirrored: devices must be a non-empty list of device names, got []")
  if len(set(devices)) != len(devices):
    raise ValueError(f"mirrored: duplicate devices in {devices}")
  with tf.Graph().as_default():  # graph mode; see multi_worker
    strategy = tf.compat.v1.distribute.MirroredStrategy(devices=devices)
  return Distribution(strategy=strategy, session_config=session_config)


def device_count_config(num_cpus: int) -> tf.compat.v1.ConfigProto:
  """A ``ConfigProto`` with ``num_cpus`` logical CPU devices (``/cpu:0`` ...)."""
  return tf.compat.v1.ConfigProto(device_count={"CPU": num_cpus})


def summary(dist: Optional[Distribution]) -> Dict[str, Any]:
  """What the logs say about the distribution."""
  if dist is None:
    return {"replicas": 1}
  return {"replicas": dist.num_replicas, "worker": dist.worker_index, "workers": dist.num_workers}
