"""Compare a PostgreSQL target schema with its source: value by value, and the catalogs object by object."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import pg_rows

CONSTRAINTS = """SELECT c.relname, con.conname, con.contype, con.convalidated, pg_get_constraintdef(con.oid)
                 FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
                 WHERE c.relnamespace = to_regnamespace($1) ORDER BY 1, 2"""
INDEXES = """SELECT c.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class c ON c.oid = x.indrelid WHERE c.relnamespace = to_regnamespace($1) ORDER BY 1, 2"""
COLUMNS = """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated,
                    col_description(c.oid, a.attnum)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0
               AND NOT a.attisdropped ORDER BY 1, a.attnum"""
VIEWS = """SELECT c.relname, c.relkind, pg_get_viewdef(c.oid) FROM pg_class c
           WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('v', 'm') ORDER BY 1"""
TRIGGERS = """SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
              WHERE c.relnamespace = to_regnamespace($1) AND NOT t.tgisinternal ORDER BY 1, 2"""
ROUTINES = """SELECT p.proname, p.prokind, pg_get_function_identity_arguments(p.oid), a.aggtransfn::regproc::text,
                     format_type(a.aggtranstype, NULL), a.agginitval, p.proparallel
              FROM pg_proc p LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
              WHERE p.pronamespace = to_regnamespace($1) ORDER BY 1, 3"""
TABLES = """SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c
            WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') ORDER BY 1"""


def unqualified(value: Any, *schemas: str) -> Any:
    if not isinstance(value, str):
        return value
    for schema in schemas:
        value = re.sub(rf'(?<![\w"]){re.escape(schema)}\.', "", value)
    return value


def catalog(url: str, schema: str, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(unqualified(v, schema, "public") for v in row) for row in pg_rows(url, sql, (schema,))]


def assert_same_catalog(source: str, target: str, schema: str, skip_tables: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Tables, columns (types, NOT NULL, generated, comments), constraints (exclusion ones too), indexes, views,
    triggers, functions and aggregates."""
    for sql in (TABLES, COLUMNS, CONSTRAINTS, INDEXES, VIEWS, TRIGGERS, ROUTINES):
        want = [r for r in catalog(source, "public", sql) if r[0] not in skip_tables]
        got = catalog(target, schema, sql)
        assert got == want, f"catalogs differ for\n{sql}\nsource-only: {set(want) - set(got)}\n" \
                            f"target-only: {set(got) - set(want)}"


def table_rows(url: str, relation: str) -> list[tuple[Any, ...]]:
    return pg_rows(url, f"SELECT * FROM ONLY {relation} ORDER BY 1, 2")


def assert_same_rows(source: str, target: str, schema: str, tables: list[str]) -> None:
    for table in tables:
        q = '"' + table.replace('"', '""') + '"'
        want = table_rows(source, f"public.{q}")
        got = table_rows(target, f'"{schema}".{q}')
        assert got == want, f"rows of {table} differ ({len(want)} in the source, {len(got)} in the target)"


def next_values(url: str, schema: str) -> dict[str, int]:
    """What each identity column and sequence hands out next, read from its state without consuming it."""
    found = {}
    for name, step in pg_rows(url, "SELECT sequencename, increment_by FROM pg_sequences WHERE schemaname = $1",
                              (schema,)):
        last, called = pg_rows(url, f'SELECT last_value, is_called FROM "{schema}"."{name}"')[0]
        found[str(name)] = int(last) + int(step) if called else int(last)
    return found
