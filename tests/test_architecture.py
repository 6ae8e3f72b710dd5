"""ARCHITECTURE.md's map matches the code: every module and package of harness/ sits on a floor of the import-layer
contract (so lint-imports constrains it) and in ARCHITECTURE's floor table; no module outgrows the size guide
unless ARCHITECTURE says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the layers are read as text nowhere else

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "harness"


def _modules() -> set[str]:
    """Top-level modules and subpackages of harness/, as the layers name them."""
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return names | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def test_every_module_is_on_a_floor_of_the_layer_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    listed = {name.strip().removeprefix("harness.") for layer in layers for name in layer.split("|")}
    assert _modules() - listed == set()
    assert listed - _modules() == {"dashboard"}  # and nothing listed that is gone


def test_every_module_is_in_the_floor_table():
    table = "\n".join(line for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines() if line.startswith("| "))
    named = set(re.findall(r"`(?:harness\.)?([a-z_]+)/?`", table))
    assert _modules() - named == set()


def test_modules_and_functions_keep_to_the_size_guide():
    """~400 lines a module, ~60 a function (ARCHITECTURE names any exception and says why)."""
    architecture = (ROOT / "ARCHITECTURE.md").read_text()
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 420:
            long.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60
                    and f"`{node.name}`" not in architecture):
                long.append(f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
