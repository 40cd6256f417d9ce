"""The `train` and `sweep` commands: run Trainers and write their metrics as CSV (and JSON).

The per-step CSV is reproducible to the byte: a fixed column order, Python's shortest round-trip float
text, '\\n' line ends, and no wall-time column (timing goes to the JSON summary).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from moe_core.cli.options import UsageError, build_configs, config_values, effective_values
from moe_core.layer import metrics
from moe_core.training.datasets import DATASETS, DataConfig
from moe_core.training.models import ModelConfig
from moe_core.training.snapshot import Snapshot
from moe_core.training.trainer import TrainConfig, Trainer

TIMING_KEYS = ("step_ms",)  # record keys left out of the CSV: they differ between identical runs
ROUTING_KEYS = ("load_cv", "max_vio", "dropped_frac", "router_entropy", "usage_entropy")


# -- CSV ------------------------------------------------------------------------------------------------
def _load_index(key: str) -> int | None:
    return int(key[5:]) if key.startswith("load_") and key[5:].isdigit() else None


def order_columns(keys: Iterable[str]) -> list[str]:
    """Keys in their given order, without timing keys, with load_0 ... load_{E-1} moved last (by index)."""
    keys = [k for k in keys if k not in TIMING_KEYS]
    loads = sorted((k for k in keys if _load_index(k) is not None), key=_load_index)
    return [k for k in keys if _load_index(k) is None] + loads


def expected_columns(model: ModelConfig, task: str) -> list[str]:
    """The columns of a run's records, for a header when no step was recorded (divergence at step 1)."""
    cols = ["step", "loss", "task_loss", "aux_loss", "z_loss", "mse" if task == "regression" else "accuracy"]
    if not model.dense:
        cols += [*ROUTING_KEYS, *(f"load_{e}" for e in range(model.moe.n_experts))]
    return order_columns([*cols, "lr"])


class MetricsCSV:
    """Streams one row per training step. Columns come from the first record (or `fallback` if none)."""

    def __init__(self, stream: TextIO, fallback: list[str]):
        self.stream = stream
        self.writer = csv.writer(stream, lineterminator="\n")
        self.fallback = fallback
        self.columns: list[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = order_columns(record)
            self.writer.writerow(self.columns)
        self.writer.writerow([record.get(c, "") for c in self.columns])

    def finish(self) -> None:
        if self.columns is None:
            self.columns = self.fallback
            self.writer.writerow(self.columns)
        self.stream.flush()


def write_table(rows: list[dict[str, Any]], columns: list[str], stream: TextIO) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])


def _cell(value: Any) -> Any:
    return "None" if value is None else value  # dropless capacity factor; pandas reads it as NaN


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO | None]:
    """Open an output file ('-' = stdout, None = nothing); a path that cannot be written is a UsageError."""
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout
    else:
        try:
            stream = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
        with stream:
            yield stream


def _check_writable(path: str | None) -> None:
    """Fail before training, not after it, when an output's folder is missing."""
    if path is not None and path != "-" and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: folder {Path(path).resolve().parent} does not exist")


# -- running ---------------------------------------------------------------------------------------------
def make_trainer(given: dict[str, Any]) -> Trainer:
    """Validated configs -> Trainer; any config problem (including the Trainer's own checks) is a UsageError."""
    model, data, train = build_configs(given)
    try:
        return Trainer(model, data, train)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _progress(total: int, quiet: bool, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=quiet or not sys.stderr.isatty())


def run_steps(trainer: Trainer, steps: int, bar: tqdm, on_record: Callable[[dict], None]) -> tuple[dict, float, bool]:
    """Step until `steps`, divergence or Ctrl-C. Returns (last record or {}, seconds, interrupted)."""
    quality = quality_name(trainer.task)
    last: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        for i in range(steps):
            records = trainer.step(1)
            if not records:
                break
            last = records[-1]
            on_record(last)
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{last['loss']:.4g}", **{quality: f"{last[quality]:.4g}"}, refresh=False)
    except KeyboardInterrupt:
        return last, time.perf_counter() - t0, True
    return last, time.perf_counter() - t0, False


