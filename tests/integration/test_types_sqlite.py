"""SQLite -> PostgreSQL: declared types, SQLite's dynamic typing, and values compared one by one.

SQLite keeps any value in any column. A value that its column's mapping cannot carry (text in an INTEGER
column, 2 in a BOOLEAN, nanoseconds in a DATETIME, a zone offset, a digit past a DECIMAL's scale) is never
changed: planning refuses the job naming the column, the declared type, an example and the override; with
the override declared, the value arrives as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.errors import ConfigError, SourceError
from engine.extract import read_partition
from engine.pipeline import run_job
from engine.plan import make_plan
from tests.conftest import job_toml, matrix_value, pg_rows, sqlite_exec, write_job

LONG = "ü😀a\\" * 25_000


def _float(v: Any) -> Any:  # exact, and -0.0 apart from 0.0
    return None if v is None else float(v).hex()


def _dec(v: Any) -> Any:
    return None if v is None else Decimal(str(v))


def _date(v: Any) -> Any:
    return dt.date.fromisoformat(v) if isinstance(v, str) else v


def _stamp(v: Any) -> Any:
    return dt.datetime.fromisoformat(v) if isinstance(v, str) else v


def _bool(v: Any) -> Any:
    return None if v is None else bool(v)


def _json(v: Any) -> Any:  # SQLite keeps a JSON number as a number
    return json.loads(v) if isinstance(v, str) else v


def _same(v: Any) -> Any:
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


# name, declared type, PostgreSQL type it must become, values (row 4 is NULL everywhere), how the source is
# selected for comparison, normaliser for both sides.
COLUMNS: list[tuple[str, str, str, list[Any], str, Callable[[Any], Any]]] = [
    ("i", "INTEGER", "bigint", [-2**63, 2**63 - 1, 0, None, 1], "{c}", _same),
    ("r", "REAL", "double precision", [-1.7976931348623157e308, 1.7976931348623157e308, 0.0, None, 5e-324,
                                       float("inf"), float("-inf"), -0.0, 0.1], "{c}", _float),
    ("t", "TEXT", "text", ["", LONG, "NULL", None, "e\u0301 \u05e9\u05dc\u05d5\u05dd 👩‍👩‍👧", " "], "{c}", _same),
    ("vc", "VARCHAR(5)", "text", ["abcdefgh", "", "😀"], "{c}", _same),
    ("bl", "BLOB", "bytea", [b"", bytes(range(256)), b"\x00"], "{c}", _same),
    ("n", "NUMERIC(12,2)", "numeric(12,2)", [-9999999999.99, 9999999999.99, 0, None, 12.34, 100, "-0.01"],
     "CAST({c} AS TEXT)", _dec),
    ("nu", "NUMERIC", "numeric", [1.5, 2**63 - 1, 0, None, -1e-10, float("inf")], "CAST({c} AS TEXT)", _dec),
    ("dec", "DECIMAL(30,10)", "numeric(30,10)", [-(9 * 10**18), 9 * 10**18, 0.5, None, 0.0000000001], "CAST({c} AS TEXT)",
     _dec),
    ("bo", "BOOLEAN", "boolean", [0, 1, True], "{c}", _bool),
    ("d", "DATE", "date", ["0001-01-01", "9999-12-31", "2024-02-29"], "{c}", _date),
    ("dtm", "DATETIME", "timestamp without time zone",
     ["0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", "2024-03-31 02:30:00", None, "2024-10-27T01:30:00.5",
      "2024-01-05"], "{c}", _stamp),
    ("ts", "TIMESTAMP", "timestamp without time zone", ["1970-01-01 00:00:00", "2038-01-19 03:14:08.000001",
                                                         "2024-02-29T23:59:59"], "{c}", _stamp),
    ("js", "JSON", "jsonb", ['{"a": [1, 2.5, null], "ü": "😀"}', "[]", 1, None, '"x"', "null"], "{c}", _json),
    ("u_int", "", "bigint", [-2**63, 2**63 - 1, 0], "{c}", _same),
    ("u_real", "", "double precision", [0.1, -1e308, 3], "{c}", _float),
    ("u_text", "", "text", ["", "😀", "abc"], "{c}", _same),
    ("u_blob", "", "bytea", [b"", b"\x00\xff", b"abc"], "{c}", _same),
    ("u_null", "", "text", [], "{c}", _same),
    ("s", "STRING", "text", ["abc", "", "😀"], "{c}", _same),
]
ROWS = max(len(c[3]) for c in COLUMNS)
NAMES = [c[0] for c in COLUMNS]


def make_source(db: Path) -> None:
    ddl = ", ".join(f'"{n}" {t}' for n, t, *_ in COLUMNS)
    rows = [(row, *(matrix_value(c[3], row) for c in COLUMNS)) for row in range(1, ROWS + 1)]
    sqlite_exec(db, f"CREATE TABLE kinds (id INTEGER PRIMARY KEY, {ddl})",
                many=(f"INSERT INTO kinds VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", rows))


def source_rows(db: Path) -> list[tuple[Any, ...]]:
    select = ", ".join(src.format(c=f'"{n}"') for n, _t, _p, _v, src, _n in COLUMNS)
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(f"SELECT id, {select} FROM kinds ORDER BY id")]


def target_rows(url: str) -> list[tuple[Any, ...]]:
    select = ", ".join(f'"{n}"::text' if p.startswith(("numeric", "json")) else f'"{n}"'
                       for n, _t, p, *_ in COLUMNS)
    return pg_rows(url, f"SELECT id, {select} FROM public.kinds ORDER BY id")


def normalised(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(r[0], *(c[5](v) for c, v in zip(COLUMNS, r[1:], strict=True))) for r in rows]


def column_types(url: str, table: str = "public.kinds") -> dict[str, str]:
    return dict(pg_rows(url, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND attname <> 'id'""", (table,)))


