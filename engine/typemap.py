"""Type mapping: source column type -> Arrow type in flight -> PostgreSQL type in the target.

Rules (`type_map_markdown()` renders the map from the functions below, so the documentation cannot drift):
- Exact numbers stay exact: DECIMAL/NUMERIC(p<=38) travel as Arrow decimal128(p,s); wider or unconstrained
  NUMERIC travel as text and are cast by PostgreSQL on load; unsigned BIGINT travels as decimal128(20,0).
- Time zones are kept: timestamptz stays timestamptz (UTC in flight); naive timestamps stay naive.
- uuid, json/jsonb stay uuid, json/jsonb (strings in flight, typed on load).
- Types Arrow cannot carry exactly (interval, arrays, bit strings, ...) travel as text and are cast by PostgreSQL
  on load, so no value is approximated.
- A mapping names the source values it cannot carry (`ColumnSpec.unfit`, an SQL condition over a source row).
  The planner counts them before the run: a PostgreSQL column holding them travels as text instead (infinity,
  NaN, 24:00:00, years past 262142 all exist in the target too); a MySQL or SQLite column holding them is
  refused with the column, the values and the `[target] types` override that would keep them.
- A column declared in `[target] types` with a type other than its mapping's is read in the source's own text
  form and parsed as that type (strictly: a value that does not parse stops the job with the column named).
"""

from __future__ import annotations

import dataclasses
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
    empty_is_null: bool = False  # selected as text with NULL written as '' (plans made before `tagged`)
    tagged: str = ""  # how an expression column is read; see `_tagged_sql`, `_flagged_real_sql`, `_unfit_as_text_sql`
    unfit: str = ""  # SQL condition: true for a source row whose value this mapping cannot carry
    unfit_what: str = ""  # those values, in words


# ---------------------------------------------------------------------------------------------- PostgreSQL

_PG_PASSTHROUGH = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "real": "float32",
    "double precision": "float64",
    "boolean": "bool",
    "text": "string",
    "bytea": "binary",
    "uuid": "string",
}

# The driver reads dates and timestamps through chrono, whose range ends with year 262142: it turns
# 'infinity' into that last instant without a word, and fails on later years. Such values go as text.
_PG_TIME_KINDS = {
    "date": ("date32", "(NOT isfinite({c}) OR {c} >= '262143-01-01')", "infinity or years past 262142"),
    "timestamp": ("timestamp[us]", "(NOT isfinite({c}) OR {c} >= '262143-01-01')", "infinity or years past 262142"),
    "timestamptz": ("timestamp[us,UTC]", "(NOT isfinite({c}) OR {c} >= '262143-01-01 00:00:00+00')",
                    "infinity or years past 262142"),
    "time": ("time64[us]", "{c} = '24:00:00'", "24:00:00"),  # the driver reads 24:00:00 as 00:00:00
}


def _pg_time_kind(pg_type: str) -> str | None:
    t = re.sub(r"\(\d+\)", "", pg_type)
    return {"date": "date", "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
            "time without time zone": "time"}.get(t)


