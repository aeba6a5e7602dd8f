"""MariaDB/MySQL -> PostgreSQL: one column per common type, edge values in every row, compared value by value.

The source is read back with pymysql (its own protocol and conversions, independent of the engine's reader)
and the target with PostgreSQL's; both sides are normalised to exact Python values (Decimal text, bit strings,
microsecond counts) before comparing. Zero dates are refused at planning, naming the column and the override.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine import check_job
from engine.config import load_config
from engine.errors import ErrorBudgetExceeded
from engine.pipeline import run_job
from engine.plan import make_plan
from tests.conftest import job_toml, mariadb_connect, mariadb_exec, matrix_value, pg_rows, write_job

pytestmark = pytest.mark.mariadb

FLT_MAX, FLT_MIN = 3.4028234663852886e38, 1.1754943508222875e-38
LONG = "ü😀a\\" * 25_000


def _bits(width: int) -> Callable[[Any], Any]:  # MySQL's bytes and PostgreSQL's bit string, as '0'/'1' text
    return lambda v: v if v is None or isinstance(v, str) else format(int.from_bytes(v, "big"), f"0{width}b")


def _micros(v: Any) -> Any:  # a MySQL TIME (timedelta) or a PostgreSQL interval's epoch (Decimal seconds)
    if v is None:
        return None
    if isinstance(v, dt.timedelta):
        return (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds
    return int(Decimal(v) * 1_000_000)


def _utc(v: Any) -> Any:
    return v.astimezone(dt.UTC).replace(tzinfo=None) if isinstance(v, dt.datetime) and v.tzinfo else v


def _json(v: Any) -> Any:
    return None if v is None else json.loads(v)


def _same(v: Any) -> Any:
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


# name, MariaDB type, PostgreSQL type it must become, values (row 4 is NULL everywhere),
# source select, target select, normaliser applied to both sides.
COLUMNS: list[tuple[str, str, str, list[Any], str, str, Callable[[Any], Any]]] = [
    ("t1", "tinyint(1)", "smallint", [-128, 127, 0, None, 1], "{c}", "{c}", _same),
    ("tu", "tinyint unsigned", "smallint", [0, 255, 1], "{c}", "{c}", _same),
    ("si", "smallint", "smallint", [-32768, 32767, 0], "{c}", "{c}", _same),
    ("su", "smallint unsigned", "integer", [0, 65535, 1], "{c}", "{c}", _same),
    ("mi", "mediumint", "integer", [-8388608, 8388607, 0], "{c}", "{c}", _same),
    ("mu", "mediumint unsigned", "integer", [0, 16777215, 1], "{c}", "{c}", _same),
    ("ii", "int", "integer", [-2**31, 2**31 - 1, 0], "{c}", "{c}", _same),
    ("iu", "int unsigned", "bigint", [0, 2**32 - 1, 1], "{c}", "{c}", _same),
    ("bi", "bigint", "bigint", [-2**63, 2**63 - 1, 0], "{c}", "{c}", _same),
    ("bu", "bigint unsigned", "numeric(20,0)", [0, 2**64 - 1, 2**53 + 1], "CAST({c} AS CHAR)", "{c}::text", _same),
    ("d65", "decimal(65,30)", "numeric(65,30)",
     ["-" + "9" * 35 + "." + "9" * 30, "9" * 35 + "." + "9" * 30, "0", None, "0." + "0" * 29 + "1"],
     "CAST({c} AS CHAR)", "{c}::text", _same),
    ("d12", "decimal(12,2)", "numeric(12,2)", ["-9999999999.99", "9999999999.99", "0.00", None, "-0.01"],
     "CAST({c} AS CHAR)", "{c}::text", _same),
    ("d38", "decimal(38,0)", "numeric(38,0)", ["-" + "9" * 38, "9" * 38, "0"], "CAST({c} AS CHAR)", "{c}::text", _same),
    ("f", "float", "real", [-FLT_MAX, FLT_MAX, 0.0, None, FLT_MIN, 1.5, -0.25], "CAST({c} AS DOUBLE)", "{c}", _same),
    ("dbl", "double", "double precision", [-1.7976931348623157e308, 1.7976931348623157e308, 0.0, None,
                                           2.2250738585072014e-308, 0.1, -1e-300], "{c}", "{c}", _same),
    ("c", "char(10)", "character(10)", ["", "😀😀😀😀😀😀😀😀😀😀", " a"], "{c}", "rtrim({c})", _same),
    ("vc", "varchar(255)", "character varying(255)", ["", "😀" * 255, "NULL", None, "tab\t\nnewline \\ 'q' \"dq\""],
     "{c}", "{c}", _same),
    ("tx", "text", "text", ["", "e\u0301 \u05e9\u05dc\u05d5\u05dd \U0001F469\u200d\U0001F469\u200d\U0001F467", " "],
     "{c}", "{c}", _same),
    ("lt", "longtext", "text", [LONG, "", "x"], "{c}", "{c}", _same),
    ("bl", "blob", "bytea", [b"", bytes(range(256)), b"\x00"], "{c}", "{c}", _same),
    ("bn", "binary(4)", "bytea", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"ab\x00\x00"], "{c}", "{c}", _same),
    ("vb", "varbinary(10)", "bytea", [b"", b"\x00" * 10, b"\\x00"], "{c}", "{c}", _same),
    ("d", "date", "date", [dt.date(1000, 1, 1), dt.date(9999, 12, 31), dt.date(1970, 1, 1), None,
                           dt.date(1, 1, 1), dt.date(2024, 2, 29)], "{c}", "{c}", _same),
    ("dtm", "datetime(6)", "timestamp without time zone",
     [dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(1970, 1, 1), None,
      dt.datetime(2024, 3, 31, 2, 30), dt.datetime(2024, 10, 27, 2, 30, 0, 1), dt.datetime(1, 1, 1)],
     "{c}", "{c}", _same),
    ("ts", "timestamp(6) NULL DEFAULT NULL", "timestamp with time zone",
     [dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 7, 999999), dt.datetime(2000, 1, 1), None,
      dt.datetime(2024, 3, 31, 0, 59, 59, 999999), dt.datetime(2024, 3, 31, 1, 0), dt.datetime(2024, 10, 27, 1, 0)],
     "{c}", "{c}", _utc),
    ("tm", "time(6)", "interval", ["838:59:59", "-838:59:59", "00:00:00", None, "-00:00:00.000001", "24:00:00",
                                   "100:00:00.5"], "{c}", "extract(epoch FROM {c})::text", _micros),
    ("y", "year", "smallint", [1901, 2155, 0], "{c}", "{c}", _same),
    ("j", "json", "jsonb", ['{"a": [1, 2.5, null], "ü": "😀"}', "[]", '"just a string"', None, "null"],
     "{c}", "{c}::text", _json),
    ("e", "enum('a','b','😀 c')", "text", ["a", "😀 c", "b"], "{c}", "{c}", _same),
    ("st", "set('x','y','z')", "text", ["", "x,y,z", "y"], "{c}", "{c}", _same),
    ("b1", "bit(1)", "bit(1)", [b"\x00", b"\x01", b"\x01"], "{c}", "{c}::text", _bits(1)),
    ("b10", "bit(10)", "bit(10)", [b"\x00\x00", b"\x03\xff", b"\x02\x01"], "{c}", "{c}::text", _bits(10)),
    ("b64", "bit(64)", "bit(64)", [b"\x00" * 8, b"\xff" * 8, b"\x80" + b"\x00" * 7], "{c}", "{c}::text", _bits(64)),
]
ROWS = max(len(v) for *_, v, _s, _t, _n in COLUMNS)
NAMES = [c[0] for c in COLUMNS]


def make_source(url: str) -> None:
    ddl = ", ".join(f"`{n}` {t}" for n, t, *_ in COLUMNS)
    rows = [(row, *(matrix_value(c[3], row) for c in COLUMNS)) for row in range(1, ROWS + 1)]
    mariadb_exec(url, f"CREATE TABLE kinds (id int NOT NULL PRIMARY KEY, {ddl}) CHARACTER SET utf8mb4",
                 "SET time_zone = '+00:00'",
                 many=(f"INSERT INTO kinds VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})", rows))


def source_rows(url: str) -> list[tuple[Any, ...]]:
    select = ", ".join(src.format(c=f"`{n}`") for n, _t, _p, _v, src, _tg, _n in COLUMNS)
    conn = mariadb_connect(url.rsplit("/", 1)[1])
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"SELECT id, {select} FROM kinds ORDER BY id")
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def target_rows(url: str) -> list[tuple[Any, ...]]:
    select = ", ".join(tg.format(c=f'"{n}"') for n, _t, _p, _v, _s, tg, _n in COLUMNS)
    return pg_rows(url, f"SELECT id, {select} FROM public.kinds ORDER BY id")


def normalised(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(r[0], *(c[6](v) for c, v in zip(COLUMNS, r[1:], strict=True))) for r in rows]


def column_types(url: str) -> dict[str, str]:
    return dict(pg_rows(url, """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
        WHERE attrelid = 'public.kinds'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'id'"""))


def test_every_type_arrives_unchanged(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    make_source(mariadb_db)
    job = write_job(tmp_path, job_toml("maria_types", mariadb_db, "kinds", pg_db, "public.kinds",
                                       extra_source="partitions = 2"))
    report = run_job(load_config(job))
    assert report.status == "succeeded", report.error
    assert report.rows_loaded == ROWS
    assert column_types(pg_db) == {n: pg for n, _t, pg, *_ in COLUMNS}
    source, target = normalised(source_rows(mariadb_db)), normalised(target_rows(pg_db))
    assert len(source) == len(target) == ROWS
    for s, t in zip(source, target, strict=True):
        diffs = [f"{n}: {a!r:.60} != {b!r:.60}" for n, a, b in zip(["id", *NAMES], s, t, strict=True) if a != b]
        assert not diffs, f"row {s[0]} differs: " + "; ".join(diffs)


ZERO_DDL = """CREATE TABLE dates (id int PRIMARY KEY, d date, dtm datetime, ts timestamp NULL DEFAULT NULL,
    ok date)"""
ZERO_ROWS = ["INSERT INTO dates VALUES (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2024-01-01')",
             "INSERT INTO dates VALUES (2, '2020-00-15', '2020-02-00 10:00:00', NULL, NULL)",
             "INSERT INTO dates VALUES (3, '2024-02-29', '2024-02-29 12:00:00', '2024-02-29 12:00:00', '2024-02-29')"]


def _zero_job(tmp_path: Path, name: str, mariadb_db: str, pg_db: str, budget: str = "max_error_rate = 1.0") -> Path:
    body = job_toml(name, mariadb_db, "dates", pg_db, "public.dates")
    return write_job(tmp_path, body.replace("\n[pipeline]", f"\n[validate]\n{budget}\n\n[pipeline]"), f"{name}.toml")


def test_zero_dates_are_quarantined_naming_the_column_the_value_and_the_override(mariadb_db: str, pg_db: str,
                                                                                 tmp_path: Path) -> None:
    """A run does not scan for zero dates first: a row holding one is quarantined as read, with its value as
    MariaDB has it; `engine plan` counts them beforehand and says the same."""
    mariadb_exec(mariadb_db, "SET SESSION sql_mode = ''", ZERO_DDL, *ZERO_ROWS)
    config = load_config(_zero_job(tmp_path, "maria_zero", mariadb_db, pg_db))
    notes = {c.name: c.note for c in make_plan(config).columns}
    assert "column 'd' (MySQL date -> PostgreSQL date): 2 row(s) hold zero dates" in notes["d"]
    assert "e.g. 0000-00-00: their rows are quarantined" in notes["d"] and '[target] types = { d = "text" }' in notes["d"]
    assert "column 'ts' (MySQL timestamp -> PostgreSQL timestamptz): 1 row(s)" in notes["ts"] and not notes["ok"]
    assert check_job(config) == []  # not a problem of the job: the rows are quarantined
    report = run_job(config)
    assert report.status == "succeeded", report.error
    assert (report.rows_read, report.rows_loaded, report.rows_quarantined) == (3, 1, 2)
    assert pg_rows(pg_db, "SELECT id, d, dtm, ts, ok FROM public.dates") == [
        (3, dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 12), dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC),
         dt.date(2024, 2, 29))]
    records = pg_rows(pg_db, "SELECT source_key, columns, reason, row FROM engine.quarantine ORDER BY source_key")
    assert [(k, c) for k, c, _r, _row in records] == [("1", "d, dtm, ts"), ("2", "d, dtm")]
    assert records[0][2].startswith("d: 0000-00-00 has a zero year, month or day, which PostgreSQL date cannot hold; "
                                    'declare [target] types = { d = "text" }')
    assert "ts: 0000-00-00 00:00:00 has a zero year" in records[0][2] and "dtm: 2020-02-00 10:00:00" in records[1][2]
    assert json.loads(records[1][3]) == {"id": 2, "d": "2020-00-15", "dtm": "2020-02-00 10:00:00", "ts": None,
                                         "ok": None}


def test_rows_with_zero_dates_still_count_in_reconcile_and_completeness(mariadb_db: str, pg_db: str,
                                                                        tmp_path: Path) -> None:
    """Quarantined as read, before the rules run: the job-wide figures still see every row read."""
    mariadb_exec(mariadb_db, "SET SESSION sql_mode = ''", ZERO_DDL, *ZERO_ROWS)
    rules = ('max_error_rate = 1.0\n\n[[validate.rules]]\nname = "ids_add_up"\nkind = "reconcile"\ncolumn = "id"\n'
             'agg = "sum"\n\n[[validate.rules]]\nname = "ok_filled"\nkind = "completeness"\ncolumn = "ok"\n'
             'max_null_ratio = 0.5\nseverity = "warn"')
    report = run_job(load_config(_zero_job(tmp_path, "maria_zero_rules", mariadb_db, pg_db, rules)))
    assert report.status == "succeeded", report.error
    assert (report.rows_loaded, report.rows_quarantined) == (1, 2)
    by_rule = {r["rule"]: r for r in report.rules}
    assert by_rule["ids_add_up"]["failures"] == 0
    assert (by_rule["ok_filled"]["rows_checked"], by_rule["ok_filled"]["failures"]) == (3, 1)


def test_zero_dates_count_against_the_budget(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    mariadb_exec(mariadb_db, "SET SESSION sql_mode = ''", ZERO_DDL, *ZERO_ROWS)
    with pytest.raises(ErrorBudgetExceeded, match="2 rows failed validation"):
        run_job(load_config(_zero_job(tmp_path, "maria_zero_budget", mariadb_db, pg_db, "max_errors = 1")))
    assert pg_rows(pg_db, "SELECT count(*) FROM engine.quarantine") == [(2,)]  # recorded: nothing is lost


def test_declared_text_keeps_zero_dates_as_they_are(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    mariadb_exec(mariadb_db, "SET SESSION sql_mode = ''", ZERO_DDL, *ZERO_ROWS)
    body = job_toml("maria_zero_text", mariadb_db, "dates", pg_db, "public.dates").replace(
        "\n[pipeline]", '\n[target.types]\nd = "text"\ndtm = "text"\nts = "text"\n\n[pipeline]')
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert pg_rows(pg_db, "SELECT id, d, dtm, ts, ok FROM public.dates ORDER BY id") == [
        (1, "0000-00-00", "0000-00-00 00:00:00", "0000-00-00 00:00:00", dt.date(2024, 1, 1)),
        (2, "2020-00-15", "2020-02-00 10:00:00", None, None),
        (3, "2024-02-29", "2024-02-29 12:00:00", "2024-02-29 12:00:00", dt.date(2024, 2, 29))]


def test_zero_dates_become_null_only_through_a_declared_query(mariadb_db: str, pg_db: str, tmp_path: Path) -> None:
    """The plan names the expression; a job reading the table through it loads NULL for those dates."""
    mariadb_exec(mariadb_db, "SET SESSION sql_mode = ''", ZERO_DDL, *ZERO_ROWS)
    plan = make_plan(load_config(write_job(tmp_path, job_toml("maria_zero_q0", mariadb_db, "dates", pg_db,
                                                              "public.dates"))))
    expression = plan.columns[1].note.split("mean: ")[1]
    assert expression.startswith("CASE WHEN") and expression.endswith("AS `d`")
    query = f"SELECT id, {expression}, ok FROM dates"
    body = job_toml("maria_zero_q", mariadb_db, "dates", pg_db, "public.dates").replace(
        'table = "dates"', f'query = "{query}"', 1)
    report = run_job(load_config(write_job(tmp_path, body)))
    assert report.status == "succeeded", report.error
    assert pg_rows(pg_db, "SELECT id, d, ok FROM public.dates ORDER BY id") == [
        (1, None, dt.date(2024, 1, 1)), (2, None, None), (3, dt.date(2024, 2, 29), dt.date(2024, 2, 29))]


def test_json_as_jsonb_is_normalised_and_declared_json_keeps_the_text(mariadb_db: str, pg_db: str,
                                                                      tmp_path: Path) -> None:
    """jsonb stores JSON in its own form (keys sorted by length then bytes, one space after ':' and ','); the
    type map says so, and `[target.types] doc = "json"` keeps MariaDB's text byte for byte."""
    text = '{"zeta":1,  "a" : [1,2],"a": "dup"}'
    mariadb_exec(mariadb_db, "CREATE TABLE docs (id INT PRIMARY KEY, doc JSON)",
                 f"INSERT INTO docs VALUES (1, '{text}'), (2, NULL)")
    body = job_toml("maria_json", mariadb_db, "docs", pg_db, "public.docs")
    plan = make_plan(load_config(write_job(tmp_path, body)))
    doc = next(c for c in plan.columns if c.name == "doc")
    assert doc.pg_type == "jsonb" and 'declare [target.types] doc = "json"' in doc.note
    assert run_job(load_config(write_job(tmp_path, body))).status == "succeeded"
    assert pg_rows(pg_db, "SELECT doc::text FROM public.docs ORDER BY id") == [('{"a": "dup", "zeta": 1}',), (None,)]

    kept = body.replace("\n[pipeline]", '\n[target.types]\ndoc = "json"\n\n[pipeline]').replace(
        'table = "public.docs"', 'table = "public.docs_kept"')
    assert run_job(load_config(write_job(tmp_path, kept, "kept.toml"))).status == "succeeded"
    assert pg_rows(pg_db, "SELECT doc::text FROM public.docs_kept ORDER BY id") == [(text,), (None,)]
