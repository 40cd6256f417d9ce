"""`python -m moe_core inspect` on every tiny family: the long CSV, the summary JSON and the one-line errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from moe_core.cli.main import main
from moe_core.real_models import FAMILIES
from moe_core.real_models.tiny import TINY_EXPERTS, TINY_TOP_K

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_inspect_each_family(model_type, tiny_models, tmp_path):
    out, summ = tmp_path / "routing.csv", tmp_path / "s.json"
    assert main(["inspect", "--model", str(tiny_models[model_type]), "--text", "x = 5/6\nDas Rad.", "--out", str(out),
                 "--summary-json", str(summ)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == ["layer", "position", "token", "rank", "expert", "weight"]
    s = json.loads(summ.read_text())
    n_layers, T = len(s["layers"]), s["n_tokens"]
    assert len(rows) == n_layers * T * TINY_TOP_K
    assert {r["rank"] for r in rows} == {str(r) for r in range(TINY_TOP_K)}
    assert all(0 <= int(r["expert"]) < TINY_EXPERTS for r in rows)
    first = [r for r in rows if r["position"] == "0" and r["layer"] == rows[0]["layer"]]
    assert float(first[0]["weight"]) >= float(first[1]["weight"])  # rank 0 = first choice
    for layer in s["layers"]:
        assert sum(layer["load"]) == T * TINY_TOP_K and layer["max_violation"] >= 0
    assert s["sample"]["domains"] == ["code", "maths", "English prose", "German"]
    assert all(0 <= x["mutual_information"] <= math.log(4) for x in s["sample"]["layers"])


def test_inspect_text_file_and_stdout(tiny_models, tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("The train was late.", encoding="utf-8")
    assert main(["inspect", "--model", str(tiny_models["granitemoe"]), "--text-file", str(f), "--out", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "layer,position,token,rank,expert,weight" and len(lines) > 1


def test_inspect_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "config.json").write_text('{"model_type": "llama"}')
    assert main(["inspect", "--model", str(tmp_path / "dense"), "--text", "hi", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a Mixture-of-Experts model" in err
    assert main(["inspect", "--model", "x/y", "--text-file", str(tmp_path / "missing.txt"), "--out", "o.csv"]) == 2
    assert "--text-file" in capsys.readouterr().err
    assert main(["inspect", "--model", "x/y", "--text", "a", "--text-file", "f", "--out", "o.csv"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_python_m_moe_core_inspect(tiny_models, tmp_path):
    out = tmp_path / "r.csv"
    done = subprocess.run([sys.executable, "-m", "moe_core", "inspect", "--model", str(tiny_models["qwen3_moe"]),
                           "--text", "def f(x):", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert {r["layer"] for r in csv.DictReader(out.open(encoding="utf-8"))} == {"1", "2"}  # layer 0 is dense