def e_literal(text: str) -> str:
    """A PostgreSQL string literal read the same whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pg_guard(name: str, expr: str, unfit: str, pg_type: str) -> str:
    """Select `expr`, failing the read with a message naming the column if a row holds an unfit value.

    The plan chose the binary path after finding no such value; this catches rows written later (a resumed
    run reads a newer snapshot). The failure is an invalid cast whose input is the message itself.
    """
    message = e_literal(f"column {name} holds ")
    tail = e_literal(", which this run's plan cannot carry (it appeared after planning); rerun with --fresh")
    return f"CASE WHEN {unfit} THEN ({message} || {expr}::text || {tail})::{pg_type} ELSE {expr} END"


def _numeric(precision: int | None, scale: int | None) -> tuple[str, str, bool]:
    if precision is not None and precision <= 38:
        return f"decimal128({precision},{scale or 0})", f"numeric({precision},{scale or 0})", False
    pg = f"numeric({precision},{scale or 0})" if precision is not None else "numeric"
    return "string", pg, True


def _driver_exact(precision: int | None, scale: int | None) -> bool:
    """ConnectorX reads NUMERIC through a 96-bit decimal (28 digits) into decimal128(38,10): exact when every
    digit of the column fits both (wider values fail the read rather than round, but fail it)."""
    return precision is not None and scale is not None and scale <= 10 and precision <= 28


def _pg_numeric(name: str, source_type: str, expr: str, mapped: str) -> ColumnSpec | None:
    m = re.fullmatch(r"numeric(?:\((\d+)(?:,(\d+))?\))?", mapped)
    if not m:
        return None
    precision = int(m.group(1)) if m.group(1) else None
    scale = int(m.group(2)) if m.group(2) else (0 if precision is not None else None)
    flight, pg, via_text = _numeric(precision, scale)
    if via_text:  # text holds every numeric value, NaN and ±Infinity included
        return ColumnSpec(name, source_type, f"{expr}::text", flight, pg, True)
    unfit = f"{expr} = 'NaN'"  # numeric(p,s) holds NaN, which decimal128 cannot
    if _driver_exact(precision, scale):
        return ColumnSpec(name, source_type, _pg_guard(name, expr, unfit, pg), flight, pg, unfit=unfit,
                          unfit_what="NaN")
    # As text, parsed into decimal128 by Arrow, which fails loudly on 'NaN': no guard needed.
    return ColumnSpec(name, source_type, f"{expr}::text", flight, pg, unfit=unfit, unfit_what="NaN")


def pg_source_column(name: str, format_type: str, is_enum: bool = False, base_type: str | None = None) -> ColumnSpec:
    """Map a PostgreSQL column by its `format_type()` text (`base_type`: a domain's underlying type)."""
    q = quote_ident(name)
    if is_enum:  # the target has no such type: the labels travel and stay as text, unchanged
        array = format_type.endswith("[]")
        return ColumnSpec(name, format_type, f"{q}::text", "string", "text[]" if array else "text", via_text=array,
                          note="enum labels kept as text")
    mapped, expr = (base_type, f"{q}::{base_type}") if base_type else (format_type, q)
    spec = _pg_builtin(name, format_type, mapped, expr)
    return dataclasses.replace(spec, note=f"domain over {base_type}") if base_type else spec


def _pg_builtin(name: str, source_type: str, mapped: str, expr: str) -> ColumnSpec:
    numeric = _pg_numeric(name, source_type, expr, mapped)
    if numeric is not None:
        return numeric
    base = re.sub(r"\(.*\)", "", mapped).strip()
    if base in ("character varying", "character"):
        return ColumnSpec(name, source_type, expr, "string", mapped)
    if mapped in _PG_PASSTHROUGH:
        return ColumnSpec(name, source_type, expr, _PG_PASSTHROUGH[mapped], mapped)
    if mapped in ("json", "jsonb"):  # the driver re-serialises JSON (drops keys, re-spaces, fails on 1e400)
        return ColumnSpec(name, source_type, f"{expr}::text", "string", mapped)
    kind = _pg_time_kind(mapped)
    if kind is not None:
        flight, unfit_template, what = _PG_TIME_KINDS[kind]
        unfit = unfit_template.format(c=expr)
        return ColumnSpec(name, source_type, _pg_guard(name, expr, unfit, mapped), flight, mapped,
                          unfit=unfit, unfit_what=what)
    # interval, arrays, timetz, bit strings, network, range and geometric types, ...: exact as text
    return ColumnSpec(name, source_type, f"{expr}::text", "string", mapped, via_text=True)


# ---------------------------------------------------------------------------------------------- MySQL/MariaDB

# Zero dates ('0000-00-00', also in part: '2020-00-15') exist in MySQL only: the driver panics on them,
# and PostgreSQL has no such date. Year 0 would silently become 1 BC. They are read as NULL beside their text
# (`_unfit_as_text_sql`) and their rows quarantined.
_MYSQL_ZERO_DATE = "(YEAR({c}) = 0 OR MONTH({c}) = 0 OR DAYOFMONTH({c}) = 0)"
# A TIMESTAMP holds its zero value or a time from 1970 on, never a zero month or day alone: one comparison finds
# the zero. (Each of YEAR(), MONTH() and DAYOFMONTH() converts a TIMESTAMP to the session's zone: six such
# conversions a row on the perf table's two TIMESTAMP columns, where one comparison does.)
_MYSQL_ZERO_TIMESTAMP = "({c} < '1000-01-01')"


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
    if base in ("date", "datetime", "timestamp"):
        flight, pg = {"date": ("date32", "date"), "datetime": ("timestamp[us]", "timestamp"),
                      "timestamp": ("timestamp[us,UTC]", "timestamptz")}[base]
        unfit = (_MYSQL_ZERO_TIMESTAMP if base == "timestamp" else _MYSQL_ZERO_DATE).format(c=q)
        return ColumnSpec(name, column_type, _unfit_as_text_sql(name, q, unfit), flight, pg, tagged="unfit",
                          unfit=unfit, unfit_what="zero dates (or a zero year, month or day)")
    simple = {"float": ("float32", "real"), "double": ("float64", "double precision"),
              "json": ("string", "jsonb"), "tinytext": ("string", "text"), "text": ("string", "text"),
              "mediumtext": ("string", "text"), "longtext": ("string", "text"), "enum": ("string", "text"),
              "set": ("string", "text")}
    if base == "time":  # -838:59:59 to 838:59:59: an interval, not a time of day
        return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", "string", "interval", via_text=True)
    if base in simple:
        flight, pg = simple[base]
        if base == "json":
            return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", flight, pg, note=(
                "jsonb stores its own form (key order, spacing; of duplicate keys the last); declare "
                f'[target.types] {name} = "json" to keep the text byte for byte'))
        if base in ("enum", "set"):
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
    if base == "bit":  # PostgreSQL's bit(n) is the same type: the bits travel as a '0'/'1' string
        bits = int(length.group(0)[1:-1]) if length else 1
        return ColumnSpec(name, column_type, f"LPAD(BIN({q}), {bits}, '0')", "string", f"bit({bits})", via_text=True)
    return ColumnSpec(name, column_type, f"CAST({q} AS CHAR)", "string", "text", note="unknown type kept as text")


