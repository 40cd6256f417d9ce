"""Bring your own points: parse an uploaded CSV into a PointDataset, or explain everything wrong with it.

Expected format, a header and one point per line:

    x,y,label          (classification: label is any integer, e.g. -1 / 1 or 3 / 7 / 9)
    0.5,1.25,1
    x,y,target         (regression: target is any finite number)
    0.5,1.25,3.7

Header names are case-insensitive and may come in any order. Blank lines and lines of empty fields (",,")
are skipped. Row numbers in messages are line numbers in the file (the header is row 1), as an editor or
spreadsheet shows them. Instead of stopping at the first problem, validation collects up to MAX_PROBLEMS of
them so a student can fix the file in one go; they arrive as CSVError.problems.

Scaling: each input axis is min-max rescaled to [-1, 1] (the models and the routing map expect that), and a
regression target is standardized to mean 0 and variance 1. Both maps are stored in the PointDataset
(x_offset / x_scale, y_offset / y_scale) so the UI can show original units. Labels are remapped to
0..n-1 in increasing order; group_names keeps the original labels as strings.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass

import numpy as np

from moe_core.training.datasets.base import PointDataset, split_points

MAX_PROBLEMS = 20  # problems reported at most (the total is still counted)
MIN_ROWS = 10  # data rows needed: fewer cannot be split into a useful train and test set
MAX_LABEL_DIGITS = 15  # labels are identifiers, not quantities; this keeps them exact in a float64
TASK_CHOICES = ("auto", "classification", "regression")

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?(\d+)(?:\.0*)?", re.ASCII)  # "3", "-1", and "3.0" as pandas writes it
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+", re.ASCII)
_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class CSVProblem:
    row: int | None  # line number in the file, header = 1; None = about the whole file
    column: str | None  # column name from the header; None = the whole row or file
    message: str

    def __str__(self) -> str:
        where = ([f"row {self.row}"] if self.row is not None else []) + (
            [f"column {self.column!r}"] if self.column is not None else []
        )
        return f"{', '.join(where)}: {self.message}" if where else self.message


class CSVError(ValueError):
    """The CSV cannot be used; `.problems` lists what is wrong (at most MAX_PROBLEMS), `.n_problems` counts all."""

    def __init__(self, problems: list[CSVProblem], n_problems: int | None = None) -> None:
        self.problems = list(problems)
        self.n_problems = max(n_problems or 0, len(self.problems))
        head = "1 problem" if self.n_problems == 1 else f"{self.n_problems} problems"
        lines = [f"the CSV file cannot be used ({head}):"] + [f"  {p}" for p in self.problems]
        if self.n_problems > len(self.problems):
            lines.append(f"  ... and {self.n_problems - len(self.problems)} more")
        super().__init__("\n".join(lines))


class _Problems:
    """Collects problems: keeps the first MAX_PROBLEMS, counts all."""

    def __init__(self) -> None:
        self.items: list[CSVProblem] = []
        self.total = 0

    def add(self, row: int | None, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(CSVProblem(row, column, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise CSVError(self.items, self.total)


def _show(raw: str) -> str:
    """A field as quoted in a message, shortened if long."""
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def _fatal(message: str) -> CSVError:
    return CSVError([CSVProblem(None, None, message)])


# -- decoding: bytes or str -> text -----------------------------------------------------------------------
def _to_text(data: bytes | str, max_bytes: int) -> str:
    limit = f"{max_bytes:,} bytes"
    if isinstance(data, str):
        if len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes:
            raise _fatal(f"the file is larger than the limit of {limit}")
        text = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise _fatal(f"the file is {len(raw):,} bytes, larger than the limit of {limit}")
        if raw.startswith(b"PK\x03\x04"):
            raise _fatal("this is a zip file (an Excel .xlsx workbook?), not CSV text: "
                         "in your spreadsheet use 'Save as' > 'CSV UTF-8'")
        if b"\x00" in raw:
            raise _fatal("the file contains NUL bytes: it is a binary file or UTF-16 text, not a UTF-8 CSV; "
                         "save it as 'CSV UTF-8'")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _fatal(f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} cannot be "
                         "decoded): it may be binary or use another encoding; save it as 'CSV UTF-8'") from None
    else:
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    if "\x00" in text:
        raise _fatal("the text contains NUL characters: it is a binary file, not a CSV")
    text = text.removeprefix("\ufeff")  # the byte-order mark Excel puts in front of 'CSV UTF-8'
    if not text.strip():
        raise _fatal("the file is empty: expected a header line 'x,y,label' or 'x,y,target' and data rows")
    return text


# -- one field -----------------------------------------------------------------------------------------------
def _parse_number(raw: str) -> tuple[float | None, str]:
    """(value, "") or (None, what is wrong)."""
    s = raw.strip()
    if not s:
        return None, "the value is empty"
    if _NON_FINITE.fullmatch(s):
        return None, f"{_show(s)} is not a finite number (NaN and infinity are not allowed)"
    if not _NUMBER.fullmatch(s):
        hint = "; use a dot as the decimal separator" if _DECIMAL_COMMA.fullmatch(s) else ""
        return None, f"{_show(s)} is not a number{hint}"
    v = float(s)
    if not math.isfinite(v):
        return None, f"{_show(s)} is too large (beyond the range of a 64-bit float)"
    return v, ""


def _parse_label(raw: str) -> tuple[int | None, str]:
    s = raw.strip()
    if not s:
        return None, "the label is empty"
    m = _INTEGER.fullmatch(s)
    if m is None:
        return None, f"label {_show(s)} is not an integer"
    if len(m.group(1).lstrip("0")) > MAX_LABEL_DIGITS:
        return None, f"label {_show(s)} is too large (at most {MAX_LABEL_DIGITS} digits)"
    return int(s.split(".")[0]), ""


# -- the header ----------------------------------------------------------------------------------------------
def _check_header(fields: list[str], row: int, task: str, problems: _Problems) -> tuple[list[str], str]:
    """Normalized column names and the task ("classification" | "regression"); problems are recorded."""
    cols = [f.strip().lower() for f in fields]
    expected = "'x,y,label' (classification) or 'x,y,target' (regression)"
    if len(cols) == 1 and (sep := next((c for c in ";\t|" if c in cols[0]), None)):
        problems.add(row, None, f"columns must be separated by commas, found {sep!r}; expected a first line "
                                f"{expected}")
        return cols, task
    if all(_parse_number(f)[0] is not None for f in fields):
        problems.add(row, None, f"missing header: the first line {_show(','.join(fields))} is data; "
                                f"add a first line {expected}")
        return cols, task
    for i, c in enumerate(cols):
        if not c:
            problems.add(row, None, f"column {i + 1} has no name; expected columns {expected}")
        elif c not in ("x", "y", "label", "target"):
            problems.add(row, c, f"unknown column {c!r}; expected columns {expected}")
        elif cols.index(c) != i:
            problems.add(row, c, f"column {c!r} appears more than once")
    for c in ("x", "y"):
        if c not in cols:
            problems.add(row, None, f"missing column {c!r}; expected columns {expected}")
    has_label, has_target = "label" in cols, "target" in cols
    if has_label and has_target:
        problems.add(row, None, "both 'label' and 'target' columns: keep 'label' for classification "
                                "or 'target' for regression")
    elif not (has_label or has_target):
        problems.add(row, None, f"missing column 'label' (classification) or 'target' (regression); "
                                f"expected columns {expected}")
    found = "classification" if has_label else "regression"
    if task != "auto" and (has_label or has_target) and found != task:
        want, got = ("label", "target") if task == "classification" else ("target", "label")
        problems.add(row, got, f"task is {task!r}, so this column must be named {want!r}")
    return cols, (found if task == "auto" else task)


# -- the whole file ------------------------------------------------------------------------------------------
def parse_points_csv(
    data: bytes | str,
    *,
    task: str = "auto",
    max_bytes: int = 2_000_000,
    max_rows: int = 20_000,
    max_classes: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> PointDataset:
    """Parse CSV text or bytes with columns x, y and label (or target) into a PointDataset.

    Raises CSVError listing every problem found (up to MAX_PROBLEMS); see the module docstring for the
    format and the scaling. `task` is "auto" (decided by the header), "classification" or "regression".
    Bad arguments (not bad data) raise a plain ValueError / TypeError.
    """
    if task not in TASK_CHOICES:
        raise ValueError(f"task={task!r} is out of range: allowed one of {', '.join(TASK_CHOICES)}")
    for name, v in (("max_bytes", max_bytes), ("max_rows", max_rows), ("max_classes", max_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "max_classes" else 1):
            raise ValueError(f"{name}={v!r} is out of range: allowed a positive integer")
    if not 0.05 <= test_fraction <= 0.5:
        raise ValueError(f"test_fraction={test_fraction!r} is out of range: allowed a number from 0.05 to 0.5")

    text = _to_text(data, max_bytes)
    problems = _Problems()

    # Each line is parsed on its own (csv handles quoting within it): a stray quote cannot swallow the rest of
    # the file, and row numbers are exactly editor line numbers. Lines end with \r\n, \r or \n.
    header: list[str] | None = None
    header_row = 0
    rows: list[tuple[int, list[str]]] = []
    n_data = 0
    for line_no, line in enumerate(_NEWLINE.split(text), start=1):
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line]))
        except csv.Error as e:  # e.g. a field longer than csv.field_size_limit()
            problems.add(line_no, None, f"this line cannot be read as CSV: {e}")
            continue
        if not "".join(fields).strip():
            continue  # ",," as spreadsheets leave at the end
        if header is None:
            header, header_row = fields, line_no
            continue
        n_data += 1
        if n_data <= max_rows:
            rows.append((line_no, fields))
    if header is None:
        problems.raise_if_any()
        raise _fatal("the file is empty: expected a header line 'x,y,label' or 'x,y,target' and data rows")

    cols, task = _check_header(header, header_row, task, problems)
    problems.raise_if_any()  # without a usable header the rows cannot be interpreted

    if n_data > max_rows:
        problems.add(None, None, f"too many rows: {n_data:,} data rows, the limit is {max_rows:,}")
    elif n_data < MIN_ROWS:
        problems.add(None, None, f"only {n_data} data row{'s' if n_data != 1 else ''}; "
                                 f"at least {MIN_ROWS} are needed")

    third = "label" if task == "classification" else "target"
    ix, iy, i3 = cols.index("x"), cols.index("y"), cols.index(third)
    xy = np.empty((len(rows), 2), dtype=np.float64)
    target = np.empty(len(rows), dtype=np.float64)
    labels: list[int] = []
    for k, (line, fields) in enumerate(rows):
        if len(fields) != len(cols):
            problems.add(line, None, f"expected {len(cols)} fields ({','.join(cols)}), found {len(fields)}")
            continue
        for j, (col, i) in enumerate((("x", ix), ("y", iy))):
            v, why = _parse_number(fields[i])
            if v is None:
                problems.add(line, col, why)
            else:
                xy[k, j] = v
        if task == "classification":
            lab, why = _parse_label(fields[i3])
            if lab is None:
                problems.add(line, third, why)
            else:
                labels.append(lab)
        else:
            v, why = _parse_number(fields[i3])
            if v is None:
                problems.add(line, third, why)
            else:
                target[k] = v

    if task == "classification" and labels:
        distinct = sorted(set(labels))
        if len(distinct) > max_classes:
            problems.add(None, "label", f"{len(distinct)} different labels, at most {max_classes} are allowed")
        elif len(distinct) < 2:
            problems.add(None, "label", f"every row has label {distinct[0]}; a classifier needs at least 2 classes")
    problems.raise_if_any()

    x, x_offset, x_scale = _minmax(xy)
    meta = dict(name="csv", x_offset=x_offset, x_scale=x_scale, task=task)
    if task == "classification":
        distinct = sorted(set(labels))
        y = np.searchsorted(np.array(distinct), np.array(labels)).astype(np.int64)
        meta.update(n_classes=len(distinct), group_names=[str(v) for v in distinct], description=(
            f"Your points: {len(rows)} rows, {len(distinct)} classes."))
        group = y
    else:
        y, y_offset, y_scale = _standardize(target)
        meta.update(n_classes=0, group_names=["all points"], y_offset=y_offset, y_scale=y_scale,
                    description=f"Your points: {len(rows)} rows, a numeric target.")
        group = np.zeros(len(rows), dtype=np.int64)
    return split_points(x, y, group, test_fraction=test_fraction, rng=np.random.default_rng(seed), **meta)


def _minmax(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rescale each column to [-1, 1]: x = (raw - offset) / scale, offset = mid-range, scale = half-range.

    Halves are taken before subtracting so even values near the float64 limit cannot overflow; a constant
    column gets scale 1 (it becomes all zeros).
    """
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    offset = lo / 2 + hi / 2
    scale = hi / 2 - lo / 2
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip((xy - offset) / scale, -1.0, 1.0), offset, scale


def _standardize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(y - mean) / std, computed on y / max|y| so huge targets cannot overflow; a constant target gets std 1."""
    m = float(np.abs(y).max())
    m = m if m > 0 else 1.0
    u = y / m
    mean, std = float(u.mean()), float(u.std())
    std = std if std > 0 else 1.0
    return (u - mean) / std, mean * m, std * m