def run(tmp_path: Path, name: str, db: Path, pg_db: str, table: str, types: dict[str, str] | None = None,
        extra_source: str = "") -> Any:
    body = job_toml(name, f"sqlite://{db}", table, pg_db, f"public.{table}", extra_source=extra_source)
    if types:
        lines = "".join(f'"{k}" = "{v}"\n' for k, v in types.items())
        body = body.replace("\n[pipeline]", f"\n[target.types]\n{lines}\n[pipeline]")
    return load_config(write_job(tmp_path, body, name=f"{name}.toml"))


def test_every_declared_type_arrives_unchanged(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "kinds.db"
    make_source(db)
    report = run_job(run(tmp_path, "sqlite_types", db, pg_db, "kinds", extra_source="partitions = 2"))
    assert report.status == "succeeded", report.error
    assert report.rows_loaded == ROWS
    assert column_types(pg_db) == {n: p for n, _t, p, *_ in COLUMNS}
    source, target = normalised(source_rows(db)), normalised(target_rows(pg_db))
    assert len(source) == len(target) == ROWS
    for s, t in zip(source, target, strict=True):
        diffs = [f"{n}: {a!r:.60} != {b!r:.60}" for n, a, b in zip(["id", *NAMES], s, t, strict=True) if a != b]
        assert not diffs, f"row {s[0]} differs: " + "; ".join(diffs)
    # A REAL in a DECIMAL column arrives as SQLite's own text for it, within the declared scale.
    assert pg_rows(pg_db, "SELECT n::text FROM public.kinds WHERE id = 5") == [("12.34",)]


# Values each column's declared type cannot carry, and the example each refusal must show.
MISFITS = [
    ("i", "INTEGER", ["abc", 5, 1.5], "'abc'"),
    ("bo", "BOOLEAN", [0, 1, 2], "2"),
    ("dtm", "DATETIME", ["2024-01-05 10:00:00.123456789", "2024-01-05 10:00:00", None], "'2024-01-05 10:00:00.123456789'"),
    ("tz", "TIMESTAMP", ["2024-01-05T10:00:00Z", "2024-01-05 12:00:00+02:00", None], "'2024-01-05 12:00:00+02:00'"),
    ("n", "NUMERIC(12,2)", [12.345, 1, None], "12.345"),
    ("d", "DATE", ["2024-1-5", "2024-01-05", "2024-01-05 10:00:00"], "'2024-01-05 10:00:00'"),
    ("txt", "TEXT", ["", b"\x00\xff", "x"], "X'00FF'"),
    ("mixed", "", [1, "one", b"\x01"], None),
]


def make_misfits(db: Path) -> None:
    ddl = ", ".join(f'"{n}" {t}' for n, t, _v, _e in MISFITS)
    rows = [(i + 1, *(m[2][i] for m in MISFITS)) for i in range(3)]
    sqlite_exec(db, f"CREATE TABLE misfits (id INTEGER PRIMARY KEY, {ddl})",
                many=(f"INSERT INTO misfits VALUES ({', '.join('?' * (len(MISFITS) + 1))})", rows))


def test_values_the_declared_type_cannot_carry_are_refused_at_planning(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "misfits.db"
    make_misfits(db)
    config = run(tmp_path, "sqlite_misfits", db, pg_db, "misfits")
    with pytest.raises(ConfigError) as refused:
        make_plan(config)
    problems = refused.value.problems
    assert len(problems) == len(MISFITS), problems
    for name, declared, _values, example in MISFITS:
        problem = next(p for p in problems if p.startswith(f"column '{name}' "))
        assert declared in problem if declared else "without a" in problem
        assert f'[target] types = {{ {name} = "{"bytea" if name == "txt" else "text"}" }}' in problem
        if example is not None:
            assert f"e.g. {example};" in problem, problem
    assert "2 row(s) hold values that are not integers" in next(p for p in problems if "'i'" in p)
    assert "several storage classes (blob, integer, text)" in next(p for p in problems if "'mixed'" in p)
    with pytest.raises(ConfigError):  # and so does the run, before creating anything
        run_job(config)
    assert pg_rows(pg_db, "SELECT to_regclass('public.misfits')") == [(None,)]


def test_declared_types_load_misfit_values_unchanged(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "misfits.db"
    make_misfits(db)
    types = {"i": "text", "bo": "text", "dtm": "text", "tz": "timestamptz", "n": "numeric", "d": "text",
             "txt": "bytea", "mixed": "text"}
    report = run_job(run(tmp_path, "sqlite_declared", db, pg_db, "misfits", types))
    assert report.status == "succeeded", report.error
    assert column_types(pg_db, "public.misfits") == {
        "i": "text", "bo": "text", "dtm": "text", "tz": "timestamp with time zone", "n": "numeric", "d": "text",
        "txt": "bytea", "mixed": "text"}
    utc = dt.UTC
    assert pg_rows(pg_db, "SELECT i, bo, dtm, tz, n::text, d, txt, mixed FROM public.misfits ORDER BY id") == [
        ("abc", "0", "2024-01-05 10:00:00.123456789", dt.datetime(2024, 1, 5, 10, tzinfo=utc), "12.345", "2024-1-5",
         b"", "1"),
        ("5", "1", "2024-01-05 10:00:00", dt.datetime(2024, 1, 5, 10, tzinfo=utc), "1", "2024-01-05", b"\x00\xff",
         "one"),
        ("1.5", "2", None, None, None, "2024-01-05 10:00:00", b"x", "\x01")]


def test_a_misfit_written_after_planning_stops_the_read_naming_the_column(tmp_path: Path, pg_db: str) -> None:
    db = tmp_path / "late.db"
    sqlite_exec(db, "CREATE TABLE late (id INTEGER PRIMARY KEY, qty INTEGER, flag BOOLEAN, amount DECIMAL(12,2), "
                    "day DATE)", "INSERT INTO late VALUES (1, 5, 1, 1.25, '2024-02-28'), (2, 6, 0, 2, NULL)")
    config = run(tmp_path, "sqlite_late", db, pg_db, "late")
    plan = make_plan(config)
    partition = plan.partitions[0]
    cases = [("UPDATE late SET qty = 'five' WHERE id = 2", "Column 'qty' holds a TEXT value"),
             ("UPDATE late SET qty = 6, flag = 2 WHERE id = 2", "column 'flag' \\(BOOLEAN\\)"),
             ("UPDATE late SET flag = 0, amount = 2.125 WHERE id = 2", "column 'amount' \\(DECIMAL\\(12,2\\)\\)"),
             ("UPDATE late SET amount = '' WHERE id = 2", "column 'amount'"),
             # the shape of a date is checked when planning, its calendar when reading
             ("UPDATE late SET amount = 2, day = '2024-02-30' WHERE id = 2", "column 'day' \\(DATE\\)")]
    for statement, message in cases:
        sqlite_exec(db, statement)
        with pytest.raises(SourceError, match=message) as stopped:
            list(read_partition(plan, partition, config.source_url, 1000))
        assert "[target] types" in str(stopped.value)