# ---------------------------------------------------------------------------------------------- SQLite

# SQLite stores any value in any column (only an "affinity" follows the declared type), and ConnectorX
# reads by the declared type, failing on a value of another storage class. Each mapping names the values
# it reads exactly; anything else is refused at planning with the override that would keep it.


def _tagged_sql(q: str, value: str | None = None) -> str:
    """A never-NULL text expression that still tells NULL from '' (an expression's type is guessed by
    ConnectorX from its first value, and fails on NULL): '' is NULL, 'v…' a value."""
    return f"CASE WHEN {q} IS NULL THEN '' ELSE 'v' || {value or f'CAST({q} AS TEXT)'} END"


UNFIT_TEXT = "\x1fas text"  # suffix of the hidden column that carries, as text, a value the mapping cannot carry


def _unfit_as_text_sql(name: str, q: str, unfit: str) -> str:
    """A MySQL date that may be a zero date, without scanning the table for them first: NULL where `unfit`,
    preceded by a hidden column holding that value as text (`tagged = "unfit"`), so that its row is
    quarantined with the value as the source has it (`batches`) instead of failing the read."""
    return (f"CASE WHEN {unfit} THEN CAST({q} AS CHAR) END AS {quote_ident(name + UNFIT_TEXT, 'mysql')}, "
            f"CASE WHEN {unfit} THEN NULL ELSE {q} END")


NULL_FLAG = "\x1fis null"  # suffix of the hidden column that carries a REAL expression's NULLs


