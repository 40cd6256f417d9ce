"""User CSV upload: valid files round-trip, every bad file gets a CSVError naming row and column."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core.training.datasets import CSVError, CSVProblem, PointDataset, parse_points_csv
from moe_core.training.datasets.csv_points import MAX_PROBLEMS


def make_csv(rows, header="x,y,label", newline="\n"):
    return newline.join([header] + [",".join(str(v) for v in r) for r in rows]) + newline


def good_rows(n=30, labels=(-1, 3, 7)):
    rng = np.random.default_rng(0)
    return [(round(float(rng.uniform(10, 50)), 4), round(float(rng.uniform(-3, 0)), 4), labels[i % len(labels)])
            for i in range(n)]


def problems_of(data, **kwargs) -> list[CSVProblem]:
    with pytest.raises(CSVError) as e:
        parse_points_csv(data, **kwargs)
    assert e.value.problems and all(isinstance(p, CSVProblem) for p in e.value.problems)
    return e.value.problems


def where(problems):
    return [(p.row, p.column) for p in problems]


def pool(ds):
    return np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])


# -- valid files -----------------------------------------------------------------------------------------
def test_classification_round_trip():
    rows = good_rows()
    ds = parse_points_csv(make_csv(rows), test_fraction=0.2, seed=1)
    assert isinstance(ds, PointDataset) and ds.task == "classification" and ds.name == "csv"
    assert (ds.n_train, ds.n_test) == (24, 6) and ds.input_dim == 2
    assert ds.n_classes == 3 and ds.group_names == ["-1", "3", "7"]
    x, y = pool(ds)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert np.allclose(x.min(axis=0), -1) and np.allclose(x.max(axis=0), 1)  # min-max to [-1, 1] per axis
    # back to original units: the same multiset of (x, y, original label)
    orig = ds.to_original(x)
    labels = np.array([-1, 3, 7])[y]
    got = sorted(zip(np.round(orig[:, 0], 3), np.round(orig[:, 1], 3), labels.tolist(), strict=True))
    want = sorted((round(a, 3), round(b, 3), c) for a, b, c in rows)
    assert np.allclose(np.array(got), np.array(want), atol=2e-3)
    assert np.allclose(ds.from_original(orig), x, atol=1e-6)


def test_regression_round_trip_standardizes_the_target():
    rows = [(i, i * i % 7, 100 + 3.5 * i) for i in range(40)]
    ds = parse_points_csv(make_csv(rows, header="x,y,target"))
    assert ds.task == "regression" and ds.n_classes == 0 and ds.y_train.dtype == np.float32
    assert ds.group_names == ["all points"] and set(np.unique(ds.group_train)) == {0}
    x, y = pool(ds)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5
    original_targets = np.sort(y.astype(np.float64) * ds.y_scale + ds.y_offset)
    assert np.allclose(original_targets, sorted(r[2] for r in rows), atol=1e-4)


def test_deterministic_split_in_the_seed():
    data = make_csv(good_rows(50))
    a, b, c = (parse_points_csv(data, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)


def test_friendly_variants_are_accepted():
    rows = [(c, a, b) for a, b, c in good_rows(12)]
    body = make_csv(rows, header=" Label , X,Y", newline="\r\n")  # any case, spaces, order, CRLF
    body = body.replace("\r\n", "\r\n,,\r\n\r\n", 1)  # spreadsheet debris: an empty row and a blank line
    ds = parse_points_csv("\ufeff" + body)
    assert ds.n_train + ds.n_test == 12 and ds.group_names == ["-1", "3", "7"]
    assert parse_points_csv(make_csv(good_rows(12)).encode("utf-8-sig")).n_classes == 3  # bytes with a BOM
    pandas_style = make_csv([(a, b, f"{c}.0") for a, b, c in good_rows(12)])  # labels written as 3.0
    assert parse_points_csv(pandas_style).group_names == ["-1", "3", "7"]
    quoted = make_csv([(f'"{a}"', b, c) for a, b, c in good_rows(12)], header='"x","y","label"')
    assert parse_points_csv(quoted).n_classes == 3


def test_column_order_follows_the_header():
    rows = [(i % 2, float(i), float(-i)) for i in range(20)]  # label, x, y
    ds = parse_points_csv(make_csv(rows, header="label,x,y"))
    orig = ds.to_original(pool(ds)[0])
    assert np.allclose(orig[:, 1], -orig[:, 0])


def test_extreme_but_finite_values_stay_finite():
    rows = [(1e308 if i % 2 else -1e308, 1e-300 * i, i % 2) for i in range(12)]
    x, _ = pool(parse_points_csv(make_csv(rows)))
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1)
    const = parse_points_csv(make_csv([(5, 5, i % 2) for i in range(12)]))  # a constant column
    assert np.all(pool(const)[0] == 0)
    reg = parse_points_csv(make_csv([(i, i, 1e308 * (-1) ** i) for i in range(12)], header="x,y,target"))
    assert np.all(np.isfinite(pool(reg)[1]))


# -- bad files: one case per kind of problem ---------------------------------------------------------------
@pytest.mark.parametrize("data", ["", "   \n\n ", b"", b"\r\n"])
def test_empty(data):
    (p,) = problems_of(data)
    assert p.row is None and "empty" in p.message


def test_header_only_is_too_few_rows():
    (p,) = problems_of("x,y,label\n")
    assert "only 0 data rows" in p.message


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x00\x01\x02\x03binary", "NUL"),
        ("x,y,label\n".encode("utf-16"), "NUL"),
        (b"x,y,label\n1,2,\xff\xfe\n", "not UTF-8"),
        (b"PK\x03\x04rest of a zip", "zip"),
        ("x,y\x00,label", "NUL"),
    ],
)
def test_binary_or_not_utf8(data, words):
    (p,) = problems_of(data)
    assert words in p.message and p.row is None


def test_latin1_file_names_the_byte():
    (p,) = problems_of("x,y,label\n1,2,3 café\n".encode("latin-1"))
    assert "0xe9" in p.message and "UTF-8" in p.message


@pytest.mark.parametrize("as_bytes", [True, False])
def test_too_large(as_bytes):
    data = make_csv(good_rows(100))
    (p,) = problems_of(data.encode() if as_bytes else data, max_bytes=100)
    assert "larger than the limit" in p.message and p.row is None


def test_missing_header():
    rows = good_rows(12)
    (p,) = problems_of(make_csv(rows[1:], header=",".join(map(str, rows[0]))))
    assert (p.row, p.column) == (1, None) and "missing header" in p.message


def test_unknown_header_names_each_column():
    problems = problems_of(make_csv(good_rows(12), header="x,why,class"))
    assert (1, "why") in where(problems) and (1, "class") in where(problems)
    assert any("missing column 'y'" in p.message for p in problems)
    assert any("'label'" in p.message and "'target'" in p.message for p in problems)


def test_duplicate_and_conflicting_headers():
    problems = problems_of(make_csv([(1, 2, 3, 4)] * 12, header="x,x,label,target"))
    assert (1, "x") in where(problems)
    assert any("both 'label' and 'target'" in p.message for p in problems)


def test_semicolon_separated_file_gets_a_hint():
    (p,) = problems_of("x;y;label\n" + "1;2;3\n" * 12)
    assert "separated by commas" in p.message and "';'" in p.message


def test_task_mismatch():
    (p,) = problems_of(make_csv(good_rows(12)), task="regression")
    assert (p.row, p.column) == (1, "label") and "'target'" in p.message


def test_wrong_number_of_fields():
    rows = [list(r) for r in good_rows(12)]
    rows[3].append(9)  # line 5: header is line 1, rows[0] is line 2
    rows[6] = rows[6][:2]  # line 8
    problems = problems_of(make_csv(rows))
    assert where(problems) == [(5, None), (8, None)]
    assert "expected 3 fields" in problems[0].message and "found 4" in problems[0].message


def test_non_numeric_names_row_and_column():
    rows = [list(r) for r in good_rows(12)]
    rows[5][0] = "abc"  # line 7
    rows[8][1] = ""  # line 10
    rows[9][0] = "1,5"  # quoted decimal comma, line 11
    data = make_csv(rows).replace("1,5,", '"1,5",')
    with pytest.raises(CSVError) as e:
        parse_points_csv(data)
    assert where(e.value.problems) == [(7, "x"), (10, "y"), (11, "x")]
    assert "row 7, column 'x': 'abc' is not a number" in str(e.value)
    assert "decimal separator" in e.value.problems[2].message


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_nan_and_inf(bad):
    rows = [list(r) for r in good_rows(12)]
    rows[2][1] = bad  # line 4
    (p,) = problems_of(make_csv(rows))
    assert (p.row, p.column) == (4, "y")
    assert "finite" in p.message or "too large" in p.message


def test_nan_target():
    rows = [(i, i, i * 0.5) for i in range(12)]
    rows[4] = (4, 4, "nan")  # line 6
    (p,) = problems_of(make_csv(rows, header="x,y,target"))
    assert (p.row, p.column) == (6, "target")


def test_too_many_rows():
    (p,) = problems_of(make_csv(good_rows(20)), max_rows=15)
    assert p.row is None and "too many rows" in p.message and "20" in p.message


def test_too_few_rows():
    (p,) = problems_of(make_csv(good_rows(9)))
    assert p.row is None and "only 9 data rows" in p.message


@pytest.mark.parametrize("bad", ["1.5", "cat", "1e3", "", "12345678901234567890"])
def test_labels_must_be_integers(bad):
    rows = [list(r) for r in good_rows(12)]
    rows[0][2] = bad  # line 2
    (p,) = problems_of(make_csv(rows))
    assert (p.row, p.column) == (2, "label")
    assert "integer" in p.message or "empty" in p.message or "too large" in p.message


def test_too_many_classes():
    rows = [(i, i, i) for i in range(12)]
    (p,) = problems_of(make_csv(rows), max_classes=10)
    assert p.column == "label" and "12 different labels" in p.message and "10" in p.message
    assert parse_points_csv(make_csv(rows), max_classes=12).n_classes == 12


def test_fewer_than_two_classes():
    (p,) = problems_of(make_csv([(i, i, 4) for i in range(12)]))
    assert p.column == "label" and "at least 2 classes" in p.message


def test_all_problems_are_collected_at_once():
    rows = [list(r) for r in good_rows(12)]
    rows[0][0], rows[1][2], rows[2] = "x1", "cat", [1]
    problems = problems_of(make_csv(rows))
    assert where(problems) == [(2, "x"), (3, "label"), (4, None)]


def test_problems_are_capped_but_counted():
    rows = [("bad", "bad", "bad")] * 40
    with pytest.raises(CSVError) as e:
        parse_points_csv(make_csv(rows))
    assert len(e.value.problems) == MAX_PROBLEMS and e.value.n_problems == 120
    assert "120 problems" in str(e.value) and "100 more" in str(e.value)


def test_stray_quote_does_not_swallow_the_rest_of_the_file():
    rows = [list(r) for r in good_rows(12)]
    data = make_csv(rows).replace("\n", '\n"', 1)  # line 2 starts with an unmatched quote
    problems = problems_of(data)
    assert where(problems) == [(2, None)]


def test_bad_arguments_are_not_csv_errors():
    for kwargs in ({"task": "clustering"}, {"max_rows": 0}, {"test_fraction": 0.9}):
        with pytest.raises(ValueError) as e:
            parse_points_csv(make_csv(good_rows()), **kwargs)
        assert not isinstance(e.value, CSVError)
    with pytest.raises(TypeError):
        parse_points_csv(12345)


# -- fuzz: anything in, a PointDataset or a CSVError out --------------------------------------------------
def check_outcome(data, **kwargs):
    try:
        ds = parse_points_csv(data, **kwargs)
    except CSVError as e:
        assert 1 <= len(e.problems) <= MAX_PROBLEMS and e.n_problems >= len(e.problems)
        assert all(isinstance(p, CSVProblem) for p in e.problems) and str(e)
        return
    assert isinstance(ds, PointDataset)
    for a in (ds.x_train, ds.x_test, ds.y_train, ds.y_test):
        assert np.all(np.isfinite(a))
    assert np.all(np.abs(ds.x_train) <= 1) and ds.n_train + ds.n_test >= 10


FIELD = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-20, 20).map(str),
    st.sampled_from(["", " ", "1.0", "-0", "1e5", "abc", '"', '"1"', "nan", "1,5", "٣", "1_0", "0x10"]),
    st.text(max_size=5),
)
HEADER = st.lists(st.sampled_from(["x", "y", "label", "target", "X", " y ", "z", ""]), min_size=1, max_size=4)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500))
def test_fuzz_text(data):
    check_outcome(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz_bytes(data):
    check_outcome(data)


@settings(max_examples=100, deadline=None)
@given(
    HEADER,
    st.lists(st.lists(FIELD, min_size=2, max_size=4), max_size=30),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from(["auto", "classification", "regression"]),
)
def test_fuzz_structured(header, rows, newline, task):
    text = newline.join([",".join(header)] + [",".join(r) for r in rows])
    check_outcome(text, task=task, max_classes=4, max_rows=25)
    check_outcome(text.encode("utf-8", "surrogatepass"), task=task)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False), st.integers(-3, 3)),
                min_size=10, max_size=40))
def test_fuzz_numeric_files_mostly_succeed(rows):
    finite = all(np.isfinite(a) and np.isfinite(b) for a, b, _ in rows)
    two_classes = len({c for *_, c in rows}) >= 2
    data = make_csv([(repr(a), repr(b), c) for a, b, c in rows])
    if finite and two_classes:
        ds = parse_points_csv(data)
        x, _ = pool(ds)
        assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1)
    else:
        check_outcome(data)
