"""Declarative rules compiled, once per batch schema, into Polars boolean expressions (pure: no I/O).

Each row-level rule becomes a `RowCheck`: `passes` is true where the row passes (a NULL passes every rule but
not_null, as in SQL constraints), `value` is the failing value as text for the report and the reason. All
checks of a batch are evaluated in one `select`. References need their keys (`engine.lookups`) and job- or
target-wide uniqueness a hash index (`engine.uniqueness`): those are applied by `engine.rulerun`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from engine.ruleconfig import (
    AllowedRule,
    DtypeRule,
    ExpressionRule,
    FormatRule,
    LengthRule,
    NotNullRule,
    RangeRule,
    ReferencesRule,
    Rule,
    UniqueRule,
)
from engine.uniqueness import Bitmap

FORMAT_PATTERNS = {
    "email": r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$",
    "uuid": r"^(?i:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
    "iso_date": r"^\d{4}-\d{2}-\d{2}$",
    "iso_datetime": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$",
    "currency": r"^[A-Z]{3}$",  # an ISO 4217 code
    "url": r"^(?i:https?|ftp)://[^\s/?#]+[^\s]*$",
    "ipv4": r"^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$",
    "e164_phone": r"^\+[1-9]\d{1,14}$",
}

_INTS = {"smallint": pl.Int16, "int2": pl.Int16, "integer": pl.Int32, "int": pl.Int32, "int4": pl.Int32,
         "bigint": pl.Int64, "int8": pl.Int64}
_SIMPLE: dict[str, pl.DataType] = {
    **{k: v() for k, v in _INTS.items()}, "real": pl.Float32(), "float4": pl.Float32(),
    "double precision": pl.Float64(), "float8": pl.Float64(), "numeric": pl.Float64(), "decimal": pl.Float64(),
    "boolean": pl.Boolean(), "bool": pl.Boolean(), "date": pl.Date(), "timestamp": pl.Datetime("us"),
    "timestamp without time zone": pl.Datetime("us"), "timestamptz": pl.Datetime("us", "UTC"),
    "timestamp with time zone": pl.Datetime("us", "UTC"), "text": pl.String(), "uuid": pl.String()}
_SIZED = re.compile(r"^(numeric|decimal|varchar|character varying|char|character)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)$")


@dataclass(frozen=True)
class RowCheck:
    rule: Rule
    passes: pl.Expr  # true where the row passes
    value: pl.Expr  # the value shown for a failing row
    # A cheaper test that implies `passes` where true: tried first, and `passes` runs only on a batch where
    # it is not true throughout (a length in bytes before one in characters: counting characters reads them).
    quick: pl.Expr | None = None


def polars_type(pg_type: str) -> tuple[pl.DataType, int | None]:
    """A PostgreSQL type as the Polars type its values must convert to, and a maximum text length."""
    text = " ".join(pg_type.lower().split())
    if text in _SIMPLE:
        return _SIMPLE[text], None
    sized = _SIZED.match(text)
    if sized is None:
        raise ValueError(f"type {pg_type!r} is not supported by dtype rules (integers, real, double precision, "
                         "numeric(p,s), boolean, date, timestamp[tz], text, varchar(n), char(n), uuid)")
    if sized.group(1) in ("numeric", "decimal"):
        return pl.Decimal(int(sized.group(2)), int(sized.group(3) or 0)), None
    return pl.String(), int(sized.group(2))


def _bound(value: object, dtype: pl.DataType) -> pl.Expr:
    if isinstance(value, str) and dtype.is_temporal():
        return pl.lit(value).str.to_datetime(time_zone=getattr(dtype, "time_zone", None)).cast(dtype)
    return pl.lit(value)


# the integer types whose range a literal bound can be compared with (UInt64's upper half would turn Int64)
_INT_WIDTHS: dict[type[pl.DataType], int] = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64, pl.UInt8: 8,
                                              pl.UInt16: 16, pl.UInt32: 32}


def _int_bounds(dtype: type[pl.DataType]) -> tuple[int, int]:
    width = _INT_WIDTHS[dtype]
    return (0, (1 << width) - 1) if dtype.is_unsigned_integer() else (-(1 << (width - 1)), (1 << (width - 1)) - 1)


def _dtype(rule: DtypeRule, c: pl.Expr, source: pl.DataType) -> pl.Expr:
    target, max_len = polars_type(rule.type)
    if source.base_type() in _INT_WIDTHS and target.base_type() in _INT_WIDTHS:  # one range check, no casts
        (low, high), (lowest, highest) = _int_bounds(target.base_type()), _int_bounds(source.base_type())
        return pl.lit(True) if low <= lowest and highest <= high else c.is_between(low, high)
    converted = c.cast(target, strict=False)
    ok = converted.is_not_null()
    if source.is_numeric() and target.is_numeric():
        ok = ok & (converted.cast(source, strict=False) == c)
    elif source == pl.String and target.is_numeric():
        ok = ok & (converted.cast(pl.Float64) == c.cast(pl.Float64, strict=False))
    if rule.type.lower().strip() == "uuid":
        ok = ok & c.cast(pl.String).str.contains(FORMAT_PATTERNS["uuid"])
    if max_len is not None:
        ok = ok & (c.cast(pl.String).str.len_chars() <= max_len)
    return ok


def _range(rule: RangeRule, c: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    ok = pl.lit(True)
    if rule.min is not None:
        low = _bound(rule.min, dtype)
        ok = ok & ((c >= low) if rule.inclusive else (c > low))
    if rule.max is not None:
        high = _bound(rule.max, dtype)
        ok = ok & ((c <= high) if rule.inclusive else (c < high))
    return ok


def _length(rule: LengthRule, c: pl.Expr) -> pl.Expr:
    n = c.cast(pl.String).str.len_chars()
    ok = pl.lit(True)
    if rule.min is not None:
        ok = ok & (n >= rule.min)
    if rule.max is not None:
        ok = ok & (n <= rule.max)
    return ok


def _length_in_bytes(rule: LengthRule, c: pl.Expr) -> pl.Expr | None:
    """A quick test implying `_length`: a UTF-8 character takes one to four bytes, so at most `max` bytes hold
    at most `max` characters, and at least 4 × `min` bytes at least `min`. None for a rule with only a minimum
    above one, which short ASCII values would fail in bytes, running both tests."""
    if rule.max is None and (rule.min or 0) > 1:
        return None
    n = c.cast(pl.String).str.len_bytes()
    ok = pl.lit(True)
    if rule.min is not None:
        ok = ok & (n >= (rule.min if rule.min <= 1 else 4 * rule.min))
    if rule.max is not None:
        ok = ok & (n <= rule.max)
    return ok


def _format(rule: FormatRule, c: pl.Expr) -> pl.Expr:
    text = c.cast(pl.String)
    if rule.regex is not None:
        return text.str.contains(rule.regex)
    ok = text.str.contains(FORMAT_PATTERNS[rule.format or ""])
    if rule.format == "iso_date":  # a real calendar day, not 2024-02-30
        ok = ok & text.str.to_date("%Y-%m-%d", strict=False).is_not_null()
    return ok


def _references(rule: ReferencesRule, keys: pl.DataFrame, schema: pl.Schema) -> pl.Expr:
    """A semi-join: true where the row's key is NULL (in any part) or among the referenced `keys`."""
    cols = list(rule.columns_used)
    cast = keys.select(pl.col(c).cast(schema[c], strict=False) for c in cols)
    any_null = pl.any_horizontal(pl.col(c).is_null() for c in cols)
    if len(cols) == 1 and schema[cols[0]].is_integer() and schema[cols[0]] != pl.UInt64:
        return any_null | _among_integers(pl.col(cols[0]), cast.to_series().drop_nulls())
    if len(cols) == 1:
        return any_null | pl.col(cols[0]).is_in(cast.to_series().implode())
    return any_null | pl.struct(cols).is_in(cast.select(pl.struct(cols)).to_series().implode())