def _flagged_real_sql(name: str, q: str) -> str:
    """A REAL with no declared type, read exactly (SQLite's text for a REAL can lose the last digit): a
    never-NULL REAL, preceded by a hidden column saying which rows are NULL (`tagged = "flag"`)."""
    return f"({q} IS NULL) AS {quote_ident(name + NULL_FLAG, 'sqlite')}, ifnull(CAST({q} AS REAL), 0.0)"


def _typeof_not(q: str, *classes: str) -> str:
    return f"typeof({q}) NOT IN ({', '.join(repr(c) for c in (*classes, 'null'))})"


# Planning scans the whole table, so these conditions are cheap: the shape of a value (LIKE, length) is
# checked there, its digits and calendar ('2024-02-30') by Arrow's strict parse when reading, which stops
# the job naming the column. Numbers and NULL never match a LIKE pattern made of '_' and '-'.
def _sqlite_date_unfit(q: str) -> str:
    return f"NOT ({q} LIKE '____-__-__' AND {q} >= '0001')"


def _sqlite_datetime_unfit(q: str) -> str:
    """Text 'YYYY-MM-DD[ T]HH:MM:SS[.ffffff]' (or a date alone): no zone, at most 6 digits of fraction."""
    with_time = (f"({q} LIKE '____-__-__ __:__:__%' OR {q} LIKE '____-__-__T__:__:__%')"
                 f" AND length({q}) IN (19, 21, 22, 23, 24, 25, 26) AND substr({q}, 20, 1) IN ('', '.')")
    return f"NOT (({with_time} OR {q} LIKE '____-__-__') AND {q} >= '0001')"


def _sqlite_decimal_unfit(q: str, precision: int | None, scale: int | None) -> str:
    """Numbers only (text left in a NUMERIC column is not a number); within the declared digits."""
    unfit = f"{q} IS NOT NULL AND (typeof({q}) NOT IN ('integer', 'real')"
    if precision is None or scale is None:
        return unfit + ")"
    # A REAL travels as its 15-digit text: too fine if that has more decimals than the scale. A REAL equal
    # to itself rounded to the scale never is (most are), so the text is looked at only for the others.
    text = f"CAST({q} AS TEXT)"
    too_fine = (f"(instr({text}, 'e') > 0 AND abs({q}) < 1"
                f" OR instr({text}, 'e') = 0 AND instr({text}, '.') > 0 AND length({text}) - instr({text}, '.') > {scale})")
    return (unfit + f" OR abs({q}) >= 1e{precision - scale}"
            f" OR typeof({q}) = 'real' AND round({q}, {scale}) <> {q} AND {too_fine})")


def sqlite_source_column(name: str, declared: str) -> ColumnSpec:
    """Map a SQLite column by its declared type, following SQLite's affinity rules."""
    q = quote_ident(name, "sqlite")
    d = declared.upper()
    if "INT" in d:
        return ColumnSpec(name, declared, q, "int64", "bigint", unfit=_typeof_not(q, "integer"),
                          unfit_what="values that are not integers")
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return ColumnSpec(name, declared, q, "string", "text", unfit=_typeof_not(q, "text"), unfit_what="blobs")
    if "BLOB" in d:
        return ColumnSpec(name, declared, q, "binary", "bytea", unfit=_typeof_not(q, "blob"),
                          unfit_what="values that are not blobs")
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return ColumnSpec(name, declared, q, "float64", "double precision", unfit=_typeof_not(q, "real", "integer"),
                          unfit_what="values that are not numbers")
    return _sqlite_numeric_affinity(name, declared, q, d)