def quality_name(task: str) -> str:
    return "mse" if task == "regression" else "accuracy"


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def configs_dict(model: ModelConfig, data: DataConfig, train: TrainConfig) -> dict[str, Any]:
    return {"model": model.to_dict(), "data": data.to_dict(), "train": asdict(train)}


def run_summary(trainer: Trainer, snap: Snapshot, last: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The JSON summary of a run: final record, test metrics, timing, configs and cost."""
    done = trainer.step_count
    return {
        "diverged": trainer.diverged, "task": trainer.task, "steps": done, "seconds": seconds,
        "steps_per_second": done / seconds if seconds > 0 else None, "final": last,
        "test_loss": snap.test_loss, "test_quality": snap.test_quality, "test_metric": quality_name(trainer.task),
        "config": configs_dict(trainer.model_config, trainer.data_config, trainer.train_config),
        "parameters": metrics.parameter_counts(trainer.model_config.moe), "flops_per_token": snap.flops,
    }


def cmd_train(args: argparse.Namespace) -> int:
    """Train one config; CSV per step, optional JSON summary and checkpoint. 0 ok, 1 diverged, 130 Ctrl-C."""
    if args.steps < 0:
        raise UsageError(f"--steps={args.steps} is out of range: allowed an integer >= 0")
    if args.checkpoint_out == "-":
        raise UsageError("--checkpoint-out needs a file name, not '-'")
    if args.metrics_out == "-" and args.summary_out == "-":
        raise UsageError("--metrics-out and --summary-out cannot both be '-' (stdout)")
    for path in (args.metrics_out, args.summary_out, args.checkpoint_out):
        _check_writable(path)
    trainer = make_trainer(config_values(args))
    quality = quality_name(trainer.task)
    with _output(args.metrics_out) as stream:
        writer = MetricsCSV(stream, expected_columns(trainer.model_config, trainer.task)) if stream else None
        with _progress(args.steps, args.quiet, "train") as bar:
            last, seconds, interrupted = run_steps(trainer, args.steps, bar, writer.write if writer else _ignore)
        if writer:
            writer.finish()
    snap = trainer.snapshot(grid_size=8)
    if args.summary_out:
        status = "interrupted" if interrupted else ("diverged" if trainer.diverged else "ok")
        summary = {"status": status, "steps_requested": args.steps, **run_summary(trainer, snap, last, seconds),
                   "metrics_out": args.metrics_out, "checkpoint_out": args.checkpoint_out}
        with _output(args.summary_out) as out:
            json.dump(_finite(summary), out, indent=2, allow_nan=False)
            out.write("\n")
    if args.checkpoint_out:
        trainer.save_checkpoint(args.checkpoint_out)
    line = (f"step {trainer.step_count}: loss {last.get('loss', math.nan):.4g}, {quality} "
            f"{last.get(quality, math.nan):.4g}; test loss {snap.test_loss:.4g}, test {quality} "
            f"{snap.test_quality:.4g} ({seconds:.1f} s)")
    print(line, file=sys.stderr if "-" in (args.metrics_out, args.summary_out) else sys.stdout)
    if trainer.diverged:
        print(f"moe-playground: training diverged: {trainer.diverged}", file=sys.stderr)
        return 1
    if interrupted:
        print("moe-playground: interrupted; the steps so far were written", file=sys.stderr)
        return 130
    return 0


def _ignore(record: dict) -> None:
    pass


# -- sweep -----------------------------------------------------------------------------------------------
def sweep_grid(given: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the given flag values, in the order of OPTIONS (the last varies fastest)."""
    return [dict(zip(given, combo, strict=True)) for combo in itertools.product(*given.values())]


def sweep_columns(rows: list[dict[str, Any]], config_cols: list[str]) -> list[str]:
    """run, status, config columns, steps, record metrics, test metrics, timing, error, then loads."""
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen and k not in TIMING_KEYS]
    tail = ["seconds", "steps_per_second", "error"]

    def rank(key: str) -> tuple[int, int]:
        if key in ("run", "status"):
            return 0, ("run", "status").index(key)
        if key in config_cols:
            return 1, config_cols.index(key)
        if key == "steps":
            return 2, 0
        if _load_index(key) is not None:
            return 7, _load_index(key)
        if key in tail:
            return 6, tail.index(key)
        if key.startswith("test_"):
            return 5, seen.index(key)
        return 3, seen.index(key)

    return sorted(seen, key=rank)


