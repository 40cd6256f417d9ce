"""Take the README's screenshots in a real browser (Debian's chromium via Playwright).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts the app with the shipped configuration on a free port, trains for a few seconds on each page that
trains, and saves one PNG per page at projector-like size (1600 x 1000 CSS px).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop_app  # noqa: E402

VIEWPORT = {"width": 1600, "height": 1000}


def settle(page: Page, timeout: int = 60_000) -> None:
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout)
    page.wait_for_timeout(800)  # let plotly finish drawing


def train_a_while(page: Page, seconds: float) -> None:
    page.get_by_role("button", name="Play", exact=True).click()
    page.wait_for_timeout(int(seconds * 1000))
    page.get_by_role("button", name="Pause", exact=True).click()
    page.wait_for_timeout(1500)
    settle(page)


def shoot(page: Page, path: Path, height: int = 1900) -> None:
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})  # Streamlit scrolls inside its
    page.wait_for_timeout(600)  # own container, so a tall viewport is the way to get the whole page
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if CHROMIUM is None:
        sys.exit("screenshots need Debian's chromium: apt-get install chromium")
    port = free_port()
    proc = start_app(port)
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)

            page.goto(f"{base}/?capacity=1.25")
            settle(page)
            train_a_while(page, 6)
            shoot(page, out / "playground.png")

            page.goto(f"{base}/?dataset=tokens&experts=8&top_k=2")
            settle(page)
            train_a_while(page, 8)  # "Characters by expert" is among the language model's default views
            shoot(page, out / "language.png", height=2600)

            page.goto(f"{base}/compare")
            settle(page)
            train_a_while(page, 6)
            shoot(page, out / "compare.png")

            page.goto(f"{base}/lessons")
            settle(page)
            shoot(page, out / "lessons.png", height=1300)

            page.goto(f"{base}/lessons?lesson=05-load-balancing&step=1")
            settle(page)
            predict = page.get_by_test_id("stMain").get_by_test_id("stRadio").first  # predict, then run
            predict.locator("label").filter(has=page.get_by_role("radio")).last.click()
            settle(page)
            train_a_while(page, 6)
            shoot(page, out / "lesson_step.png", height=2200)

            page.goto(f"{base}/reference")
            settle(page)
            page.get_by_text("softmax top-k (Mixtral)", exact=True).click()
            settle(page)
            shoot(page, out / "reference.png", height=1200)

            page.goto(f"{base}/?present=1&hide=router")
            settle(page)
            train_a_while(page, 4)
            shoot(page, out / "presenter.png", height=1300)
            browser.close()
    finally:
        stop_app(proc)


if __name__ == "__main__":
    main()