def _sqlite_numeric_affinity(name: str, declared: str, q: str, d: str) -> ColumnSpec:
    """Declared types of NUMERIC affinity: values of any class, read as tagged text and parsed strictly."""
    if d in ("BOOLEAN", "BOOL"):
        return ColumnSpec(name, declared, _tagged_sql(q), "bool", "boolean", tagged="text",
                          unfit=f"{q} IS NOT NULL AND NOT (typeof({q}) = 'integer' AND {q} IN (0, 1))",
                          unfit_what="values other than 0 and 1")
    if d == "DATE":
        return ColumnSpec(name, declared, _tagged_sql(q), "date32", "date", tagged="text", unfit=_sqlite_date_unfit(q),
                          unfit_what="values that are not 'YYYY-MM-DD' dates")
    if d in ("DATETIME", "TIMESTAMP"):
        return ColumnSpec(name, declared, _tagged_sql(q), "timestamp[us]", "timestamp", tagged="text",
                          unfit=_sqlite_datetime_unfit(q),
                          unfit_what="values that are not 'YYYY-MM-DD HH:MM:SS[.ffffff]' without a zone")
    m = re.fullmatch(r"(?:DECIMAL|NUMERIC)\s*(?:\((\d+)(?:,\s*(\d+))?\))?", d)
    if m:
        precision = int(m.group(1)) if m.group(1) else None
        scale = int(m.group(2) or 0) if precision is not None else None
        flight, pg, via_text = _numeric(precision, scale)
        # Values are INTEGER or REAL: read as SQLite's text for them (a REAL as its 15 significant digits).
        return ColumnSpec(name, declared, _tagged_sql(q), flight, pg, via_text, tagged="text",
                          unfit=_sqlite_decimal_unfit(q, precision, scale),
                          unfit_what=f"values that are not numbers{'' if precision is None else f' of {pg}'}")
    if d == "JSON":
        return ColumnSpec(name, declared, _tagged_sql(q), "string", "jsonb", tagged="text",
                          unfit=f"{q} IS NOT NULL AND (typeof({q}) = 'blob' OR NOT json_valid({q}))",
                          unfit_what="values that are not JSON")
    return ColumnSpec(name, declared, q, "auto", "auto", note="typed by the storage class of its values")


SQLITE_CLASSES = ("integer", "real", "text", "blob")


def sqlite_by_values(spec: ColumnSpec, classes: set[str]) -> ColumnSpec | None:
    """A column with no usable declared type, mapped by the storage classes its values have (None: mixed)."""
    q = quote_ident(spec.name, "sqlite")
    if classes <= {"text"}:  # also an empty or all-NULL column
        mapped = dataclasses.replace(spec, select_sql=_tagged_sql(q), flight="string", pg_type="text", tagged="text",
                                     unfit=_typeof_not(q, "text"), unfit_what="values that are not text")
    elif classes == {"integer"}:
        mapped = dataclasses.replace(spec, select_sql=_tagged_sql(q), flight="int64", pg_type="bigint", tagged="text",
                                     unfit=_typeof_not(q, "integer"), unfit_what="values that are not integers")
    elif classes <= {"integer", "real"}:
        beyond_double = f"typeof({q}) = 'integer' AND abs({q}) > 9007199254740992"  # 2^53
        mapped = dataclasses.replace(
            spec, select_sql=_flagged_real_sql(spec.name, q), flight="float64", pg_type="double precision",
            tagged="flag", unfit=f"{_typeof_not(q, 'real', 'integer')} OR {beyond_double}",
            unfit_what="values that are not numbers, or integers a double cannot hold exactly")
    elif classes == {"blob"}:
        mapped = dataclasses.replace(spec, select_sql=_tagged_sql(q, f"hex({q})"), flight="binary", pg_type="bytea",
                                     tagged="hex", unfit=_typeof_not(q, "blob"), unfit_what="values that are not blobs")
    else:
        return None
    return dataclasses.replace(mapped, note=f"no declared type: its values are {' and '.join(sorted(classes)) or 'NULL'}")


# ---------------------------------------------------------------------------------------------- overrides


_TEXT_TYPES = re.compile(r"(text|varchar|char|character|character varying|bpchar)(\s*\(\d+\))?")