def _sweep_one(run: dict[str, Any], steps: int, quiet: bool, label: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    try:
        trainer = make_trainer(run)
    except UsageError as err:
        return {"status": "invalid", "error": str(err)}
    with _progress(steps, quiet, label) as bar:
        last, seconds, interrupted = run_steps(trainer, steps, bar, _ignore)
    if interrupted:
        raise KeyboardInterrupt
    snap = trainer.snapshot(grid_size=8)
    quality = quality_name(trainer.task)
    row.update(status="diverged" if trainer.diverged else "ok", steps=trainer.step_count)
    row.update({k: v for k, v in last.items() if k not in ("step", "lr")})  # lr is a config column
    row.update({"test_loss": snap.test_loss, f"test_{quality}": snap.test_quality, "seconds": seconds,
                "steps_per_second": trainer.step_count / seconds if seconds > 0 else ""})
    if trainer.diverged:
        row["error"] = trainer.diverged
    return row


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the grid of the multi-valued flags; one CSV row per run. 2 when every run was invalid."""
    if args.steps < 1:
        raise UsageError(f"--steps={args.steps} is out of range: allowed an integer >= 1")
    _check_writable(args.metrics_out)
    given = {k: v if isinstance(v, list) else [v] for k, v in config_values(args).items()}  # on/off flags: 1 value
    grid = sweep_grid(given)
    swept = [k for k, v in given.items() if len(v) > 1]
    config_cols = list(effective_values({}))  # names differ from every record key (aux_loss_coef, not aux_loss)
    rows: list[dict[str, Any]] = []

    def save(final: bool) -> None:
        if not rows or (args.metrics_out is None and not final):
            return
        with _output(args.metrics_out or "-") as stream:
            write_table(rows, sweep_columns(rows, config_cols), stream)

    try:
        for i, run in enumerate(grid, 1):
            label = ", ".join(f"{k}={run[k]}" for k in swept) or "single run"
            row = {"run": i, **effective_values(run), **_sweep_one(run, args.steps, args.quiet, f"[{i}/{len(grid)}]")}
            rows.append(row)
            save(final=False)  # rewritten after each run: an interrupted sweep keeps its finished rows
            if not args.quiet:
                print(f"[{i}/{len(grid)}] {label}: {_describe(row)}", file=sys.stderr)
    except KeyboardInterrupt:
        save(final=True)
        print(f"moe-playground: interrupted after {len(rows)} of {len(grid)} runs", file=sys.stderr)
        return 130
    save(final=True)
    invalid = [r for r in rows if r["status"] == "invalid"]
    if len(invalid) == len(rows):
        raise UsageError(f"all {len(rows)} runs of the sweep were invalid; the first: {invalid[0]['error']}")
    return 0


def _describe(row: dict[str, Any]) -> str:
    if row["status"] == "invalid":
        return f"invalid: {row['error']}"
    quality = "mse" if DATASETS[row["dataset"]].task == "regression" else "accuracy"
    text = (f"loss {row.get('loss', math.nan):.4g}, test loss {row['test_loss']:.4g}, "
            f"test {quality} {row[f'test_{quality}']:.4g} ({row['seconds']:.1f} s)")
    return text + (" [diverged]" if row["status"] == "diverged" else "")
