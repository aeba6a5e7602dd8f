"""Compiled checks give exactly Pandera's verdicts: differential tests on generated batches."""

from __future__ import annotations

import decimal
from pathlib import Path

import pandera.polars as pa
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.checks import compile_schema
from engine.validate import Rules, _pandera_verdict, load_schema, split_rows

ROOT = Path(__file__).resolve().parents[2]
ORDERS = load_schema(ROOT / "rules", "orders.schema:Orders")

statuses = st.sampled_from(["new", "paid", "lost", "PAID", "", "shipped"])
emails = st.one_of(st.none(), st.sampled_from(["a@b.com", "bad", "x@y.c", "u@ex.org", " a@b.com", "é@ü.de"]))
amounts = st.one_of(st.none(), st.decimals(min_value=-10, max_value=2_000_000, places=2, allow_nan=False))
row = st.fixed_dictionaries({
    "id": st.integers(-3, 10**12), "customer_id": st.one_of(st.none(), st.integers(-1, 9)), "status": statuses,
    "amount": amounts, "currency": st.sampled_from(["EUR", "usd", "XXX", "CHF"]), "email": emails,
    "note": st.one_of(st.none(), st.text(max_size=5), st.just("x" * 2001)),
})


def frame_of(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"id": pl.Int64, "customer_id": pl.Int32, "status": pl.String,
                                      "amount": pl.Decimal(12, 2), "currency": pl.String, "email": pl.String,
                                      "note": pl.String})


def verdict_key(v):  # type: ignore[no-untyped-def]
    return sorted(zip(v.bad_rows["__engine_row"].to_list(), v.bad_rows["checks"].to_list(), strict=True))


def test_the_reference_schemas_compile() -> None:
    assert ORDERS.compiled is not None
    assert load_schema(ROOT / "rules", "perf_orders.schema:PerfOrders").compiled is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=1, max_size=40))
def test_compiled_checks_agree_with_pandera(rows: list[dict[str, object]]) -> None:
    rows = [{**r, "amount": None if r["amount"] is None else decimal.Decimal(r["amount"])} for r in rows]
    frame = frame_of(rows)
    compiled = split_rows(frame, ORDERS)
    reference = _pandera_verdict(frame, ORDERS.schema)
    assert verdict_key(compiled) == verdict_key(reference)
    assert compiled.good.equals(reference.good)


def test_custom_checks_fall_back_to_pandera() -> None:
    schema = pa.DataFrameSchema({"x": pa.Column(int, pa.Check(lambda data: data.lazyframe.select(pl.col(data.key) > 0)))})
    assert compile_schema(schema) is None
    verdict = split_rows(pl.DataFrame({"x": [1, -1]}), Rules(schema, None))
    assert verdict.bad_rows["__engine_row"].to_list() == [1]
