"""`moe-playground inspect`: the routing of a pretrained MoE model on a text, as a long CSV and a JSON summary.

    python -m moe_core inspect --model allenai/OLMoE-1B-7B-0924 --text "def f(x): return x" --out routing.csv \
        --summary-json summary.json

routing.csv has one row per (layer, position, rank): layer, position, token, rank, expert, weight (the gate weight
the model applies; rank 0 = first choice). The summary holds per-layer load, MaxVio and router entropy, and
I(expert; domain) of the shipped multi-domain sample. On the command line the user runs their own machine: any
Hub id or local folder may be named (the classroom allow-list is the page's), but remote code is still never run
and the memory check still applies.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

CLI_MAX_CHARS = 100_000
COLUMNS = ["layer", "position", "token", "rank", "expert", "weight"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="ID_OR_PATH",
                        help="Hugging Face model id or local folder of a supported MoE family")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="TEXT", help="the text to route")
    text.add_argument("--text-file", metavar="F", help="read the text from this UTF-8 file")
    parser.add_argument("--out", required=True, metavar="CSV", help="long-format routing CSV ('-' = stdout)")
    parser.add_argument("--summary-json", metavar="S", help="per-layer summary as JSON ('-' = stdout)")


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return args.text
    try:
        return Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--text-file {args.text_file}: {err}") from None


def _open(path: str):
    return sys.stdout if path == "-" else open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115


def run(args: argparse.Namespace) -> int:
    """Load, route, write. Raises ValueError (RefusedError included) with a one-line message on bad input."""
    from moe_core.real_models import Policy, load_model, route_text, specialisation, summary

    text = _read_text(args)
    policy = Policy(allowed=(args.model,), allow_local_paths=True, max_chars=CLI_MAX_CHARS, source="command line")
    loaded = load_model(args.model, policy)
    routing = route_text(loaded, text, policy.max_chars)
    f = _open(args.out)
    try:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(routing.rows())
    finally:
        if f is not sys.stdout:
            f.close()
    if args.summary_json:
        result = summary(routing, specialisation(loaded))
        f = _open(args.summary_json)
        try:
            json.dump(result, f, indent=2)
            f.write("\n")
        finally:
            if f is not sys.stdout:
                f.close()
    return 0
