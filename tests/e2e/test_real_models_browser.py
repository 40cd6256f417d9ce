"""The Real models page in Debian's chromium, on a tiny random OLMoE checkpoint allow-listed for its own server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import free_port, start_app, stop_app, tracebacks

from moe_core.real_models.loading import CONFIG_ENV
from moe_core.real_models.tiny import build_tiny

LOG = "streamlit-real-models.log"


@pytest.fixture(scope="module")
def rm_url(tmp_path_factory, artifacts) -> Iterator[str]:
    root = tmp_path_factory.mktemp("real_models")
    folder = build_tiny("olmoe", root / "tiny-olmoe", seed=0)
    config = root / "server.toml"
    config.write_text(f'allowed = ["{folder}"]\nallow_local_paths = false\nmax_chars = 2000\n')
    with pytest.MonkeyPatch.context() as mp:  # the server inherits the environment it starts with
        mp.setenv(CONFIG_ENV, str(config))
        mp.setenv("HF_HUB_OFFLINE", "1")
        port = free_port()
        proc = start_app(port, log_path=artifacts / LOG)
    yield f"http://127.0.0.1:{port}"
    stop_app(proc)
    found = tracebacks((artifacts / LOG).read_text(errors="replace"))
    assert not found, f"the Real models server logged a traceback:\n{found[0]}"


def test_route_hover_and_sample(page, rm_url):
    page.goto(f"{rm_url}/real_models")
    page.get_by_role("link", name="Real models").wait_for(timeout=60_000)  # in the navigation
    page.get_by_role("button", name="Route", exact=True).click()
    tokens = page.locator(".moe-real-tokens .tok")
    tokens.first.wait_for(timeout=60_000)
    title = tokens.nth(2).get_attribute("title") or ""
    assert "→ E" in title and " · E" in title  # top-2 experts with their gate weights on hover
    page.get_by_text("Tokens per expert: MaxVio =").first.wait_for(timeout=30_000)  # Plotly draws after the HTML
    page.get_by_role("button", name="Route the sample").click()
    page.get_by_text("Specialisation per layer").first.wait_for(timeout=60_000)
    assert page.get_by_text("I(expert; domain) =").count() >= 1
    assert page.locator(".js-plotly-plot").count() >= 6
    assert not page.get_by_text("This app has encountered an error").count()


def test_unknown_text_refusal(page, rm_url):
    page.goto(f"{rm_url}/real_models")
    area = page.get_by_label("Text", exact=True)
    area.wait_for(timeout=60_000)
    area.fill(" ")
    area.press("Control+Enter")
    page.get_by_role("button", name="Route", exact=True).click()
    page.get_by_text("nothing to route").wait_for(timeout=30_000)
