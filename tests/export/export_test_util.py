"""Helpers of the export tests: the graph modules under test, checkpoints, module variants, subprocesses."""

import importlib
import os
import pkgutil
import subprocess
import sys
import types
from typing import Any, Dict, List, Tuple

import tensorflow as tf

import returnn_rc as rc
from tests.export import tiny_graph

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
#: Sequences per graph in the round-trip test (the first ones of ``default_data("dev")``), batch size.
NUM_SEQS = 5
BATCH_SIZE = 2
CKPT_STEP = 7
CKPT_EPOCH = 2


def graph_module_names() -> List[str]:
  """``"tiny_graph"`` and every public module of ``graphs/`` (found with pkgutil)."""
  import graphs  # pylint: disable=import-outside-toplevel

  names = sorted(m.name for m in pkgutil.iter_modules(graphs.__path__) if not m.name.startswith("_"))
  return ["tiny_graph"] + [f"graphs.{n}" for n in names]


def import_module(name: str) -> Any:
  return tiny_graph if name == "tiny_graph" else importlib.import_module(name)


def make_checkpoint(module: Any, ckpt_dir: str, *, step: int = CKPT_STEP, epoch: int = CKPT_EPOCH) -> str:
  """Creates ``module``'s variables as training would (graph state + ``get_model``), with random
  values, and saves them all with a ``tf.compat.v1.train.Saver``; returns the checkpoint prefix."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(1234)
    state = rc.graph_state.get_graph_state()
    module.get_model(epoch=epoch, step=step)
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      state.set_step(sess, step)
      state.set_epoch(sess, epoch)
      return saver.save(sess, os.path.join(ckpt_dir, "model.ckpt"), global_step=step)


def variant(name: str = "tiny_variant", **overrides) -> types.ModuleType:
  """A copy of the tiny graph module with some functions replaced."""
  module = types.ModuleType(name)
  for attr in (
    "extern_data_template",
    "model_outputs_template",
    "default_data",
    "get_model",
    "train_step",
    "forward_step",
  ):
    setattr(module, attr, getattr(tiny_graph, attr))
  for attr, value in overrides.items():
    if value is None:
      delattr(module, attr)
    else:
      setattr(module, attr, value)
  return module


def run_python(args: List[str], *, timeout: float = 120, env: Dict[str, str] = None) -> Tuple[int, str]:
  """Runs ``python args...`` from the repo root; returns (exit code, stdout + stderr)."""
  full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
  full_env.update(env or {})
  proc = subprocess.run(
    [sys.executable] + args,
    cwd=REPO_ROOT,
    env=full_env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=timeout,
    check=False,
  )
  return proc.returncode, proc.stdout
