"""The moe-playground command line: reproducible CSVs, exit codes and one-line errors, info, sweep, ep-bench.

Most tests call main([...]) in-process with tiny runs; one runs `python -m moe_core` as a real process.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

from moe_core.cli.main import main
from moe_core.layer.config import MoEConfig
from moe_core.layer.metrics import flops_per_token, parameter_counts
from moe_core.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--samples", "200", "--batch-size", "16", "--d-model", "16", "--expert-hidden", "16", "--device", "cpu"]
TINY = [*SMALL, "--experts", "4", "--quiet"]
ROUTING = ["load_cv", "max_vio", "dropped_frac", "router_entropy", "usage_entropy"]


def train(tmp_path: Path, *extra: str, steps: int = 5, name: str = "m.csv") -> tuple[int, Path]:
    out = tmp_path / name
    code = main(["train", "--steps", str(steps), *TINY, "--metrics-out", str(out), *extra])
    return code, out


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return list(rows[0]) if rows else path.read_text().strip().split(","), rows


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("moe-playground: error: ")
    return lines[0]


# -- train ---------------------------------------------------------------------------------------------
def test_same_seed_gives_a_byte_identical_csv_and_another_seed_does_not(tmp_path):
    assert train(tmp_path, "--seed", "3", name="a.csv")[0] == 0
    assert train(tmp_path, "--seed", "3", name="b.csv")[0] == 0
    assert train(tmp_path, "--seed", "4", name="c.csv")[0] == 0
    a, b, c = ((tmp_path / n).read_bytes() for n in ("a.csv", "b.csv", "c.csv"))
    assert a == b
    assert a != c
    assert b"\r" not in a


def test_classification_columns_in_fixed_order_with_loads_last(tmp_path):
    code, out = train(tmp_path)
    assert code == 0
    header, rows = read_csv(out)
    assert header[:6] == ["step", "loss", "task_loss", "aux_loss", "z_loss", "accuracy"]
    assert all(c in header for c in ROUTING)
    assert header[-4:] == ["load_0", "load_1", "load_2", "load_3"]
    assert "step_ms" not in header and "mse" not in header
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    # each step routes k*T = 2*16 slots; the load columns are the per-expert slot counts
    assert all(sum(float(r[f"load_{e}"]) for e in range(4)) == 32 for r in rows)


def test_regression_has_mse_instead_of_accuracy(tmp_path):
    code, out = train(tmp_path, "--dataset", "regimes", "--experts", "3")
    assert code == 0
    header, rows = read_csv(out)
    assert "mse" in header and "accuracy" not in header
    assert header[-3:] == ["load_0", "load_1", "load_2"]
    assert len(rows) == 5


def test_summary_json_and_checkpoint_round_trip(tmp_path, capsys):
    summary, ckpt = tmp_path / "s.json", tmp_path / "c.pt"
    code, _ = train(tmp_path, "--summary-out", str(summary), "--checkpoint-out", str(ckpt), "--top-k", "1")
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    data = json.loads(summary.read_text())
    assert data["status"] == "ok" and data["diverged"] is None
    assert data["steps"] == 5 and data["seconds"] > 0 and data["steps_per_second"] > 0
    assert data["final"]["step"] == 5 and "step_ms" in data["final"]
    assert data["test_metric"] == "accuracy" and 0 <= data["test_quality"] <= 1
    assert data["config"]["model"]["moe"]["top_k"] == 1
    assert data["parameters"] == parameter_counts(MoEConfig.from_dict(data["config"]["model"]["moe"]))
    loaded = Trainer.from_checkpoint(ckpt, device="cpu")
    assert loaded.step_count == 5
    assert loaded.model_config.moe.top_k == 1 and loaded.data_config.n_samples == 200
    assert loaded.snapshot(grid_size=8).test_loss == pytest.approx(data["test_loss"], rel=1e-6)


def test_divergence_exits_1_says_why_and_keeps_the_recorded_steps(tmp_path, capsys):
    # AdamW's decoupled decay multiplies every weight by (1 - lr * wd) = -99 per step: it blows up in a few steps
    summary = tmp_path / "s.json"
    code, out = train(tmp_path, "--lr", "100", "--weight-decay", "1", "--summary-out", str(summary), steps=50)
    assert code == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    assert "the loss became" in err or "the gradients became" in err
    header, rows = read_csv(out)
    assert header[0] == "step" and 0 < len(rows) < 50
    data = json.loads(summary.read_text())
    assert data["status"] == "diverged" and data["steps"] == len(rows)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--experts", "2", "--top-k", "3"], "top_k=3"),
        (["--router", "magic"], "invalid choice: 'magic'"),
        (["--lr", "-1"], "lr=-1.0"),
        (["--capacity-factor", "abc"], "invalid capacity factor 'abc'"),
        (["--dataset", "tokens", "--router", "soft"], "non-causal"),
        (["--router", "switch"], "top_k=2 is not allowed with router 'switch'"),
        (["--steps", "-1"], "--steps=-1"),
        (["--experts", "four"], "invalid int value: 'four'"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--metrics-out", "/no/such/folder/m.csv"], "does not exist"),
    ],
)
def test_bad_values_exit_2_with_one_line_and_no_traceback(args, fragment, capsys):
    assert main(["train", "--steps", "1", *args]) == 2
    assert fragment in one_error_line(capsys)


def test_missing_command_exits_2(capsys):
    assert main([]) == 2
    assert "required" in one_error_line(capsys)


def test_help_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "--capacity-factor" in capsys.readouterr().out


# -- info ----------------------------------------------------------------------------------------------
def info(capsys, *args: str) -> dict:
    assert main(["info", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_capacity_parameters_and_flops(capsys):
    out = info(capsys, "--experts", "6", "--top-k", "2", "--capacity-factor", "1.1", "--tokens", "100")
    assert out["capacity"] == math.ceil(1.1 * 2 * 100 / 6) == 37  # 36.67 rounds up
    cfg = MoEConfig(n_experts=6, top_k=2, capacity_factor=1.1)
    assert out["parameters"] == parameter_counts(cfg)
    assert out["parameters"]["active"] < out["parameters"]["total"]
    assert out["flops_per_token"] == pytest.approx(flops_per_token(cfg, n_tokens=100))
    assert out["config"]["model"]["moe"] == cfg.to_dict()


def test_info_tokens_default_to_the_batch_size_and_none_means_dropless(capsys):
    out = info(capsys, "--batch-size", "50", "--experts", "8", "--top-k", "1", "--capacity-factor", "1.25")
    assert out["tokens"] == 50 and out["capacity"] == math.ceil(1.25 * 1 * 50 / 8) == 8
    assert info(capsys, "--capacity-factor", "NONE")["capacity"] is None


def test_info_applies_the_language_model_checks(capsys):
    assert main(["info", "--dataset", "tokens", "--router", "expert_choice"]) == 2
    assert "non-causal" in one_error_line(capsys)


# -- sweep ---------------------------------------------------------------------------------------------
def test_sweep_writes_one_row_per_combination_with_config_columns(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    args = ["sweep", "--top-k", "1", "2", "--experts", "2", "4", "--steps", "2", *SMALL, "--quiet",
            "--aux-loss", "0.02", "--no-normalize-topk", "--metrics-out", str(out)]
    assert main(args) == 0
    header, rows = read_csv(out)
    assert len(rows) == 4
    for col in ("dataset", "router", "experts", "top_k", "capacity_factor", "aux_loss_coef", "seed",
                "loss", "aux_loss", "accuracy", "test_loss", "test_accuracy", "load_0", "load_3"):
        assert col in header
    assert {(r["experts"], r["top_k"]) for r in rows} == {("2", "1"), ("2", "2"), ("4", "1"), ("4", "2")}
    assert all(r["status"] == "ok" and r["aux_loss_coef"] == "0.02" and r["capacity_factor"] == "None"
               and r["normalize_topk"] == "False" for r in rows)
    assert [r["load_3"] == "" for r in rows] == [True, True, False, False]  # 2-expert runs have no load_3


def test_sweep_reports_invalid_runs_as_rows_and_fails_only_when_all_are_invalid(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    base = ["sweep", "--steps", "1", *SMALL, "--metrics-out", str(out), "--experts", "2"]
    assert main([*base, "--top-k", "1", "4"]) == 0
    _, rows = read_csv(out)
    assert [r["status"] for r in rows] == ["ok", "invalid"]
    assert "top_k=4" in rows[1]["error"]
    assert "[2/2] top_k=4: invalid" in capsys.readouterr().err
    assert main([*base, "--top-k", "3", "4", "--quiet"]) == 2
    assert "all 2 runs of the sweep were invalid" in one_error_line(capsys)


# -- ep-bench ------------------------------------------------------------------------------------------
def test_ep_bench_forwards_its_arguments_untouched(monkeypatch):
    seen = []
    fake = types.ModuleType("moe_core.scale_out.ep_bench")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "moe_core.scale_out.ep_bench", fake)
    assert main(["ep-bench", "--world-size", "2", "--help", "--", "x"]) == 7
    assert seen == [["--world-size", "2", "--help", "--", "x"]]


def test_ep_bench_missing_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "moe_core.scale_out.ep_bench", None)  # makes the import fail
    assert main(["ep-bench", "--world-size", "2"]) == 2
    assert "ep-bench is not available" in one_error_line(capsys)


# -- the real entry point --------------------------------------------------------------------------------
def test_python_dash_m_entry_point(tmp_path):
    # one process only (importing torch takes seconds); exit codes 1 and 2 are checked in-process above
    out = tmp_path / "m.csv"
    run = subprocess.run([sys.executable, "-m", "moe_core", "train", "--steps", "5", *SMALL, "--metrics-out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no progress bar when stderr is not a terminal
    assert run.stdout.startswith("step 5: loss ")
    assert len(out.read_text().splitlines()) == 6  # header + 5 steps
