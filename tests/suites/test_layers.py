"""The package's import graph: no cycles, and dependencies flow one way.

Every `import` in `src/undo` counts, module-level or inside a function (a lazy import is
still a dependency), except those under `if TYPE_CHECKING:` (annotations only). Each
module belongs to a layer; a module may import its own layer or lower ones only.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Lowest first. A module matches the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    ("undo.configlib", "undo.provenance", "undo.artifacts", "undo.runtime", "undo.integrity",
     "undo.data"),
    ("undo.architectures", "undo.tokenizers", "undo.compute", "undo.sharding",
     "undo.checkpoint", "undo.analysis", "undo.ranks"),
    ("undo.models",),
    ("undo.benchmarks", "undo.objectives"),
    ("undo.config",),
    ("undo.train",),
    ("undo.stages",),
    ("undo.attacks",),
    ("undo.report",),
    ("undo.study",),
    ("undo.release",),
    ("undo.cli", "undo"),
]


def layer_of(module: str) -> int:
    best, layer = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > best:
                best, layer = len(n), i
    assert layer is not None, f"{module} is in no layer: add it to LAYERS"
    return layer


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str], root: Path = SRC) -> set[str]:
    """The undo modules `path` imports (a `from pkg import sub` names the submodule)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("undo"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("undo"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in modules else target)
    out.discard(me)
    return out


def graph(root: Path = SRC) -> dict[str, set[str]]:
    paths = sorted((root / "undo").rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p, modules, root) for p in paths}


def upward(g: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
            for m, deps in g.items() for d in sorted(deps) if layer_of(d) > layer_of(m)]


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `g`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_has_a_layer_and_imports_only_downward() -> None:
    wrong = upward(graph())
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_checks_fail_on_a_planted_violation(tmp_path: Path) -> None:
    """A low module importing a high one, lazily inside a function, and the cycle it
    closes are both reported; an import under TYPE_CHECKING is not."""
    pkg = tmp_path / "undo"
    (pkg / "study").mkdir(parents=True)
    (pkg / "study" / "__init__.py").write_text("")
    (pkg / "study" / "graph.py").write_text("from ..artifacts import x\n")
    (pkg / "artifacts.py").write_text("def f():\n    from .study import graph\n")
    (pkg / "runtime.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .study import graph\n")
    g = graph(tmp_path)
    assert upward(g) == ["undo.artifacts (layer 0) imports undo.study.graph (layer 9)"]
    assert cycle(g) == ["undo.artifacts", "undo.study.graph", "undo.artifacts"]
