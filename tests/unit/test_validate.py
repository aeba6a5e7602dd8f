"""split_rows: which rows load, which go to the quarantine with every failed check, and when the job stops."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
import pytest

from engine.checks import compile_schema
from engine.quarantine import BAD_ROWS_SCHEMA, ROW_INDEX
from engine.validate import Rules, SchemaMismatch, Verdict, _pandera_verdict, split_rows

SCHEMA = pa.DataFrameSchema({
    "id": pa.Column(pl.Int64, unique=True),
    "qty": pa.Column(pl.Int64, [pa.Check.ge(0), pa.Check.le(100)], nullable=True),
    "status": pa.Column(pl.String, pa.Check.isin(["new", "paid"])),
    "code": pa.Column(pl.String, [pa.Check.str_matches(r"[A-Z]{3}"), pa.Check.str_length(3, 3)], nullable=True),
})

# Row 0 passes; 1 fails qty >= 0 and isin; 2 passes (nulls pass value checks); 3 fails qty <= 100 only;
# 4 fails code's pattern and length; 5 passes; 6 and 7 share an id (field_uniqueness on both).
FRAME = pl.DataFrame({
    "id": [1, 2, 3, 4, 5, 6, 7, 7],
    "qty": [5, -1, None, 200, 7, 100, 0, 1],
    "status": ["new", "lost", "paid", "paid", "new", "paid", "new", "new"],
    "code": ["ABC", "XYZ", None, "XYZ", "abcd", "QRS", "ABC", "DEF"],
})
EXPECTED = {
    1: ["greater_than_or_equal_to(0)", "isin(['new', 'paid'])"],
    3: ["less_than_or_equal_to(100)"],
    4: ["str_matches('[A-Z]{3}')", "str_length(3, 3)"],
    6: ["field_uniqueness"],
    7: ["field_uniqueness"],
}


def compiled_rules() -> Rules:
    compiled = compile_schema(SCHEMA)
    assert compiled is not None, "the schema is made of built-in checks only: it must compile"
    return Rules(SCHEMA, compiled)


def verdicts(verdict: Verdict) -> dict[int, list[str]]:
    """Row -> its reasons, in a fixed order (check names hold ", ", so `checks` cannot be split back)."""
    return {row: sorted(reason.split("; "))
            for row, reason in zip(verdict.bad_rows[ROW_INDEX].to_list(), verdict.bad_rows["reason"].to_list(),
                                   strict=True)}


def checks_of(verdict: Verdict) -> dict[int, str]:
    return dict(zip(verdict.bad_rows[ROW_INDEX].to_list(), verdict.bad_rows["checks"].to_list(), strict=True))


def test_no_rules_keep_every_row() -> None:
    verdict = split_rows(FRAME, None)
    assert verdict.good.equals(FRAME)
    assert verdict.bad_rows.height == 0 and verdict.bad_rows.schema == pl.Schema(BAD_ROWS_SCHEMA)
    assert verdict.failures.height == 0
    assert verdict.keep is None


def test_rows_passing_every_check_are_all_kept() -> None:
    clean = FRAME.filter(pl.col("id").is_in([1, 3, 6]))
    verdict = split_rows(clean, compiled_rules())
    assert verdict.good.equals(clean)
    assert verdict.bad_rows.height == 0


@pytest.mark.parametrize("path", ["compiled", "pandera"])
def test_each_failing_row_appears_once_with_every_check(path: str) -> None:
    verdict = split_rows(FRAME, compiled_rules()) if path == "compiled" else _pandera_verdict(FRAME, SCHEMA)
    found = checks_of(verdict)
    assert sorted(found) == sorted(EXPECTED)
    for row, checks in EXPECTED.items():
        assert found[row] in {", ".join(checks), ", ".join(reversed(checks))}, row
    assert verdict.bad_rows[ROW_INDEX].is_duplicated().any() is False
    assert verdict.bad_rows.schema == pl.Schema(BAD_ROWS_SCHEMA)
    one = verdict.bad_rows.row(by_predicate=pl.col(ROW_INDEX) == 1, named=True)
    assert one["columns"] == "qty, status"
    reasons = sorted(one["reason"].split("; "))
    assert reasons == ["qty: greater_than_or_equal_to(0) failed for value -1",
                       "status: isin(['new', 'paid']) failed for value lost"]
    four = verdict.bad_rows.row(by_predicate=pl.col(ROW_INDEX) == 4, named=True)
    assert four["columns"] == "code"
    assert sorted(four["reason"].split("; ")) == ["code: str_length(3, 3) failed for value abcd",
                                                  "code: str_matches('[A-Z]{3}') failed for value abcd"]


@pytest.mark.parametrize("path", ["compiled", "pandera"])
def test_keep_marks_exactly_the_loaded_rows(path: str) -> None:
    verdict = split_rows(FRAME, compiled_rules()) if path == "compiled" else _pandera_verdict(FRAME, SCHEMA)
    assert verdict.keep is not None
    assert verdict.keep.to_list() == [i not in EXPECTED for i in range(FRAME.height)]
    assert verdict.good.equals(FRAME.filter(verdict.keep))
    assert verdict.good["id"].to_list() == [1, 3, 6]


def test_failures_hold_one_row_per_failed_check_and_column() -> None:
    verdict = split_rows(FRAME, compiled_rules())
    counted = verdict.failures.group_by("check", "column").len().sort("check")
    assert dict(zip(counted["check"].to_list(), counted["len"].to_list(), strict=True)) == {
        "field_uniqueness": 2, "greater_than_or_equal_to(0)": 1, "isin(['new', 'paid'])": 1,
        "less_than_or_equal_to(100)": 1, "str_length(3, 3)": 1, "str_matches('[A-Z]{3}')": 1}


def test_the_compiled_path_is_the_one_taken() -> None:
    rules = compiled_rules()
    assert rules.compiled is not None and rules.compiled.applies_to(FRAME)
    # A compiled schema that checks nothing sees no failure: proof split_rows did not ask Pandera.
    empty = Rules(SCHEMA, type(rules.compiled)((), rules.compiled.dtypes, rules.compiled.coerce))
    assert split_rows(FRAME, empty).bad_rows.height == 0


@pytest.mark.parametrize("frame", [
    FRAME,
    FRAME.slice(3, 3),
    FRAME.with_columns(pl.lit(None, pl.Int64).alias("qty")),
    FRAME.with_columns(pl.col("status").str.to_uppercase()),
    FRAME.with_columns(pl.col("id") % 2),
])
def test_compiled_and_pandera_give_the_same_verdicts(frame: pl.DataFrame) -> None:
    compiled = split_rows(frame, compiled_rules())
    reference = _pandera_verdict(frame, SCHEMA)
    assert verdicts(compiled) == verdicts(reference)
    assert compiled.good.equals(reference.good)
    keep = compiled.keep if compiled.keep is not None else pl.Series([True] * frame.height)
    assert keep.to_list() == (reference.keep.to_list() if reference.keep is not None else [True] * frame.height)


@pytest.mark.parametrize("path", ["compiled", "pandera"])
def test_a_missing_column_stops_the_job(path: str) -> None:
    frame = FRAME.drop("status")
    with pytest.raises(SchemaMismatch) as err:
        split_rows(frame, compiled_rules()) if path == "compiled" else _pandera_verdict(frame, SCHEMA)
    assert "column_in_dataframe (status)" in str(err.value)
    assert str(err.value).startswith("the data does not fit the validation schema")


def test_a_wrong_dtype_stops_the_job() -> None:
    frame = FRAME.with_columns(pl.col("qty").cast(pl.String))
    assert not compiled_rules().compiled.applies_to(frame)  # type: ignore[union-attr]
    with pytest.raises(SchemaMismatch, match="qty"):
        split_rows(frame, compiled_rules())
