"""No state leaks between sessions: no `global` rebinding, no per-user object in a global cache, and
module-level containers only as UPPER_CASE constants (never a place to stash a student's run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# imported modules live once per server process; page scripts (streamlit_app.py, app_pages/) are re-executed
# on every run, so their top-level names are per-run locals
SOURCES = sorted([*ROOT.glob("app/moe_ui/*.py"), *ROOT.glob("moe_core/**/*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_has_no_mutable_globals(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Global), f"{path.name}:{node.lineno} rebinds a module global"
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            mutable = isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp))
            for t in targets:
                if mutable and isinstance(t, ast.Name):
                    assert t.id.isupper() or t.id.startswith("_") and t.id[1:].isupper() or t.id == "__all__", (
                        f"{path.name}:{node.lineno}: module-level container '{t.id}' looks like state")


def test_app_never_caches_per_user_objects_globally():
    for path in ROOT.glob("app/**/*.py"):
        text = path.read_text()
        assert "cache_resource" not in text, f"{path.name}: per-session objects belong in st.session_state"
