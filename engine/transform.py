"""Transform stage: the job's declared steps as one Polars LazyFrame -> LazyFrame function.

Order: the rules function (if any), then rename, cast, add (SQL expressions; adds or replaces), drop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from engine.config import TransformSection
from engine.errors import ConfigError
from engine.rules import load_rule

Transform = Callable[[pl.LazyFrame], pl.LazyFrame]

_SIMPLE_DTYPES: dict[str, pl.DataType] = {
    "int8": pl.Int8(), "int16": pl.Int16(), "int32": pl.Int32(), "int64": pl.Int64(),
    "uint8": pl.UInt8(), "uint16": pl.UInt16(), "uint32": pl.UInt32(), "uint64": pl.UInt64(),
    "float32": pl.Float32(), "float64": pl.Float64(), "boolean": pl.Boolean(), "bool": pl.Boolean(),
    "utf8": pl.String(), "string": pl.String(), "str": pl.String(), "date": pl.Date(), "time": pl.Time(),
    "datetime": pl.Datetime("us"), "binary": pl.Binary(),
}


def parse_dtype(text: str) -> pl.DataType:
    """Parse a Polars type name: Int64, String, Date, Datetime, Datetime(UTC), Decimal(12,2), ..."""
    t = text.strip()
    m = re.fullmatch(r"(?i)decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)", t)
    if m:
        return pl.Decimal(int(m.group(1)), int(m.group(2)))
    m = re.fullmatch(r"(?i)datetime\(\s*([A-Za-z_/+\-0-9]+)\s*\)", t)
    if m:
        return pl.Datetime("us", time_zone=m.group(1))
    if t.lower() in _SIMPLE_DTYPES:
        return _SIMPLE_DTYPES[t.lower()]
    raise ValueError(f"unknown type {text!r}; use one of {', '.join(sorted(_SIMPLE_DTYPES))}, Decimal(p,s), "
                     "Datetime(UTC)")


def build_transform(section: TransformSection, rules_dir: Path) -> Transform:
    """Compile the job's [transform] section; every bad entry is reported at once."""
    problems: list[str] = []
    casts: dict[str, pl.DataType] = {}
    for column, type_name in section.cast.items():
        try:
            casts[column] = parse_dtype(type_name)
        except ValueError as exc:
            problems.append(f"`transform.cast.{column}`: {exc}")
    additions: list[pl.Expr] = []
    for column, expression in section.add.items():
        try:
            additions.append(pl.sql_expr(expression).alias(column))
        except Exception as exc:
            problems.append(f"`transform.add.{column}`: not a valid SQL expression ({exc})")
    if problems:
        raise ConfigError("transform", problems)
    function: Transform | None = None
    if section.function:
        function = load_rule(rules_dir, section.function, "transform.function")

    def apply(frame: pl.LazyFrame) -> pl.LazyFrame:
        if function is not None:
            frame = function(frame)
        if section.rename:
            frame = frame.rename(section.rename)
        if casts:
            frame = frame.with_columns(*(pl.col(c).cast(t) for c, t in casts.items()))
        if additions:
            frame = frame.with_columns(*additions)
        if section.drop:
            frame = frame.drop(section.drop)
        return frame

    return apply