BITMAP_DENSITY = 64  # a key bitmap may hold up to this many bits per key (1 bit a possible value, 8 bytes a key)


def _among_integers(value: pl.Expr, keys: pl.Series) -> pl.Expr:
    """Membership in a fixed set of integers without building a hash table per batch (what `is_in` does):
    a bitmap over the keys' range when they are dense enough, else a binary search in the sorted keys."""
    if keys.is_empty():
        return pl.lit(False)
    low, high = int(keys.min()), int(keys.max())  # type: ignore[arg-type]
    span = high - low + 1
    offset = value.cast(pl.Int64) - low
    if span <= BITMAP_DENSITY * len(keys):
        bits = Bitmap(span)
        bits.add((keys.cast(pl.Int64) - low).cast(pl.UInt32))
        return (offset >= 0) & (offset < span) & bits.found(offset.clip(0, span - 1).cast(pl.UInt32))
    ordered = keys.cast(pl.Int64).unique().sort()
    at = pl.lit(ordered).search_sorted(value.cast(pl.Int64)).clip(0, len(ordered) - 1)
    return pl.lit(ordered).gather(at) == value.cast(pl.Int64)


def _value(rule: Rule) -> pl.Expr:
    cols = list(rule.columns_used)
    if not cols:
        return pl.lit("(row)")
    if len(cols) == 1:
        return pl.col(cols[0]).cast(pl.String).fill_null("null")
    return pl.concat_str([pl.col(c).cast(pl.String).fill_null("null") for c in cols], separator="|")


