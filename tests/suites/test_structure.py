"""Size limits that keep the package readable: no module over 450 lines, and no function
over 80 lines where the study and its stages live (`study/`, `stages/`). The import graph's
own rules (one-way layers, no cycle) are tests/suites/test_layers.py."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "undo"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_no_module_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them): {long}"


def test_no_function_over_80_lines_in_study_and_stages():
    long = {}
    for package in ("study", "stages"):
        for p in (SRC / package).glob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long[f"{package}/{p.name}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_limits_see_every_module():
    # The checks above pass vacuously if the tree moved: they must read real files.
    assert len(list(SRC.rglob("*.py"))) > 50
    assert (SRC / "study" / "graph.py").is_file() and (SRC / "stages" / "distill.py").is_file()