def is_text_type(pg_type: str) -> bool:
    return bool(_TEXT_TYPES.fullmatch(" ".join(pg_type.lower().split())))


_FLOAT_TYPES = ("double precision", "float8", "real", "float4")


def declared_route(dialect: Dialect, spec: ColumnSpec, pg_type: str) -> ColumnSpec:
    """The column read in the source's own text form, for a `[target] types` override to `pg_type`.

    PostgreSQL's text is parsed back by PostgreSQL; other sources' text by Arrow where the type has an exact
    Arrow form (strict: a value that does not parse fails the job), else by PostgreSQL.
    """
    q = quote_ident(spec.name, dialect)
    if dialect != "postgresql" and pg_type.lower() == "bytea":  # the value's own bytes, whatever its type
        select, tagged = (_tagged_sql(q, f"hex({q})"), "hex") if dialect == "sqlite" else (f"CAST({q} AS BINARY)", "")
        return _redeclared(spec, pg_type, select, "binary", False, tagged)
    if dialect == "sqlite" and pg_type.lower() in _FLOAT_TYPES:  # SQLite's text for a REAL is not exact
        return _redeclared(spec, pg_type, _flagged_real_sql(spec.name, q), "float64", False, "flag")
    via_text = not is_text_type(pg_type) if dialect == "postgresql" else ingest_type(pg_type) is None
    select, tagged = _source_text_sql(dialect, spec, pg_type)
    return _redeclared(spec, pg_type, select, "string", via_text, tagged)


def _redeclared(spec: ColumnSpec, pg_type: str, select: str, flight: str, via_text: bool, tagged: str) -> ColumnSpec:
    return dataclasses.replace(spec, select_sql=select, flight=flight, pg_type=pg_type, via_text=via_text,
                               tagged=tagged, empty_is_null=False, unfit="", unfit_what="",
                               note=f"declared {pg_type}: read as the source's value")


def _source_text_sql(dialect: Dialect, spec: ColumnSpec, pg_type: str) -> tuple[str, str]:
    """How to select a column as the source writes it as text, and its `tagged` reading."""
    q = quote_ident(spec.name, dialect)
    if dialect == "postgresql":
        return f"{q}::text", ""
    if dialect == "sqlite":
        return _tagged_sql(q), "text"
    if spec.source_type.lower().startswith("bit") and not re.match(r"bit|varbit|text|char|varchar", pg_type.lower()):
        return f"CAST(CAST({q} AS UNSIGNED) AS CHAR)", ""  # as a number, not as a string of bits
    if spec.flight == "string" and not spec.unfit:
        return spec.select_sql, ""  # already the source's text
    return f"CAST({q} AS CHAR)", ""


def as_text_route(spec: ColumnSpec, why: str) -> ColumnSpec:
    """A PostgreSQL column whose values the binary path cannot carry: as text, cast back by PostgreSQL."""
    return dataclasses.replace(spec, select_sql=f"{quote_ident(spec.name)}::text", flight="string", via_text=True,
                               unfit="", unfit_what="", note=why)


def override_hint(name: str, mapped: str = "") -> str:
    """The `[target] types` line that keeps a column's values as they are: as text, or, for a column that
    already is text (and holds blobs), as bytes."""
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f'[target] types = {{ {key} = "{"bytea" if is_text_type(mapped) else "text"}" }}'


def unfit_advice(dialect: Dialect, column: ColumnSpec) -> str:
    """How to load the values a column's mapping cannot carry: a type that holds them, or (MySQL zero dates)
    a query that says they mean NULL."""
    q = quote_ident(column.name, dialect)
    alternative = (f", or read the table through a [source] query that maps them to NULL if that is what they "
                   f"mean: CASE WHEN {column.unfit} THEN NULL ELSE {q} END AS {q}"
                   if dialect == "mysql" and "zero" in column.unfit_what else "")
    return (f"declare {override_hint(column.name, column.pg_type)} (or another type that holds them) to load them "
            "unchanged" + alternative)


