"""The Real models page in AppTest, on tiny checkpoints allow-listed through MOE_REAL_MODELS_CONFIG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from moe_core.real_models import loading

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
from apptools import fresh  # noqa: E402

PAGE = "app_pages/real_models.py"


@pytest.fixture
def allow(tmp_path, monkeypatch):
    """Point the server config at a TOML allowing exactly these folders."""
    def _allow(*folders: Path, local: bool = False) -> None:
        f = tmp_path / "server.toml"
        listed = ", ".join(json.dumps(str(p)) for p in folders)
        f.write_text(f"allowed = [{listed}]\nallow_local_paths = {str(local).lower()}\nmax_chars = 400\n")
        monkeypatch.setenv(loading.CONFIG_ENV, str(f))
    return _allow


def route(at, model: str | None = None):
    if model is not None:
        at.selectbox(key="rm_model").set_value(model)
    at.button[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_page_routes_and_draws_every_view(tiny_models, allow):
    allow(tiny_models["olmoe"], tiny_models["qwen3_moe"])
    at = route(fresh(page=PAGE), str(tiny_models["qwen3_moe"]))
    assert not at.error
    html = " ".join(m.value for m in at.markdown)
    assert 'class="moe-real-tokens"' in html and "E0 0." in html  # hover titles carry experts and weights
    assert "Qwen3-MoE" in html and "2 MoE layers" in html
    assert len(at.get("plotly_chart")) == 4
    at.select_slider(key="rm_layer").set_value(2).run()
    assert not at.exception
    at.button[1].click().run()  # route the shipped sample
    assert not at.exception and len(at.get("plotly_chart")) == 6


def test_sample_picker_fills_the_text(tiny_models, allow):
    allow(tiny_models["mixtral"])
    at = fresh(page=PAGE)
    at.selectbox(key="rm_sample").set_value("German").run()
    assert at.text_area(key="rm_text").value.startswith("Am Rand des kleinen Dorfes")


def test_refusals_show_their_message(tiny_models, allow, tmp_path):
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text('{"model_type": "llama"}')
    allow(dense)
    at = route(fresh(page=PAGE))
    assert "is not a Mixture-of-Experts model" in at.error[0].value
    allow()
    at = fresh(page=PAGE)
    assert "allows no models yet" in at.info[0].value
    allow(tiny_models["mixtral"])
    at = fresh(page=PAGE)
    assert not at.text_input  # no free-text model box while local paths are off


def test_two_sessions_share_one_loaded_model(tiny_models, allow):
    name = str(tiny_models["granitemoe"])
    allow(tiny_models["granitemoe"])
    before = loading.LOADS.get(name, 0)
    a = route(fresh(page=PAGE))
    b = route(fresh(page=PAGE))
    assert loading.LOADS[name] == max(before, 1) and name in loading.loaded_models()
    assert a.session_state["rm_result"].model == b.session_state["rm_result"].model == name


def test_switching_models_keeps_a_valid_layer(tiny_models, allow):
    allow(tiny_models["mixtral"], tiny_models["qwen3_moe"])
    at = route(fresh(page=PAGE), str(tiny_models["mixtral"]))
    at.select_slider(key="rm_layer").set_value(0).run()
    at = route(at, str(tiny_models["qwen3_moe"]))  # layer 0 is dense in this model: no router there
    assert at.select_slider(key="rm_layer").value == 1 and not at.exception
