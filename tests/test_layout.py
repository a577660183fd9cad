"""The package layout's dependency direction, read from the import statements of every module.

conv uses nothing of convlab (a user's layer and the layers here need only torch); training uses
conv; verify, bench and learn use conv and training; nothing below them imports them back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "convlab"

# package -> the convlab packages it may import (itself always allowed)
ALLOWED = {
    "conv": set(),
    "training": {"conv"},
    "verify": {"conv", "training"},
    "bench": {"conv", "training"},
    "learn": {"conv", "training"},
}


def convlab_imports(path: Path) -> set[str]:
    """The second component of every `convlab.<package>...` the module imports (top-level or lazy)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "convlab" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str):
    packages = set(ALLOWED)
    offending = {}
    for path in sorted((SRC / package).rglob("*.py")):
        used = (convlab_imports(path) & packages) - {package} - ALLOWED[package]
        if used:
            offending[str(path.relative_to(SRC))] = sorted(used)
    assert not offending, f"{package} may import only {sorted(ALLOWED[package])}; found {offending}"


def test_every_package_is_covered():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_the_check_sees_a_lazy_import(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from convlab.learn import report\n    import convlab.bench.cli\n")
    assert convlab_imports(module) == {"learn", "bench"}