# ---------------------------------------------------------------------------------------------- Arrow and loading

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
    precision = re.search(r"\((\d+)\)", t)
    if base.startswith(("time", "timestamp")) and precision and int(precision.group(1)) < 6:
        return None  # binary COPY would round the microseconds silently: the text path refuses such values
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


def dialect_column(dialect: Dialect, name: str, declared: str, is_enum: bool = False,
                   base_type: str | None = None) -> ColumnSpec:
    if dialect == "postgresql":
        return pg_source_column(name, declared, is_enum, base_type)
    if dialect == "mysql":
        return mysql_source_column(name, declared)
    return sqlite_source_column(name, declared)


# ---------------------------------------------------------------------------------------------- documentation

# Representative declared types, with what the mapping functions alone cannot say (why, precision, zones).
# The flight and target columns of the table are computed by the functions above, so they cannot drift.
_PG_EXAMPLES: list[tuple[str, str]] = [
    ("smallint", ""), ("integer", ""), ("bigint", ""),
    ("numeric(12,2)", "precision and scale kept"),
    ("numeric(38,0)", "read as text, parsed into decimal128 exactly"),
    ("numeric(50,20)", "wider than decimal128"),
    ("numeric", "unconstrained: any digits, NaN, ±Infinity"),
    ("real", "NaN and ±Infinity kept"), ("double precision", "NaN, ±Infinity and -0 kept"),
    ("boolean", ""), ("text", "any Unicode (PostgreSQL text holds no NUL)"),
    ("character varying(20)", "length limit kept"), ("character(3)", "blank-padded as in the source"),
    ("bytea", ""), ("date", "BC dates kept"), ("time without time zone", "microseconds"),
    ("time with time zone", "offset kept"), ("timestamp without time zone", "no zone added, microseconds"),
    ("timestamp(3) with time zone", "the instant is kept (UTC in flight)"),
    ("interval", "months, days and microseconds kept apart"), ("uuid", ""),
    ("json", "text kept byte for byte (spacing, key order, duplicate keys)"), ("jsonb", ""),
    ("integer[]", "bounds, NULL elements and dimensions kept"), ("timestamp with time zone[]", ""),
    ("inet", ""), ("bit(4)", ""), ("int4range", ""),
]
_MYSQL_EXAMPLES: list[tuple[str, str]] = [
    ("tinyint(1)", "not boolean: -128..127 all kept"), ("tinyint unsigned", ""), ("smallint unsigned", ""),
    ("mediumint", ""), ("int", ""), ("int unsigned", ""), ("bigint", ""), ("bigint unsigned", "up to 2^64-1"),
    ("decimal(12,2)", "read as text, precision and scale kept"), ("decimal(65,30)", "wider than decimal128"),
    ("float", "single precision, as stored"), ("double", ""), ("char(10)", "trailing spaces trimmed by MySQL"),
    ("varchar(255)", "length in characters, as in PostgreSQL"), ("text", "utf8mb4"), ("longtext", "utf8mb4"),
    ("blob", ""), ("binary(4)", "zero-padded as stored"), ("date", ""), ("datetime(6)", "no zone added"),
    ("timestamp(6)", "read in UTC"), ("time(6)", "-838:59:59 to 838:59:59: a duration"),
    ("year", "0 for year 0000"), ("json", "MariaDB's JSON (LONGTEXT + json_valid) too"),
    ("enum('a','b')", "labels as text"), ("set('x','y')", "as MySQL writes it: 'x,y'"), ("bit(10)", ""),
]
_SQLITE_EXAMPLES: list[tuple[str, str]] = [
    ("INTEGER", ""), ("REAL", "±Inf kept (SQLite stores NaN as NULL)"), ("TEXT", ""),
    ("VARCHAR(5)", "SQLite does not enforce the length: none is set"), ("BLOB", ""),
    ("NUMERIC(12,2)", "a REAL arrives as SQLite's 15-digit text for it"), ("NUMERIC", ""), ("BOOLEAN", ""),
    ("DATE", ""), ("DATETIME", "'T' or ' ' between date and time; a date alone is midnight"), ("JSON", ""),
]


