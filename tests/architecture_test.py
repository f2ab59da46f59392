"""The package's import structure: no import cycle, arrows only point down (core → engine / export).

Every ``import`` statement of every module counts: module level, inside functions, and under
``if TYPE_CHECKING:``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else
to ``pkg`` (its ``__init__``). Importing ``pkg.mod`` does not count as importing ``pkg`` itself (Python
runs ``pkg/__init__`` first, but every package ``__init__`` here only re-exports its own modules).
"""

import ast
import os
from typing import Dict, List, Set

from absl.testing import absltest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE = "returnn_rc"
_CORE = (
  "returnn_rc",
  "returnn_rc.tensor",
  "returnn_rc.graph_state",
  "returnn_rc.run_ctx",
  "returnn_rc.losses",
  "returnn_rc.reporting",
  "returnn_rc.nn",
  "returnn_rc.graph_module",
  "returnn_rc.checkpoint_compat",
)


def module_files(root: str, package: str) -> Dict[str, str]:
  """Dotted module name → file, for every ``.py`` file of ``package`` under ``root``."""
  out = {}
  for folder, _, files in os.walk(os.path.join(root, package)):
    for f in files:
      if not f.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(folder, f), root)[:-3].split(os.sep)
      if rel[-1] == "__init__":
        rel = rel[:-1]
      out[".".join(rel)] = os.path.join(folder, f)
  return out


def import_edges(modules: Dict[str, str], package: str) -> Dict[str, Set[str]]:
  """Module → the modules of ``package`` it imports anywhere in its file."""
  edges: Dict[str, Set[str]] = {m: set() for m in modules}
  for mod, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), filename=path)
    is_pkg = path.endswith("__init__.py")
    for node in ast.walk(tree):
      targets: List[str] = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
          parts = parts[: len(parts) - (node.level - 1)]
          base = ".".join(parts + ([base] if base else []))
        for alias in node.names:
          sub = f"{base}.{alias.name}"
          targets.append(sub if sub in modules else base)
      for target in targets:
        while target and target not in modules and "." in target:
          target = target.rsplit(".", 1)[0]
        if target in modules and (target.split(".")[0] == package) and target != mod:
          edges[mod].add(target)
  return edges


def find_cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  on_stack: Set[str] = set()
  cycles: List[List[str]] = []
  counter = [0]

  def visit(v: str) -> None:
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        cycles.append(sorted(comp))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return cycles


class ImportStructureTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.modules = module_files(_ROOT, _PACKAGE)
    cls.edges = import_edges(cls.modules, _PACKAGE)

  def test_modules_found(self):
    for expected in (
      "returnn_rc.run_ctx",
      "returnn_rc.losses",
      "returnn_rc.engine.engine",
      "returnn_rc.engine.train_graph",
      "returnn_rc.export.saved_model",
      "returnn_rc.ops.flatten",
    ):
      self.assertIn(expected, self.modules)
    self.assertIn("returnn_rc.losses", self.edges["returnn_rc.run_ctx"])

  def test_no_import_cycle(self):
    self.assertEqual(find_cycles(self.edges), [])

  def test_core_never_imports_engine_or_export(self):
    for mod in _CORE:
      bad = sorted(t for t in self.edges[mod] if t.startswith(("returnn_rc.engine", "returnn_rc.export")))
      self.assertEqual(bad, [], f"core module {mod} imports {bad}")

  def test_engine_and_export_do_not_import_each_other(self):
    for mod, targets in self.edges.items():
      if mod.startswith("returnn_rc.engine"):
        self.assertEqual(sorted(t for t in targets if t.startswith("returnn_rc.export")), [], mod)
      if mod.startswith("returnn_rc.export"):
        self.assertEqual(sorted(t for t in targets if t.startswith("returnn_rc.engine")), [], mod)

  def test_one_checkpoint_compatibility_check(self):
    # The engine (resume) and the export (restore) check a checkpoint with the same core function; no other
    # module compares a checkpoint's variables itself.
    for mod in ("returnn_rc.engine.checkpoints", "returnn_rc.export.forward_graph"):
      self.assertIn("returnn_rc.checkpoint_compat", self.edges[mod], mod)
    for mod, path in self.modules.items():
      with open(path, encoding="utf-8") as f:
        text = f.read()
      if mod != "returnn_rc.checkpoint_compat":
        self.assertNotIn("get_variable_to_shape_map", text, mod)

  def test_ops_is_a_leaf(self):
    for mod, targets in self.edges.items():
      if mod.startswith("returnn_rc.ops"):
        self.assertEqual(sorted(t for t in targets if not t.startswith("returnn_rc.ops")), [], mod)

  def test_library_never_imports_graphs_nor_edits_sys_path(self):
    for mod, path in self.modules.items():
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          self.assertNotIn("graphs", [a.name.split(".")[0] for a in node.names], mod)
        if isinstance(node, ast.ImportFrom) and not node.level:
          self.assertNotEqual((node.module or "").split(".")[0], "graphs", mod)
        if isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name):
          self.assertNotEqual(node.value.id, "sys", f"{mod} uses sys.path")


class CycleDetectorTest(absltest.TestCase):
  """The detector itself finds cycles (positive controls), including function-level and TYPE_CHECKING ones."""

  def _package(self, files: Dict[str, str]) -> Dict[str, Set[str]]:
    root = self.create_tempdir().full_path
    for rel, text in files.items():
      path = os.path.join(root, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return import_edges(module_files(root, "pkg"), "pkg")

  def test_function_level_cycle(self):
    edges = self._package(
      {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "def f():\n  from pkg.a import x\n"}
    )
    self.assertEqual(find_cycles(edges), [["pkg.a", "pkg.b"]])

  def test_type_checking_cycle(self):
    edges = self._package(
      {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from pkg import a\n",
      }
    )
    self.assertEqual(find_cycles(edges), [["pkg.a", "pkg.b"]])

  def test_relative_and_init_cycle(self):
    edges = self._package(
      {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "from pkg.sub.m import X\n",
        "pkg/sub/m.py": "from . import helper\n",
        "pkg/sub/helper.py": "from pkg.sub import X\n",
      }
    )
    self.assertEqual(find_cycles(edges), [["pkg.sub", "pkg.sub.helper", "pkg.sub.m"]])

  def test_no_cycle(self):
    edges = self._package(
      {"pkg/__init__.py": "from pkg import a\n", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "import os\n"}
    )
    self.assertEqual(find_cycles(edges), [])


if __name__ == "__main__":
  absltest.main()
