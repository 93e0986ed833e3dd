"""The package's folders are its layers, and no import points against them.

Layers, lowest first (a module may import its own layer and those below it):

* ``pfbook.io``, ``pfbook.config`` -- files and run settings, the foundation;
* ``pfbook.power`` and ``pfbook.diffusion`` -- side by side: neither knows the other;
* ``pfbook.evaluation`` -- may use both;
* ``pfbook.methods.<method>`` -- uses all of the above, never another method;
* ``pfbook.book`` -- the command line, reruns, data recipes and chapter set-up, above everything.

Every ``import`` and ``from ... import`` of the package is read from the source with :mod:`ast` (including
imports inside functions), so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pfbook"

# What each layer may import, besides itself.
ALLOWED = {
    "foundation": set(),
    "power": {"foundation"},
    "diffusion": {"foundation"},
    "evaluation": {"foundation", "power", "diffusion"},
    "methods": {"foundation", "power", "diffusion", "evaluation"},
    "book": {"foundation", "power", "diffusion", "evaluation", "methods"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> tuple[str, str]:
    """(layer, unit): the unit is what must not import a sibling (one method), else the layer itself."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in ("io", "config", "__main__"):
        return "foundation", "foundation"
    top = parts[1]
    if top not in ALLOWED:
        raise AssertionError(f"{module} is in no layer: put it under one of {sorted(ALLOWED)} or the foundation")
    if top == "methods":
        return "methods", ".".join(parts[:3])
    return top, top


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "pfbook"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pfbook":
                continue
            if target == "pfbook":  # from pfbook import X: X is the module imported
                found += [(node.lineno, f"pfbook.{a.name}") for a in node.names]
            elif target == "pfbook.methods":
                found += [(node.lineno, f"pfbook.methods.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py" and p != PACKAGE / "__init__.py")


def violations(path: Path) -> list[str]:
    src_layer, src_unit = layer(module_name(path))
    bad = []
    for line, target in imports_of(path):
        if target in ("pfbook", "pfbook.__version__"):
            continue
        dst_layer, dst_unit = layer(target)
        if dst_unit == src_unit or dst_layer in ALLOWED[src_layer]:
            continue
        if src_layer == dst_layer == "methods":
            why = "a method imports another method: move the shared piece down a layer"
        else:
            why = f"the {src_layer} layer may not import the {dst_layer} layer"
        bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} ({why})")
    return bad


def test_every_module_is_in_a_layer():
    assert MODULES, "no modules found"
    for path in MODULES:
        layer(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_against_the_layers(path):
    assert violations(path) == []


def test_the_check_catches_an_arrow_against_the_layers(tmp_path, monkeypatch):
    """The checker itself: a power module importing the diffusion core, and one method importing another, fail."""
    fake = tmp_path / "pfbook"
    (fake / "power").mkdir(parents=True)
    (fake / "methods" / "a").mkdir(parents=True)
    (fake / "power" / "x.py").write_text("def f():\n    from pfbook.diffusion import Schedule\n")
    (fake / "methods" / "a" / "m.py").write_text("from ..b import thing\nfrom pfbook.methods import c\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert len(violations(fake / "power" / "x.py")) == 1
    assert len(violations(fake / "methods" / "a" / "m.py")) == 2