def row_check(rule: Rule, schema: pl.Schema, keys: pl.DataFrame | None = None) -> RowCheck | None:
    """The rule as an expression over a batch of `schema`, or None when it is not judged row by row here."""
    passes = _passes(rule, schema, keys)
    if passes is None:
        return None
    quick = _length_in_bytes(rule, pl.col(rule.column)) if isinstance(rule, LengthRule) else None
    if not isinstance(rule, NotNullRule) and rule.columns_used:  # NULL passes every other rule
        nulls = pl.any_horizontal(pl.col(c).is_null() for c in rule.columns_used)
        passes, quick = nulls | passes, None if quick is None else nulls | quick
    return RowCheck(rule, passes.fill_null(True), _value(rule), None if quick is None else quick.fill_null(True))


def _passes(rule: Rule, schema: pl.Schema, keys: pl.DataFrame | None) -> pl.Expr | None:
    if isinstance(rule, NotNullRule):
        return pl.col(rule.column).is_not_null()
    if isinstance(rule, ExpressionRule):
        return pl.sql_expr(rule.expr)
    if isinstance(rule, UniqueRule):
        if rule.scope != "batch":
            return None
        cols = list(rule.columns)
        return pl.any_horizontal(pl.col(c).is_null() for c in cols) | pl.struct(cols).is_first_distinct()
    if isinstance(rule, ReferencesRule):
        return _references(rule, keys, schema) if keys is not None else None
    c = pl.col(rule.columns_used[0]) if rule.columns_used else pl.lit(None)
    if isinstance(rule, RangeRule):
        return _range(rule, c, schema[rule.column])
    if isinstance(rule, AllowedRule):
        return c.is_in(pl.Series(rule.values).cast(schema[rule.column], strict=False).implode())
    if isinstance(rule, LengthRule):
        return _length(rule, c)
    if isinstance(rule, FormatRule):
        return _format(rule, c)
    if isinstance(rule, DtypeRule):
        return _dtype(rule, c, schema[rule.column])
    return None  # schema, completeness, reconcile: judged per job or per partition


def compile_checks(rules: list[Rule], schema: pl.Schema, keys: dict[str, pl.DataFrame]) -> list[RowCheck]:
    checks = [row_check(r, schema, keys.get(r.name)) for r in rules if r.row_level]
    return [c for c in checks if c is not None]
