"""Every shell command the docs quote runs: README.md, benchmarks/README.md, lessons/*.md and docs/**/*.md.

Extracted: the lines of ```bash / ```sh / ```shell / ```console blocks (console: the `$ ` lines), the lines of
bare ``` blocks and the inline `code` spans that start with a known command (COMMAND_WORDS). `a && b` is two
commands, a `for v in ...; do ... done` loop is its body once per value, `\\` continues a line, `# ...` is a
comment, `[--flag value]` is an optional part and `...` stands for the reader's own flags (both left out).

Run: with this interpreter in place of python / python3 / .venv/bin/python, from the repository root, output
files (OUT_FLAGS) redirected into tmp_path, sizes shrunk through SMALL (one table for every command), a
`flock LOCK` wrapper dropped (it only queues benchmarks on a shared machine; waiting behind someone's
benchmark would stall the test), a `taskset -c CORES` wrapper dropped (it only pins the command to cores), and a
timeout. Commands that cannot run in a test are recognized by EXCLUDED,
each with its reason; a command that is neither runnable nor excluded fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_GLOBS = ("README.md", "benchmarks/README.md", "lessons/*.md", "docs/**/*.md")
SHELL_FENCES = {"bash", "sh", "shell", "console"}
# the first word of a command in a bare ``` block or an inline `span` (a path under .venv/bin/ counts too)
COMMAND_WORDS = {"python", "python3", "moe-playground", "streamlit", "pytest", "pip", "docker", "sudo", "apt-get",
                 "nginx", "flock"}
MIN_COMMANDS = 30  # the docs quote 40-odd: fewer means the extractor broke, not that the docs shrank this much
TIMEOUT_S = 300

# Commands that cannot run inside a test, by their first words (python3 and .venv/bin/X normalized to
# python and X). Every entry must match at least one quoted command (a stale entry fails the test).
EXCLUDED = {
    ("python", "-m", "venv"): "creates the virtual environment this test already runs in",
    ("pip", "install"): "installs packages from the network into the environment this test already runs in",
    ("python", "-m", "pytest"): "the test suite itself",
    ("streamlit", "run"): "serves until stopped (tests/e2e start the app for real); checked here: the app file "
                          "exists and streamlit is installed",
    ("docker",): "needs a Docker daemon and network (tests/deploy/test_dockerfile.py checks the Dockerfile)",
    ("sudo",): "changes the system: installs packages, writes /etc/nginx, reloads services",
    ("nginx",): "needs root and the installed config (tests/deploy/test_nginx_sticky.py runs nginx on "
                "deploy/nginx.conf)",
    ("cd",): "a placeholder path; this test runs every command from the repository root",
    ("export",): "sets a placeholder secret for the (excluded) streamlit commands after it",
    ("moe-playground",): "only named in prose, with no command (README: 'installed as `moe-playground`'); "
                         "checked here: it is installed",
}

# Small sizes, one table for every command: a flag a command gives is set to this value (all of its values,
# for a flag that takes several, e.g. --sessions 1 5 10 -> --sessions 1).
SMALL = {
    "--steps": ["3"],  # train, sweep, bench_train.py, ep-bench: optimizer / measured steps
    "--rounds": ["1"],  # bench_train.py, bench_layer.py
    "--ticks": ["2"],  # bench_tick.py
    "--grid": ["1024,4,1"],  # bench_layer.py: one small grid point
    "--warmup": ["1"],  # bench_layer.py iterations, bench_classroom.py seconds, ep-bench steps
    "--tokens": ["64"], "--d-model": ["16"], "--hidden": ["32"],  # ep-bench: a tiny layer
    "--sessions": ["1"], "--seconds": ["2"], "--probe-every": ["1"],  # bench_classroom.py: one student, 2 s
    "--soak-minutes": ["0.1"],  # bench_classroom.py soak: 6 s
    # bench_classroom.py: each release round follows RSS past the shipped disconnectedSessionTTL (60 s) + 30 s,
    # a wait no flag shortens; 0 = no release round
    "--release-rounds": ["0"],
}
# Flags added where a command leaves them to a large default (the value comes from SMALL).
ADD_WHEN_ABSENT = {
    "moe_core ep-bench": ("--tokens", "--d-model", "--hidden", "--steps"),  # default: 4096 tokens, d 256, h 512
    "benchmarks/bench_layer.py": ("--grid", "--rounds"),  # default: 16 grid points, 20-30 rounds each
    "benchmarks/bench_classroom.py": ("--warmup",),  # default: 5 s before each window
}
OUT_FLAGS = ("--metrics-out", "--summary-out", "--checkpoint-out", "--out")  # rewritten to tmp_path/<name>
# Exit status 1 of these is the benchmark's verdict on its targets, which a shrunk run cannot meet (a 6 s soak
# shows the start-up growth of RSS, not its slope): accepted when the run finished (its report says MISSED and
# its --out file was written).
VERDICT_EXIT = {"benchmarks/bench_classroom.py": "targets measured and missed at test sizes"}
# Programs that need a tool CI installs: skipped without it unless the variable is "1" (CI sets it).
NEEDS = {"benchmarks/bench_classroom.py": ("chromium", "MOE_REQUIRE_BROWSER")}


@dataclass(frozen=True)
class Quoted:
    where: str  # file:line, plus the loop variable's value inside a for loop
    text: str  # one simple command, as quoted


def _logical_lines(block: str, first_line: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", first_line
    for i, line in enumerate(block.split("\n")):
        if not pending:
            start = first_line + i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, (pending + line).strip()))
        pending = ""
    return out


def _first_word(text: str) -> str:
    words = [w for w in text.split() if not re.match(r"[A-Za-z_]\w*=", w)]  # past VAR=value assignments
    return words[0].removeprefix(".venv/bin/") if words else ""


def _simple_commands(where: str, text: str) -> list[Quoted]:
    text = re.sub(r"\s&\s*$", "", text)  # run in the background: the same command
    return [Quoted(where, part.strip()) for part in re.split(r"\s&&\s", text) if part.strip()]


def _block_commands(path: str, lang: str, block: str, first_line: int) -> list[Quoted]:
    found: list[Quoted] = []
    lines = _logical_lines(block, first_line)
    i = 0
    while i < len(lines):
        line_no, text = lines[i]
        i += 1
        if lang == "console":
            if not text.startswith("$ "):
                continue  # output
            text = text[2:]
        if not text or text.startswith("#") or (lang == "" and _first_word(text) not in COMMAND_WORDS):
            continue
        loop = re.fullmatch(r"for (\w+) in (.+?); do", text)
        if loop:
            body = []
            while lines[i][1] != "done":
                body.append(lines[i])
                i += 1
            i += 1
            for value in loop.group(2).split():
                for body_no, body_text in body:
                    expanded = re.sub(rf"\$\{{?{loop.group(1)}\b\}}?", value, body_text)
                    found += _simple_commands(f"{path}:{body_no}[{loop.group(1)}={value}]", expanded)
            continue
        found += _simple_commands(f"{path}:{line_no}", text)
    return found


def extract(path: str) -> list[Quoted]:
    """The commands quoted in one Markdown file (path relative to the repository root)."""
    doc = (ROOT / path).read_text()
    found: list[Quoted] = []
    fence = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
    for m in fence.finditer(doc):
        if m.group(1) in SHELL_FENCES or m.group(1) == "":
            found += _block_commands(path, m.group(1), m.group(2).rstrip("\n"), doc.count("\n", 0, m.start(2)) + 1)
    prose = fence.sub(lambda m: "\n" * m.group(0).count("\n"), doc)  # inline spans outside the blocks
    for m in re.finditer(r"`([^`\n]+)`", prose):
        if _first_word(m.group(1)) in COMMAND_WORDS:
            found += _simple_commands(f"{path}:{prose.count(chr(10), 0, m.start()) + 1}", m.group(1))
    return found


def quoted_commands() -> list[Quoted]:
    paths = sorted({str(p.relative_to(ROOT)) for g in DOC_GLOBS for p in ROOT.glob(g)})
    return [q for path in paths for q in extract(path)]


# -- from a quoted command to argv ---------------------------------------------------------------------------
@dataclass
class Parsed:
    env: dict[str, str]
    argv: list[str]  # python3 / .venv/bin/X normalized to python / X

    @property
    def program(self) -> str | None:
        """What runs: 'moe_core <command>', a benchmarks/ script, or None (not a command this test runs)."""
        a = self.argv
        if a[0] == "moe-playground" and len(a) > 1:
            return f"moe_core {a[1]}"
        if a[0] == "python" and a[1:3] == ["-m", "moe_core"] and len(a) > 3:
            return f"moe_core {a[3]}"
        if a[0] == "python" and a[1:3] == ["-m", "moe_core.scale_out.ep_bench"]:
            return "moe_core ep-bench"
        if a[0] == "python" and len(a) > 1 and a[1].startswith("benchmarks/") and (ROOT / a[1]).is_file():
            return a[1]
        return None


def parse(q: Quoted) -> Parsed:
    words = shlex.split(q.text, comments=True)
    kept, optional = [], False
    for w in words:  # leave out [optional parts] and the "..." placeholder
        optional = optional or w.startswith("[")
        if not optional and w != "...":
            kept.append(w)
        optional = optional and not w.endswith("]")
    env = {}
    while kept and re.match(r"[A-Za-z_]\w*=", kept[0]):
        name, _, value = kept.pop(0).partition("=")
        env[name] = value
    if kept[:1] == ["flock"]:
        kept = kept[2:]
    if kept[:2] == ["taskset", "-c"]:  # runs the command on the given cores: the command is what is checked
        kept = kept[3:]
    argv = [w.removeprefix(".venv/bin/") if i == 0 else w for i, w in enumerate(kept)]
    if argv and argv[0] == "python3":
        argv[0] = "python"
    return Parsed(env, argv)


def exclusion(p: Parsed) -> tuple[str, ...] | None:
    """The EXCLUDED entry of a command this test does not run (None for a runnable or unknown command)."""
    if p.program is not None:
        return None
    return next((prefix for prefix in EXCLUDED if tuple(p.argv[: len(prefix)]) == prefix), None)


def _set_flag(argv: list[str], flag: str, values: list[str], add: bool) -> list[str]:
    if flag not in argv:
        return [*argv, flag, *values] if add else argv
    i = argv.index(flag)
    j = i + 1
    while j < len(argv) and not argv[j].startswith("--"):
        j += 1
    return [*argv[: i + 1], *values, *argv[j:]]


def runnable_argv(p: Parsed, tmp_path: Path) -> tuple[list[str], list[Path]]:
    """The argv to run (this interpreter, small sizes, outputs under tmp_path) and the output files it names."""
    argv = list(p.argv)
    for flag, values in SMALL.items():
        argv = _set_flag(argv, flag, values, add=flag in ADD_WHEN_ABSENT.get(p.program, ()))
    outputs = []
    for i, w in enumerate(argv[:-1]):
        if w in OUT_FLAGS and argv[i + 1] != "-":
            argv[i + 1] = str(tmp_path / Path(argv[i + 1]).name)
            outputs.append(Path(argv[i + 1]))
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "moe-playground":
        argv[0] = str(Path(sys.executable).parent / "moe-playground")
    return argv, outputs


COMMANDS = quoted_commands()
PARSED = [(q, parse(q)) for q in COMMANDS]
RUNNABLE = [(q, p) for q, p in PARSED if p.program is not None]


# -- the tests -----------------------------------------------------------------------------------------------
def test_the_extractor_finds_the_quoted_commands():
    texts = [f"{q.where}: {q.text}" for q in COMMANDS]
    assert len(COMMANDS) >= MIN_COMMANDS, f"only {len(COMMANDS)} commands found:\n" + "\n".join(texts)
    # one of each form: a bash block, a bare block in a lesson, a loop, an inline span in prose
    assert any(t.startswith("README.md") and " -m moe_core train " in t for t in texts), texts
    assert any(t.startswith("lessons/") and "-m moe_core.scale_out.ep_bench " in t for t in texts), texts
    assert sum("ep_bench --world-size" in q.text and "[w=" in q.where for q in COMMANDS) >= 2, texts
    assert any(t.startswith("benchmarks/README.md") and t.endswith("python -m moe_core ep-bench") for t in texts)
    assert len(RUNNABLE) >= 15


def test_every_command_runs_here_or_is_excluded_for_a_stated_reason():
    unknown = [f"{q.where}: {q.text}" for q, p in PARSED if p.program is None and exclusion(p) is None]
    assert not unknown, "neither runnable nor in EXCLUDED (add a runner or an exclusion with its reason):\n" + \
        "\n".join(unknown)
    used = {exclusion(p) for _, p in PARSED}
    assert not set(EXCLUDED) - used, f"EXCLUDED entries that match no quoted command: {set(EXCLUDED) - used}"


def test_what_the_excluded_and_named_commands_start_exists():
    """`streamlit run <app>` names a file that exists; `moe-playground`, named on its own, is installed."""
    apps = [p.argv[2] for _, p in PARSED if p.argv[:2] == ["streamlit", "run"] and len(p.argv) > 2]
    assert apps and all((ROOT / app).is_file() for app in apps), apps
    assert shutil.which("streamlit", path=str(Path(sys.executable).parent)) or shutil.which("streamlit")
    if any(p.argv == ["moe-playground"] for _, p in PARSED):
        assert (Path(sys.executable).parent / "moe-playground").exists(), "moe-playground is not installed"


@pytest.mark.slow
@pytest.mark.parametrize(("quoted", "parsed"), RUNNABLE, ids=[q.where for q, _ in RUNNABLE])
def test_quoted_command_runs(quoted: Quoted, parsed: Parsed, tmp_path: Path):
    tool, require = NEEDS.get(parsed.program, (None, None))
    if tool and shutil.which(tool) is None and os.environ.get(require) != "1":
        pytest.skip(f"{tool} is not installed; set {require}=1 to make this a failure")
    argv, outputs = runnable_argv(parsed, tmp_path)
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **parsed.env}, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    shown = f"{quoted.where}: {quoted.text}\nran: {shlex.join(argv)}\n--- exit {proc.returncode}\n" \
            f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    verdict = proc.returncode == 1 and parsed.program in VERDICT_EXIT and "MISSED" in proc.stdout
    assert proc.returncode == 0 or verdict, shown
    for out in outputs:
        assert out.is_file(), f"{out.name} was not written\n{shown}"
