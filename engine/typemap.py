"""Type mapping: source column type -> Arrow type in flight -> PostgreSQL type in the target.

Rules (the README's type map is generated from `TYPE_MAP_ROWS`):
- Exact numbers stay exact: DECIMAL/NUMERIC(p<=38) travel as Arrow decimal128(p,s); wider or unconstrained
  NUMERIC, and unsigned BIGINT, travel as text and are cast by PostgreSQL on load.
- Time zones are kept: timestamptz stays timestamptz (UTC in flight); naive timestamps stay naive.
- uuid, json/jsonb stay uuid, json/jsonb (strings in flight, typed on load).
- Types Arrow cannot carry exactly (interval, arrays, enums, ...) travel as PostgreSQL text literals and are
  cast by PostgreSQL on load, so no value is approximated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from engine.sql import Dialect, quote_ident


@dataclass(frozen=True)
class ColumnSpec:
    """One source column: how to select it, its Arrow type in flight and its PostgreSQL type in the target."""

    name: str
    source_type: str
    select_sql: str
    flight: str  # Arrow type name in flight, or "auto" (as the driver returns it)
    pg_type: str
    via_text: bool = False  # loaded as text and cast by PostgreSQL
    note: str = ""
    empty_is_null: bool = False  # selected as text with NULL written as '' (read back as NULL)


def _numeric(precision: int | None, scale: int | None) -> tuple[str, str, bool]:
    if precision is not None and precision <= 38:
        return f"decimal128({precision},{scale or 0})", f"numeric({precision},{scale or 0})", False
    pg = f"numeric({precision},{scale or 0})" if precision is not None else "numeric"
    return "string", pg, True


def _driver_exact(precision: int | None, scale: int | None) -> bool:
    """ConnectorX reads DECIMAL as decimal128(38,10): exact when the column's scale and integer digits fit."""
    return precision is not None and scale is not None and scale <= 10 and precision - scale <= 28


_PG_PASSTHROUGH = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "real": "float32",
    "double precision": "float64",
    "boolean": "bool",
    "text": "string",
    "bytea": "binary",
    "date": "date32",
    "time without time zone": "time64[us]",
    "timestamp without time zone": "timestamp[us]",
    "timestamp with time zone": "timestamp[us,UTC]",
    "json": "string",
    "jsonb": "string",
    "uuid": "string",
}


def pg_source_column(name: str, format_type: str, is_enum: bool = False) -> ColumnSpec:
    """Map a PostgreSQL column by its `format_type()` text."""
    q = quote_ident(name)
    base = re.sub(r"\(.*\)", "", format_type).strip()
    m = re.fullmatch(r"numeric(?:\((\d+)(?:,(\d+))?\))?", format_type)
    if m:
        precision = int(m.group(1)) if m.group(1) else None
        scale = int(m.group(2)) if m.group(2) else (0 if precision is not None else None)
        flight, pg, via_text = _numeric(precision, scale)
        return ColumnSpec(name, format_type, q if _driver_exact(precision, scale) else f"{q}::text", flight, pg, via_text)
    if base in ("character varying", "character"):
        return ColumnSpec(name, format_type, q, "string", format_type)
    if format_type in _PG_PASSTHROUGH:
        return ColumnSpec(name, format_type, q, _PG_PASSTHROUGH[format_type], format_type)
    if re.fullmatch(r"timestamp\(\d\) with(out)? time zone|time\(\d\) without time zone", format_type):
        return ColumnSpec(name, format_type, q, "auto", format_type)
    if is_enum:
        return ColumnSpec(name, format_type, f"{q}::text", "string", "text", note="enum labels kept as text")
    # interval, arrays, money, network and geometric types, ...: exact as text, cast back on load
    return ColumnSpec(name, format_type, f"{q}::text", "string", format_type, via_text=True)


