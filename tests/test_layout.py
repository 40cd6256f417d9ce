"""The package layout shows the architecture (issue #15): no import cycle inside moe_core, the core never imports
the UI, snapshots draw without torch.distributed, the readable layer names no kernel, and every router is a Router."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "moe_core"


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {_module_name(p): p for p in CORE.rglob("*.py")}


def _runtime_imports(path: Path) -> set[str]:
    """moe_core modules this file imports at run time (TYPE_CHECKING blocks excluded), at any depth."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moe_core"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("moe_core"))
    return {m for m in found if m in MODULES and m != "moe_core"}


GRAPH = {name: _runtime_imports(path) - {name} for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle_between_modules():
    """A package's __init__ importing its own modules is not a cycle; two modules reaching each other is."""
    cycles = sorted(
        (a, b) for a in GRAPH for b in GRAPH[a]
        if a < b and a in _reachable(b) and not (a.startswith(b + ".") or b.startswith(a + "."))
    )
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"


def test_the_core_never_imports_the_ui():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for imported in names:
                    assert imported.split(".")[0] not in ("streamlit", "app", "moe_ui"), f"{name} imports {imported}"


def test_snapshots_draw_without_torch_distributed():
    reached = _reachable("moe_core.training.snapshot")
    assert not {m for m in reached if m.startswith("moe_core.scale_out")}, reached


@pytest.mark.parametrize("name", ["moe_core.layer.moe_layer", "moe_core.layer.experts", "moe_core.layer.capacity",
                                  *[m for m in MODULES if m.startswith("moe_core.layer.routers")]])
def test_the_readable_layer_names_no_kernel(name):
    """Public torch calls only; the accelerator is reached through one call in MoELayer.forward."""
    text = MODULES[name].read_text()
    for word in ("ctypes", "data_ptr", "torch.ops", "torch._", "autograd.Function", "kernels"):
        assert word not in text, f"{name} mentions {word}"
    imports = GRAPH[name]
    allowed = {"moe_core.accelerator"} if name == "moe_core.layer.moe_layer" else set()
    assert {m for m in imports if m.startswith("moe_core.accelerator")} <= allowed, imports


def test_the_layer_fits_in_one_readable_file():
    assert len(MODULES["moe_core.layer.moe_layer"].read_text().splitlines()) <= 250


def test_every_router_is_a_router():
    from moe_core.layer.routers import ROUTER_CLASSES, Router

    assert all(issubclass(cls, Router) for cls in ROUTER_CLASSES.values())
