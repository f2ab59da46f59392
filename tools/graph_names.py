"""``--graph`` values of the tools: a short name of the repository's ``graphs/`` (``char_lm``), a dotted
module name (``mypkg.my_graph``), or a path to a ``.py`` file.

The library (:func:`returnn_rc.graph_module.load_graph_module`) takes module names and paths only; the
short names of ``graphs/`` are the tools' business, so this module puts the repository root on
``sys.path`` (the tools run from a checkout).
"""

import os
import sys
import types
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPHS_DIR = os.path.join(ROOT, "graphs")


def ensure_repo_root_on_path() -> None:
  """Makes ``returnn_rc`` (when not installed) and ``graphs`` importable."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def available() -> List[str]:
  """The short names: the public modules of ``graphs/``."""
  if not os.path.isdir(GRAPHS_DIR):
    return []
  return sorted(f[:-3] for f in os.listdir(GRAPHS_DIR) if f.endswith(".py") and not f.startswith("_"))


def resolve(name: str) -> str:
  """The module name or path :func:`returnn_rc.graph_module.load_graph_module` takes for ``name``."""
  if not isinstance(name, str) or not name:
    raise ValueError(
      f"--graph must be a name in graphs/ {available()}, a dotted module name or a .py path, got {name!r}"
    )
  if name.endswith(".py") or os.sep in name or "." in name:
    return name
  if name not in available():
    raise ValueError(
      f"graph module {name!r} not found: not in graphs/ {available()}; pass a name from "
      f"graphs/, a dotted module name or a path to a .py file"
    )
  return f"graphs.{name}"


def load(name: str) -> types.ModuleType:
  """Loads and checks the graph module ``name`` (see :func:`resolve`)."""
  ensure_repo_root_on_path()
  from returnn_rc.graph_module import load_graph_module  # pylint: disable=import-outside-toplevel

  return load_graph_module(resolve(name))