def mysql_source_column(name: str, column_type: str) -> ColumnSpec:
    """Map a MySQL/MariaDB column by its information_schema COLUMN_TYPE."""
    q = quote_ident(name, "mysql")
    t = column_type.lower()
    unsigned = "unsigned" in t
    base = re.sub(r"\(.*?\)|unsigned|zerofill", "", t).strip()
    int_or_bigger = ("int64", "bigint") if unsigned else ("int32", "integer")
    ints = {"tinyint": ("int16", "smallint"),
            "smallint": ("int32", "integer") if unsigned else ("int16", "smallint"),
            "mediumint": ("int32", "integer"), "int": int_or_bigger, "integer": int_or_bigger, "year": ("int16", "smallint")}
    if base == "bigint":
        if unsigned:
            return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", "decimal128(20,0)", "numeric(20,0)")
        return ColumnSpec(name, column_type, q, "int64", "bigint")
    if base in ints:
        flight, pg = ints[base]
        return ColumnSpec(name, column_type, q, flight, pg)
    m = re.fullmatch(r"(?:decimal|numeric)\((\d+)(?:,(\d+))?\).*", t)
    if m:
        flight, pg, via_text = _numeric(int(m.group(1)), int(m.group(2) or 0))
        # as text: ConnectorX's MySQL decimal reader fails on some scales ("decimal scale is not equal")
        return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", flight, pg, via_text)
    simple = {"float": ("float32", "real"), "double": ("float64", "double precision"), "date": ("date32", "date"),
              "datetime": ("timestamp[us]", "timestamp"), "timestamp": ("timestamp[us,UTC]", "timestamptz"),
              "json": ("string", "jsonb"), "tinytext": ("string", "text"), "text": ("string", "text"),
              "mediumtext": ("string", "text"), "longtext": ("string", "text"), "enum": ("string", "text"),
              "set": ("string", "text"), "time": ("string", "interval")}
    if base in simple:
        flight, pg = simple[base]
        if base == "time":
            return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", "string", "interval", via_text=True)
        if base in ("enum", "set", "json"):
            return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", flight, pg)
        return ColumnSpec(name, column_type, q, flight, pg)
    length = re.search(r"\(\d+\)", t)
    m = None
    if base in ("char", "varchar"):
        m = re.fullmatch(r"(var)?char\((\d+)\)", base + (length.group(0) if length else ""))
    if m:
        return ColumnSpec(name, column_type, q, "string", f"{'varchar' if m.group(1) else 'char'}({m.group(2)})")
    if base in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
        return ColumnSpec(name, column_type, q, "binary", "bytea")
    if base == "bit":
        return ColumnSpec(name, column_type, f"CAST({q} AS UNSIGNED)", "decimal128(20,0)", "numeric(20,0)",
                          note="bit value as an unsigned integer")
    return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", "string", "text", note="unknown type kept as text")


def sqlite_source_column(name: str, declared: str) -> ColumnSpec:
    """Map a SQLite column by its declared type, following SQLite's affinity rules."""
    q = quote_ident(name, "sqlite")
    d = declared.upper()
    if "INT" in d:
        return ColumnSpec(name, declared, q, "int64", "bigint")
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return ColumnSpec(name, declared, q, "string", "text")
    if "BLOB" in d:
        return ColumnSpec(name, declared, q, "binary", "bytea")
    if d == "":
        return ColumnSpec(name, declared, q, "auto", "auto")
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return ColumnSpec(name, declared, q, "float64", "double precision")
    if d in ("BOOLEAN", "BOOL"):
        return ColumnSpec(name, declared, q, "bool", "boolean")
    if d == "DATE":
        return ColumnSpec(name, declared, q, "date32", "date")
    if d in ("DATETIME", "TIMESTAMP"):
        return ColumnSpec(name, declared, q, "timestamp[us]", "timestamp")
    m = re.fullmatch(r"(?:DECIMAL|NUMERIC)\s*(?:\((\d+)(?:,\s*(\d+))?\))?", d)
    if m:
        precision = int(m.group(1)) if m.group(1) else None
        flight, pg, via_text = _numeric(precision, int(m.group(2) or 0) if precision is not None else None)
        # Values are stored as INTEGER or REAL (or TEXT), and ConnectorX types such a column by its first value
        # (failing on NULL, or on a REAL after an INTEGER): read them as text that is never NULL.
        return ColumnSpec(name, declared, f"COALESCE(CAST({q} AS TEXT), '')", flight, pg, via_text,
                          empty_is_null=True)
    return ColumnSpec(name, declared, q, "auto", "auto")


