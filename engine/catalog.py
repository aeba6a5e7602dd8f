"""What the source holds: columns, declared types, keys, and values a column's mapping cannot carry.

The target's catalog is the PostgreSQL adapter's (`engine.pg`); queries here go through the source adapter.

Catalog lookups bind names as parameters (PostgreSQL, SQLite) or as hex literals (MySQL through
ConnectorX, which takes no parameters), so no name can change the statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from engine import pg
from engine.errors import SourceError
from engine.source import query_rows, result_schema
from engine.sql import Dialect, TableName, quote_ident
from engine.typemap import SQLITE_CLASSES, ColumnSpec, dialect_column, pg_type_for_arrow
from engine.urls import DatabaseUrl

_INTEGER_TYPES = {"smallint", "integer", "bigint", "int", "tinyint", "mediumint", "int2", "int4", "int8"}


@dataclass(frozen=True)
class SourceShape:
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    from_sql: str  # the FROM item: a quoted table, or a parenthesised query with an alias


def _mysql_text(value: str) -> str:
    return f"CONVERT(X'{value.encode().hex()}' USING utf8mb4)" if value else "''"


# name, declared type, whether it is an enum (or an array of one), and a domain's underlying type (the target
# has neither the enum nor the domain: enums travel as their labels, domains as their base type).
_PG_COLUMN_SQL = """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typtype = 'e' OR COALESCE(e.typtype = 'e', false),
           CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
                WHEN e.typtype = 'd' THEN format_type(e.typbasetype, e.typtypmod) || '[]' END
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem
    WHERE a.attrelid = {relation} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""

PgColumn = tuple[str, str, bool, str | None]


def _pg_columns(url: DatabaseUrl, relation: str) -> list[PgColumn]:
    rows = query_rows(url, _PG_COLUMN_SQL.format(relation="to_regclass($1)"), (relation,))
    return [(r[0], r[1], bool(r[2]), r[3]) for r in rows]


def _pg_primary_key(url: DatabaseUrl, relation: str) -> tuple[str, ...]:
    rows = query_rows(url, """
        SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = to_regclass($1) AND i.indisprimary""", (relation,))
    return tuple(r[0] for r in rows)


def _mysql_columns(url: DatabaseUrl, table: TableName) -> tuple[list[tuple[str, str, bool]], tuple[str, ...]]:
    schema = table.schema or url.database
    rows = query_rows(url, (
        "SELECT COLUMN_NAME AS name, COLUMN_TYPE AS ctype, COLUMN_KEY AS ckey FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = {_mysql_text(schema)} AND TABLE_NAME = {_mysql_text(table.name)} "
        "ORDER BY ORDINAL_POSITION"))
    json_columns = mariadb_json_columns(url, schema, table.name)
    cols = [(str(r[0]), "json" if str(r[0]) in json_columns and str(r[1]).lower() == "longtext" else str(r[1]), False)
            for r in rows]
    return cols, tuple(str(r[0]) for r in rows if r[2] == "PRI")


_JSON_VALID = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)")


def mariadb_json_columns(url: DatabaseUrl, schema: str, table: str) -> set[str]:
    """MariaDB's JSON is an alias of LONGTEXT with a `json_valid(col)` check: the columns declared so."""
    try:
        rows = query_rows(url, (
            "SELECT CHECK_CLAUSE AS clause FROM information_schema.CHECK_CONSTRAINTS "
            f"WHERE CONSTRAINT_SCHEMA = {_mysql_text(schema)} AND TABLE_NAME = {_mysql_text(table)}"))
    except SourceError:  # MySQL has no TABLE_NAME there, and a JSON type of its own
        return set()
    found = (_JSON_VALID.fullmatch(str(r[0]).strip()) for r in rows)
    return {m.group(1).replace("``", "`") for m in found if m}


def _sqlite_columns(url: DatabaseUrl, table: TableName) -> tuple[list[tuple[str, str, bool]], tuple[str, ...]]:
    rows = query_rows(url, f"PRAGMA table_info({quote_ident(table.name, 'sqlite')})")
    cols = [(str(r[1]), str(r[2] or ""), False) for r in rows]
    pk = tuple(str(r[1]) for r in sorted(rows, key=lambda r: r[5]) if r[5])
    return cols, pk


def _query_columns(url: DatabaseUrl, from_sql: str) -> list[ColumnSpec]:
    """Columns of an arbitrary query, typed from what the driver returns."""
    if url.dialect == "postgresql":
        with pg.connection(url) as conn:  # a temporary view gives the exact declared types
            pg.execute(conn, f"CREATE TEMPORARY VIEW engine_probe AS SELECT * FROM {from_sql}")
            rows = pg.fetch_all(conn, _PG_COLUMN_SQL.format(relation="'engine_probe'::regclass"))
            conn.rollback()
        return [dialect_column("postgresql", r[0], r[1], bool(r[2]), r[3]) for r in rows]
    schema = result_schema(url, f"SELECT * FROM {from_sql} LIMIT 0", "cannot read the source query's columns")
    return [ColumnSpec(f.name, str(f.type), quote_ident(f.name, url.dialect), "auto", _pg_or_text(f.type))
            for f in schema]


