"""The Dockerfile, checked without a Docker engine: the instructions Streamlit's Docker guide asks for are there,
in a cache-friendly order, and everything it COPYs exists and survives .dockerignore."""

from __future__ import annotations

import fnmatch
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED_IN_IMAGE = ["app/streamlit_app.py", "app/moe_ui/live.py", "app/app_pages/playground.py",
                   "moe_core/training/session.py", "lessons", ".streamlit/config.toml", "requirements.txt"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a pattern matches the path or one of its parent folders."""
    parts = Path(path).parts
    hit = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pat[3:]))
               for p in prefixes):
            hit = not negate
    return hit


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_follows_streamlits_docker_guide(steps):
    kinds = [k for k, _ in steps]
    base = steps[0]
    assert base[0] == "FROM" and base[1].split()[0] in ("python:3.11-slim", "python:3.12-slim")
    assert ("WORKDIR", "/app") in steps
    assert ("EXPOSE", "8501") in steps
    health = [a for k, a in steps if k == "HEALTHCHECK"]
    assert len(health) == 1 and "curl --fail http://localhost:8501/_stcore/health" in health[0]
    curl = [a for k, a in steps if k == "RUN" and "apt-get install" in a]
    assert curl and "curl" in shlex.split(curl[0]), "the health check needs curl in the image"
    entry = json.loads(next(a for k, a in steps if k == "ENTRYPOINT"))
    assert entry == ["streamlit", "run", "app/streamlit_app.py", "--server.port=8501", "--server.address=0.0.0.0"]
    assert kinds.index("HEALTHCHECK") < kinds.index("ENTRYPOINT")


def test_requirements_install_before_the_code_is_copied(steps):
    copies = [(i, a) for i, (k, a) in enumerate(steps) if k == "COPY"]
    pip = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install -r" in a)
    first, everything = copies[0], next(i for i, a in copies if a.split() == [".", "."])
    assert first[1].split()[0] == "requirements.txt" and first[0] < pip < everything, \
        "requirements first, then pip, then the code: editing code must not reinstall torch"
    run = steps[pip][1]
    assert "TORCH_INDEX_URL" in run and "--index-url" in run, "the CPU-wheel option is a build arg"
    assert any(k == "ARG" and a.startswith("TORCH_INDEX_URL") for k, a in steps)
    assert "grep -v '^-e '" in run, "the developer-only `-e .` line is not installed in the image"
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text() and "torch==2.13.0" in run


def test_every_copy_source_exists_and_is_not_dockerignored(steps):
    patterns = dockerignore()
    for kind, args in steps:
        if kind != "COPY":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            if source != ".":
                assert not ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    for path in NEEDED_IN_IMAGE:
        assert (ROOT / path).exists(), path
        assert not ignored(path, patterns), f".dockerignore drops {path}, which the image needs"
    assert ignored(".venv/bin/python", patterns) and ignored(".git/HEAD", patterns)
    assert ignored("app/moe_ui/__pycache__/live.cpython-311.pyc", patterns)


def test_runs_as_a_non_root_user(steps):
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_c_kernels_are_built_into_the_image_as_the_app_user(steps):
    """Built at image build time (no student waits for the compiler) by the user that runs the app, whose
    ~/.cache/moe-playground is where moe_core.accelerator.kernels looks; the build must fail loudly if they do not
    build."""
    words = [w for w, _ in steps]
    build = [i for i, (w, args) in enumerate(steps) if w == "RUN" and "kernels.kernels()" in args]
    assert len(build) == 1, "one RUN step builds the kernels"
    assert "assert" in steps[build[0]][1]
    user = max(i for i, w in enumerate(words) if w == "USER")
    assert steps[user][1] == "app" and user < build[0]
    gcc = next(i for i, (w, args) in enumerate(steps) if w == "RUN" and " gcc" in args)
    copy_code = next(i for i, (w, args) in enumerate(steps) if w == "COPY" and args.startswith(". "))
    assert gcc < copy_code < build[0]
