"""The [transform] section: Polars type names, and rename -> cast -> add -> drop applied in that order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from engine.config import TransformSection
from engine.errors import ConfigError
from engine.transform import _SIMPLE_DTYPES, build_transform, parse_dtype

RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.mark.parametrize(("text", "dtype"), [
    ("Decimal(12,2)", pl.Decimal(12, 2)),
    (" decimal( 38 , 0 ) ", pl.Decimal(38, 0)),
    ("Datetime(UTC)", pl.Datetime("us", time_zone="UTC")),
    ("datetime(Europe/Paris)", pl.Datetime("us", time_zone="Europe/Paris")),
    ("Datetime", pl.Datetime("us")),
    ("Int64", pl.Int64()),
    ("UINT8", pl.UInt8()),
    ("String", pl.String()),
    ("Utf8", pl.String()),
    ("Bool", pl.Boolean()),
    ("Date", pl.Date()),
    ("Float32", pl.Float32()),
])
def test_parse_dtype(text: str, dtype: pl.DataType) -> None:
    parsed = parse_dtype(text)
    assert parsed == dtype
    if isinstance(dtype, pl.Datetime):
        assert isinstance(parsed, pl.Datetime) and parsed.time_zone == dtype.time_zone


def test_the_decimal_keeps_precision_and_scale() -> None:
    parsed = parse_dtype("Decimal(12,2)")
    assert isinstance(parsed, pl.Decimal) and (parsed.precision, parsed.scale) == (12, 2)


@pytest.mark.parametrize("text", ["Int128", "Decimal(12)", "Datetime()", "List(Int64)", ""])
def test_an_unknown_type_lists_the_choices(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_dtype(text)
    message = str(err.value)
    assert message.startswith(f"unknown type {text!r}; use one of ")
    assert ", ".join(sorted(_SIMPLE_DTYPES)) in message
    assert message.endswith("Decimal(p,s), Datetime(UTC)")


def run(section: TransformSection, frame: pl.DataFrame) -> pl.DataFrame:
    return build_transform(section, RULES)(frame.lazy()).collect()


def test_no_steps_leave_the_frame_as_it_is() -> None:
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert run(TransformSection(), frame).equals(frame)


def test_rename_then_cast_then_add_then_drop() -> None:
    section = TransformSection(
        rename={"amount_text": "amount", "n": "qty"},
        cast={"amount": "Decimal(10,2)", "qty": "Int32"},  # casts name the renamed columns
        add={"total": "amount * qty", "qty": "qty + 1", "from_dropped": "legacy || '!'"},  # sees the casts
        drop=["legacy"],  # after add: an added column may use a dropped one
    )
    frame = pl.DataFrame({"amount_text": ["1.50", "2.25"], "n": ["2", "3"], "legacy": ["a", "b"]})
    out = run(section, frame)
    assert out.columns == ["amount", "qty", "total", "from_dropped"]
    assert out.schema["amount"] == pl.Decimal(10, 2)
    assert out.schema["qty"] == pl.Int32
    assert out["amount"].to_list() == [Decimal("1.50"), Decimal("2.25")]
    assert out["qty"].to_list() == [3, 4]  # replaced by the addition, computed from the cast value
    assert [Decimal(v) for v in out["total"].cast(pl.String).to_list()] == [Decimal("3.00"), Decimal("6.75")]
    assert out["from_dropped"].to_list() == ["a!", "b!"]


def test_additions_all_read_the_frame_before_any_addition() -> None:
    section = TransformSection(add={"a": "a * 10", "b": "a + 1"})
    out = run(section, pl.DataFrame({"a": [1, 2]}))
    assert out.to_dict(as_series=False) == {"a": [10, 20], "b": [2, 3]}


def test_a_cast_that_fails_on_a_value_raises_when_run() -> None:
    section = TransformSection(cast={"n": "Int64"})
    with pytest.raises(pl.exceptions.InvalidOperationError):
        run(section, pl.DataFrame({"n": ["1", "one"]}))


def test_every_bad_entry_is_reported_at_once() -> None:
    section = TransformSection(cast={"price": "Money", "qty": "Int32", "when": "Datetime(+)x"},
                               add={"broken": "SELECT FROM (", "fine": "qty * 2", "also_broken": "qty +"})
    with pytest.raises(ConfigError) as err:
        build_transform(section, RULES)
    assert err.value.path == "transform"
    problems = err.value.problems
    assert [p.split(":", 1)[0] for p in problems] == [
        "`transform.cast.price`", "`transform.cast.when`", "`transform.add.broken`", "`transform.add.also_broken`"]
    assert problems[0].startswith("`transform.cast.price`: unknown type 'Money'; use one of")
    assert problems[2].startswith("`transform.add.broken`: not a valid SQL expression (")
    assert "4 problem(s)" in str(err.value)


def test_a_valid_section_builds() -> None:
    section = TransformSection(cast={"qty": "Int32"}, add={"fine": "qty * 2"})
    out = run(section, pl.DataFrame({"qty": [1.0, 2.0]}))
    assert out.to_dict(as_series=False) == {"qty": [1, 2], "fine": [2, 4]}