def _pg_or_text(dtype: pa.DataType) -> str:
    try:
        return pg_type_for_arrow(dtype)
    except ValueError:
        return "text"


def describe_source(url: DatabaseUrl, table: TableName | None, query: str | None) -> SourceShape:
    """Columns (with their type mapping) and primary key of a source table or query."""
    if query is not None:
        from_sql = f"({query.strip().rstrip(';')}) AS engine_src"
        return SourceShape(tuple(_query_columns(url, from_sql)), (), from_sql)
    assert table is not None
    from_sql = table.quoted(url.dialect)
    cols: list[PgColumn]
    if url.dialect == "postgresql":
        cols = _pg_columns(url, table.quoted())
        pk = _pg_primary_key(url, table.quoted()) if cols else ()
    elif url.dialect == "mysql":
        found, pk = _mysql_columns(url, table)
        cols = [(n, t, e, None) for n, t, e in found]
    else:
        found, pk = _sqlite_columns(url, table)
        cols = [(n, t, e, None) for n, t, e in found]
    if not cols:
        raise SourceError(f"source table {table} not found (or has no columns) in {url}; names are case-sensitive")
    specs = tuple(dialect_column(url.dialect, name, ftype, is_enum, base) for name, ftype, is_enum, base in cols)
    return SourceShape(specs, pk, from_sql)


def unfit_values(url: DatabaseUrl, from_sql: str, columns: tuple[ColumnSpec, ...]) -> dict[str, tuple[int, str]]:
    """Per column with an `unfit` condition: how many source rows hold values its mapping cannot carry, and
    one of them as text (for the message).

    One scan counts them all, visiting only the unfit rows; on PostgreSQL an aggregate (unlike a
    `LIMIT 1` probe) gets a parallel scan, which halves the time planning waits for it on a large table.
    Examples are fetched only when there is something to report.
    """
    checked = [c for c in columns if c.unfit]
    if not checked:
        return {}
    dialect = url.dialect
    any_unfit = " OR ".join(f"({c.unfit})" for c in checked)
    count = "count(*) FILTER (WHERE {u})" if dialect == "postgresql" else "SUM(CASE WHEN {u} THEN 1 ELSE 0 END)"
    row = query_rows(url, f"SELECT {_aliased([count.format(u=c.unfit) for c in checked], dialect)} "
                           f"FROM {from_sql} WHERE {any_unfit}")[0]
    found = [(c, int(n)) for c, n in zip(checked, row, strict=True) if n]  # SUM over no rows is NULL
    if not found:
        return {}
    examples = [_example_sql(c, dialect) for c, _ in found]
    row = query_rows(url, f"SELECT {_aliased(examples, dialect)} FROM {from_sql}")[0]
    return {c.name: (n, str(example)) for (c, n), example in zip(found, row, strict=True)}


def _aliased(expressions: list[str], dialect: Dialect) -> str:
    return ", ".join(f"{e} AS {quote_ident(f'u{i}', dialect)}" for i, e in enumerate(expressions))


def _example_sql(column: ColumnSpec, dialect: Dialect) -> str:
    q = quote_ident(column.name, dialect)
    if dialect == "postgresql":
        return f"min(left({q}::text, 60)) FILTER (WHERE {column.unfit})"
    text = f"LEFT(CAST({q} AS CHAR), 60)" if dialect == "mysql" else f"substr(quote({q}), 1, 60)"
    return f"MIN(CASE WHEN {column.unfit} THEN {text} END)"


def sqlite_storage_classes(url: DatabaseUrl, from_sql: str, names: list[str]) -> dict[str, set[str]]:
    """For SQLite columns without a usable declared type: the storage classes their values have."""
    if not names:
        return {}
    parts = [f"SUM(typeof({quote_ident(n, 'sqlite')}) = '{k}')" for n in names for k in SQLITE_CLASSES]
    row = query_rows(url, f"SELECT {', '.join(parts)} FROM {from_sql}")[0]
    k = len(SQLITE_CLASSES)
    return {n: {cls for j, cls in enumerate(SQLITE_CLASSES) if row[i * k + j]} for i, n in enumerate(names)}


def is_integer_column(spec: ColumnSpec) -> bool:
    base = spec.source_type.lower().split("(")[0].replace("unsigned", "").strip()
    return base in _INTEGER_TYPES or spec.flight in ("int16", "int32", "int64")
