"""Pandera's built-in checks compiled to Polars expressions: one vectorised pass per batch.

Pandera declares the rules; running them through its own backend costs a pass and a Python round trip per
check per batch, which dominated validation. Here a schema made only of built-in column checks (ge, isin,
str_matches, str_length, not-null, unique, …) becomes a list of boolean expressions evaluated in one
`select`. Anything else — custom or frame-wide checks, regex columns, strict schemas, a dtype that needs
more than a plain cast — is left to Pandera itself (`compile_schema` returns None), so the rules always
mean exactly what Pandera says they mean. Failure records use Pandera's own check names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

Builder = Callable[[pl.Expr, dict[str, Any]], pl.Expr]


def _in_range(c: pl.Expr, s: dict[str, Any]) -> pl.Expr:
    low = c >= s["min_value"] if s.get("include_min", True) else c > s["min_value"]
    high = c <= s["max_value"] if s.get("include_max", True) else c < s["max_value"]
    return low & high


def _str_length(c: pl.Expr, s: dict[str, Any]) -> pl.Expr:
    n = c.str.len_chars()
    if s.get("exact_value") is not None:
        return n == s["exact_value"]
    ok = pl.lit(True)
    if s.get("min_value") is not None:
        ok = ok & (n >= s["min_value"])
    if s.get("max_value") is not None:
        ok = ok & (n <= s["max_value"])
    return ok


BUILTINS: dict[str, Builder] = {
    "greater_than": lambda c, s: c > s["min_value"],
    "greater_than_or_equal_to": lambda c, s: c >= s["min_value"],
    "less_than": lambda c, s: c < s["max_value"],
    "less_than_or_equal_to": lambda c, s: c <= s["max_value"],
    "equal_to": lambda c, s: c == s["value"],
    "not_equal_to": lambda c, s: c != s["value"],
    "in_range": _in_range,
    "isin": lambda c, s: c.is_in(list(s["allowed_values"])),
    "notin": lambda c, s: ~c.is_in(list(s["forbidden_values"])),
    "str_matches": lambda c, s: c.str.contains("^(?:" + s["pattern"] + ")"),  # re.match: anchored at the start
    "str_contains": lambda c, s: c.str.contains(s["pattern"]),
    "str_startswith": lambda c, s: c.str.starts_with(s["string"]),
    "str_endswith": lambda c, s: c.str.ends_with(s["string"]),
    "str_length": _str_length,
}


@dataclass(frozen=True)
class CompiledCheck:
    column: str
    name: str  # as Pandera reports it, e.g. "greater_than_or_equal_to(0)"
    passes: pl.Expr  # true where the row passes (nulls pass value checks, as in Pandera)


@dataclass(frozen=True)
class CompiledSchema:
    checks: tuple[CompiledCheck, ...]
    dtypes: dict[str, pl.DataType]
    coerce: dict[str, bool]

    def applies_to(self, frame: pl.DataFrame) -> bool:
        """Only frames whose columns exist with the declared (or plainly castable) types are run here."""
        for name, dtype in self.dtypes.items():
            if name not in frame.schema:
                return False
            if frame.schema[name] != dtype and not self.coerce[name]:
                return False
        return True


def _column_checks(name: str, column: Any, coerce: bool) -> list[CompiledCheck] | None:
    dtype = column.dtype.type if column.dtype is not None else None
    raw = pl.col(name)
    col = raw.cast(dtype, strict=False) if coerce and dtype is not None else raw
    checks = []
    if coerce and dtype is not None:
        checks.append(CompiledCheck(name, f"coerce_dtype('{column.dtype}')", raw.is_null() | col.is_not_null()))
    if not column.nullable:
        checks.append(CompiledCheck(name, "not_nullable", raw.is_not_null()))
    if column.unique:
        checks.append(CompiledCheck(name, "field_uniqueness", ~col.is_duplicated() | col.is_null()))
    for check in column.checks:
        build = BUILTINS.get(check.name)
        if build is None or check.element_wise or not getattr(check, "ignore_na", True):
            return None
        checks.append(CompiledCheck(name, check.error or check.name, build(col, check.statistics).fill_null(True)))
    return checks


def compile_schema(schema: Any) -> CompiledSchema | None:
    """Compile a pandera.polars DataFrameSchema, or None when Pandera must run it itself."""
    if schema.checks or schema.strict or schema.unique or getattr(schema, "add_missing_columns", False):
        return None
    checks: list[CompiledCheck] = []
    dtypes: dict[str, pl.DataType] = {}
    coerce: dict[str, bool] = {}
    for name, column in schema.columns.items():
        if column.regex or not column.required or column.dtype is None:
            return None
        column_coerce = bool(schema.coerce or column.coerce)
        compiled = _column_checks(name, column, column_coerce)
        if compiled is None:
            return None
        checks += compiled
        dtypes[name], coerce[name] = column.dtype.type, column_coerce
    try:  # a regex Polars cannot run (look-arounds, …) or an ill-typed bound: let Pandera handle it
        empty = pl.DataFrame(schema={n: t for n, t in dtypes.items()})
        empty.select(c.passes.alias(f"c{i}") for i, c in enumerate(checks)) if checks else None
    except Exception:
        return None
    return CompiledSchema(tuple(checks), dtypes, coerce)


def failure_cases(frame: pl.DataFrame, compiled: CompiledSchema) -> tuple[pl.Series, pl.DataFrame]:
    """The rows passing every check, and Pandera-shaped failure cases (index, column, check, failure_case)."""
    if not compiled.checks:
        return pl.Series([True] * frame.height), pl.DataFrame()
    results = frame.select(c.passes.alias(f"c{i}") for i, c in enumerate(compiled.checks))
    good = results.select(pl.all_horizontal(pl.all())).to_series()
    if good.all():
        return good, pl.DataFrame()
    parts = []
    for i, check in enumerate(compiled.checks):
        failed = results.get_column(f"c{i}").not_()
        if not failed.any():
            continue
        rows = frame.with_row_index("index").filter(failed)
        parts.append(rows.select(
            pl.col("index").cast(pl.Int32), pl.lit(check.column).alias("column"), pl.lit(check.name).alias("check"),
            pl.col(check.column).cast(pl.String).alias("failure_case")))
    return good, pl.concat(parts)