def _doc_row(source: str, declared: str, spec: ColumnSpec, why: str = "") -> str:
    notes = [why] if why else []
    if spec.tagged == "text":
        notes.append("read as text (NULL kept apart from ''), parsed strictly")
    if spec.tagged == "hex":
        notes.append("read as hex text (NULL kept apart from '')")
    if spec.via_text:
        notes.append("as text, cast by PostgreSQL on load")
    if spec.unfit_what and source == "PostgreSQL":
        notes.append(f"a column holding {spec.unfit_what} travels as text instead")
    elif spec.tagged == "unfit":
        notes.append(f"{spec.unfit_what}: the row is quarantined with the value and the override (`engine plan` "
                     "counts them)")
    elif spec.unfit_what:
        notes.append(f"{spec.unfit_what}: refused when planning, naming the override")
    if spec.note:
        notes.append(spec.note)
    cells = [source, declared, f"`{spec.flight}`", f"`{spec.pg_type}`", "; ".join(notes)]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _doc_rows() -> list[str]:
    rows = [_doc_row("PostgreSQL", f"`{d}`", pg_source_column("c", d), why) for d, why in _PG_EXAMPLES]
    rows += [_doc_row("PostgreSQL", "an enum", pg_source_column("c", "mood", is_enum=True), "no such type in the target"),
             _doc_row("PostgreSQL", "an array of an enum", pg_source_column("c", "mood[]", is_enum=True)),
             _doc_row("PostgreSQL", "a domain over integer", pg_source_column("c", "posint", base_type="integer"),
                      "its checks stay in the source")]
    rows += [_doc_row("MySQL/MariaDB", f"`{d}`", mysql_source_column("c", d), why) for d, why in _MYSQL_EXAMPLES]
    rows += [_doc_row("SQLite", f"`{d}`", sqlite_source_column("c", d), why) for d, why in _SQLITE_EXAMPLES]
    untyped = sqlite_source_column("c", "")
    for classes in ({"integer"}, {"integer", "real"}, {"text"}, {"blob"}):
        typed = sqlite_by_values(untyped, classes)
        assert typed is not None
        rows.append(_doc_row("SQLite", f"none, or another (e.g. `STRING`), values {' and '.join(sorted(classes))}",
                             dataclasses.replace(typed, note="")))
    return rows


def type_map_markdown() -> str:
    """The type map as a markdown table, computed by the mapping functions on representative declared types."""
    header = ["| source | source type | in flight (Arrow) | PostgreSQL type | notes |", "|---|---|---|---|---|"]
    footer = ["", "NULL stays NULL in every type. A column named in `[target] types` is read as the source's own text "
              "and parsed as the declared type: a value that does not parse stops the job, naming the column. "
              "Values a mapping cannot carry are looked for when planning (`engine plan`, `engine check`, "
              "`engine run`), except MySQL zero dates, which a run finds as it reads them (a scan for them first "
              "would cost a second read of the table) and `engine plan` counts; they are never "
              "approximated and never silently NULL. A SQLite column whose values have several storage classes is "
              "refused, naming the override."]
    return "\n".join(header + _doc_rows() + footer)


_ALIASES = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
            "time": "time without time zone", "timetz": "time with time zone", "int": "integer", "int4": "integer",
            "int8": "bigint", "int2": "smallint", "bool": "boolean", "float8": "double precision", "float4": "real",
            "varchar": "character varying", "char": "character", "decimal": "numeric"}


def canonical_type(pg_type: str) -> str:
    """A PostgreSQL type name as format_type() spells it, so declared and existing types compare equal."""
    t = " ".join(pg_type.lower().split())
    base, paren, rest = t.partition("(")
    base = _ALIASES.get(base.strip(), base.strip())
    return base + (paren + rest.replace(" ", "") if paren else "")
