"""The launcher works after an AppTest replaced sys.modules['__main__'] (as in one pytest session)."""

from __future__ import annotations

import sys
import types

import pytest

from moe_core.layer.config import MoEConfig
from moe_core.scale_out.ep_bench import measure_exchange


@pytest.mark.timeout(300)
def test_ranks_do_not_re_run_the_parents_main_script(tmp_path, monkeypatch):
    script = tmp_path / "page.py"
    script.write_text("import module_that_does_not_exist\n")  # what a Streamlit page looks like to a child
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    frame = measure_exchange(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=8), world_size=2,
                             tokens=32, steps=1)
    assert len(frame) >= 2
    assert sys.modules["__main__"] is fake_main, "the caller's __main__ is put back"