_ARROW_NAMES = {
    "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(),
    "float64": pa.float64(), "bool": pa.bool_(), "string": pa.large_string(), "binary": pa.large_binary(),
    "date32": pa.date32(), "time64[us]": pa.time64("us"), "timestamp[us]": pa.timestamp("us"),
    "timestamp[us,UTC]": pa.timestamp("us", tz="UTC"),
}


def arrow_type(flight: str) -> pa.DataType | None:
    """The Arrow type for a flight name; None for "auto"."""
    m = re.fullmatch(r"decimal128\((\d+),(\d+)\)", flight)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return _ARROW_NAMES.get(flight)


def pg_type_for_arrow(dtype: pa.DataType) -> str:
    """The PostgreSQL type that holds every value of an Arrow type (for computed columns)."""
    if pa.types.is_int8(dtype) or pa.types.is_int16(dtype) or pa.types.is_uint8(dtype):
        return "smallint"
    if pa.types.is_int32(dtype) or pa.types.is_uint16(dtype):
        return "integer"
    if pa.types.is_int64(dtype) or pa.types.is_uint32(dtype):
        return "bigint"
    if pa.types.is_uint64(dtype):
        return "numeric(20,0)"
    if pa.types.is_float32(dtype):
        return "real"
    if pa.types.is_floating(dtype):
        return "double precision"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_decimal(dtype):
        return f"numeric({dtype.precision},{dtype.scale})"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "text"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return "bytea"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_time(dtype):
        return "time"
    if pa.types.is_timestamp(dtype):
        return "timestamptz" if dtype.tz else "timestamp"
    if pa.types.is_duration(dtype) or pa.types.is_interval(dtype):
        return "interval"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pg_type_for_arrow(dtype.value_type) + "[]"
    if isinstance(dtype, pa.JsonType):
        return "jsonb"
    raise ValueError(f"no PostgreSQL type for Arrow type {dtype}; declare one in [target.types]")


def ingest_type(pg_type: str) -> pa.DataType | None:
    """The Arrow type ADBC binary COPY needs for a target column; None = send as text and cast in SQL."""
    t = pg_type.lower()
    m = re.fullmatch(r"numeric\((\d+),(\d+)\)", t)
    if m and int(m.group(1)) <= 38:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    if t in ("json", "jsonb"):
        return pa.json_(pa.large_string())
    if t == "uuid":
        return pa.uuid()
    base = re.sub(r"\(.*\)", "", t).strip()
    table = {
        "smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64(), "real": pa.float32(),
        "double precision": pa.float64(), "boolean": pa.bool_(), "text": pa.large_string(),
        "character varying": pa.large_string(), "character": pa.large_string(), "varchar": pa.large_string(),
        "char": pa.large_string(), "bytea": pa.large_binary(), "date": pa.date32(),
        "time without time zone": pa.time64("us"), "time": pa.time64("us"),
        "timestamp without time zone": pa.timestamp("us"), "timestamp": pa.timestamp("us"),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"), "timestamptz": pa.timestamp("us", tz="UTC"),
    }
    return table.get(base)


def dialect_column(dialect: Dialect, name: str, declared: str, is_enum: bool = False) -> ColumnSpec:
    if dialect == "postgresql":
        return pg_source_column(name, declared, is_enum)
    if dialect == "mysql":
        return mysql_source_column(name, declared)
    return sqlite_source_column(name, declared)
