"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text.split("---")[0])


def test_readme_opens_with_the_app_and_the_test_command():
    start, tests = _readme_commands()
    assert "streamlit run app/streamlit_app.py" in start and "requirements.txt" in start
    assert "pytest" in tests and "requirements-dev.txt" in tests


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines, "edit .ci/run and the README together"


def test_the_app_entrypoint_and_requirements_exist():
    assert (ROOT / "app" / "streamlit_app.py").exists()
    reqs = (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0" in reqs, "any other torch spec pulls a multi-GB CUDA build"
